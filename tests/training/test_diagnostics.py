"""Confusion matrix, per-class precision/recall/F1 and the pictures of a classifier's mistakes."""

import numpy as np
import pytest

from keras_resnet.training import diagnostics

PNG = b"\x89PNG\r\n\x1a\n"


def _labels(rng, n=500, k=7):
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, k, n))
    y_pred[y_pred == 6] = 5  # class 6 is never predicted: precision 0 by scikit-learn's rule
    return y_true, y_pred, k


def test_confusion_and_per_class_metrics_match_scikit_learn(rng):
    metrics = pytest.importorskip("sklearn.metrics")
    y_true, y_pred, k = _labels(rng)
    confusion = diagnostics.confusion_matrix(y_true, y_pred, k)
    np.testing.assert_array_equal(confusion, metrics.confusion_matrix(y_true, y_pred, labels=range(k)))
    report = diagnostics.per_class_metrics(confusion, [f"c{i}" for i in range(k)])
    p, r, f, s = metrics.precision_recall_fscore_support(y_true, y_pred, labels=range(k), zero_division=0)
    for i, row in enumerate(report["classes"]):
        assert row["class"] == f"c{i}" and row["support"] == s[i]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]))
    macro = metrics.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    weighted = metrics.precision_recall_fscore_support(y_true, y_pred, average="weighted", zero_division=0)
    assert [report["macro_avg"][m] for m in ("precision", "recall", "f1")] == pytest.approx(macro[:3])
    assert [report["weighted_avg"][m] for m in ("precision", "recall", "f1")] == pytest.approx(weighted[:3])
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred))


def test_rows_are_normalised_per_true_class_and_an_empty_row_stays_zero():
    rates = diagnostics.normalize_rows([[3, 1, 0], [0, 0, 0], [1, 1, 2]])
    np.testing.assert_allclose(rates, [[0.75, 0.25, 0], [0, 0, 0], [0.25, 0.25, 0.5]])


def test_mistakes_are_the_wrong_predictions_most_confident_first():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95], [0.7, 0.3]])
    y = np.array([0, 0, 1, 0, 1])  # wrong: 1 (0.8), 2 (0.6), 3 (0.95), 4 (0.7)
    assert diagnostics.most_confident_mistakes(probs, y).tolist() == [3, 1, 4, 2]
    assert diagnostics.most_confident_mistakes(probs, y, count=2).tolist() == [3, 1]


def test_many_classes_show_the_most_confused_block(rng):
    k = 150
    confusion = np.diag(rng.integers(5, 10, k))
    confused = [3, 40, 77, 149]
    for a, b in zip(confused, confused[1:]):
        confusion[a, b] = 50
    assert len(diagnostics.shown_classes(confusion[:100, :100])) == 100  # up to 100: every class
    shown = diagnostics.shown_classes(confusion, limit=10)
    assert len(shown) == 10 and set(confused) <= set(shown.tolist()) and list(shown) == sorted(shown)


@pytest.mark.parametrize("k", [3, pytest.param(100, marks=pytest.mark.slow)])
def test_pictures_are_pngs_for_few_and_many_classes(k, rng, tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    n = 300
    y = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    images = rng.integers(0, 256, (n, 8, 8, 1 if k == 3 else 3), dtype=np.uint8)
    names = [f"class number {i}" for i in range(k)]
    report = diagnostics.write_pictures(tmp_path, probs, y, images, names, title="m")
    for key in ("confusion_png", "mistakes_png"):
        with open(report["files"][key], "rb") as f:
            assert f.read(8) == PNG
    assert [c["class"] for c in report["classes"]] == names
    assert sum(c["support"] for c in report["classes"]) == n
    assert matplotlib.get_backend() == backend and not list(tmp_path.glob("*partial*"))


@pytest.mark.parametrize("call, match", [
    (lambda: diagnostics.confusion_matrix([0, 1], [0], 2), "same length"),
    (lambda: diagnostics.confusion_matrix([0, 2], [0, 1], 2), r"y_true.*\[0, 2\)"),
    (lambda: diagnostics.confusion_matrix([0], [0], 0), "num_classes"),
    (lambda: diagnostics.per_class_metrics(np.eye(3), ["a", "b"]), "class_names"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_outputs_without_a_class_name_count_only_where_they_are_predicted(rng, tmp_path):
    probs = np.full((6, 1000), 1e-4)
    probs[np.arange(6), [0, 1, 2, 2, 517, 1]] = 1.0  # one image predicted as output 517, unnamed
    report = diagnostics.write_pictures(tmp_path, probs, np.array([0, 1, 2, 0, 1, 2]),
                                        np.zeros((6, 4, 4, 1), np.uint8), ["a", "b", "c"])
    assert [c["class"] for c in report["classes"]] == ["a", "b", "c", "517"]
    assert [c["support"] for c in report["classes"]] == [2, 2, 2, 0]
    assert report["accuracy"] == pytest.approx(3 / 6)


def test_the_worst_mistakes_of_a_stream_are_those_of_the_whole_set_with_their_images(rng):
    probs = rng.dirichlet(np.ones(5), 300)
    probs[::50] = probs[1]  # ties of confidence: the earlier image first, as for the whole set
    y = rng.integers(0, 5, 300)
    images = rng.integers(0, 256, (300, 4, 4, 1), dtype=np.uint8)
    worst = diagnostics.WorstMistakes(count=7)
    for start in range(0, 300, 32):
        rows = slice(start, start + 32)
        worst.add(probs[rows], y[rows], lambda r, x=images[rows]: x[r], first=start)
    expected = diagnostics.most_confident_mistakes(probs, y, count=7)
    assert sorted(worst.images) == sorted(expected.tolist())
    assert all(np.array_equal(worst.images[i], images[i]) for i in expected)
