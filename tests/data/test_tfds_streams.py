"""tensorflow-datasets sets streamed from tfds's files (keras_resnet.data.tfds_streams), on tfds's own mock
data: splits as indices, seeded epochs that resume exactly, the processes' shares, the held-in-memory
rule, and a streamed run."""

import numpy as np
import pytest

from keras_resnet import data, training
from keras_resnet.data import streams, tfds_streams
from keras_resnet.data.tfds import held_out

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def mock():
    with tfds.testing.mock_data(num_examples=24):
        yield


@pytest.fixture(scope="module")
def cifar(mock):
    """Mock CIFAR-10 opened as a stream, with blocks of 8 examples to shuffle."""
    train, test, info = tfds_streams.open_tfds("cifar10", cache="none")
    info["stream"]["block"] = 8
    return train, test, info


def _batches(ds, count):
    return [tuple(t.numpy() for t in batch) for batch in ds.take(count)]


def test_a_tfds_set_missing_from_data_dir_says_how_to_get_it(tmp_path):
    # first in the file: before the module's mock data is switched on
    with pytest.raises(data.DatasetError, match=r"'cifar10' is not prepared in .*--download"):
        tfds_streams.open_tfds("cifar10", data_dir=str(tmp_path), cache="none")


def test_held_out_indices_are_seeded_disjoint_and_cover_the_split():
    kept, held = held_out(50, 0.2, seed=3)
    assert len(held) == 10 and len(kept) == 40
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(50))
    assert np.array_equal(held, held_out(50, 0.2, seed=3)[1])
    assert not np.array_equal(held, held_out(50, 0.2, seed=4)[1])


@pytest.mark.slow
def test_a_tfds_set_opens_as_example_indices_with_statistics_from_a_sample(cifar, capsys):
    (x, y), (x_test, y_test), info = cifar
    assert x.dtype == np.int64 and np.array_equal(x, np.arange(24)) and np.all(y == -1)
    assert len(x_test) == 24 and info["stream"]["test_split"] == "test"
    assert info["input_shape"] == (32, 32, 3) and info["num_classes"] == 10 and info["flip"] is True
    assert info["cache"] == "none" and info["transforms"]["recipe"] == "small"
    assert len(info["mean"]) == 3 and all(0 < s < 1 for s in info["std"])


@pytest.mark.slow
def test_a_small_tfds_set_is_held_in_memory_by_default_and_photo_refuses_memory(mock, capsys):
    (x, _), _, info = tfds_streams.open_tfds("cifar10")
    assert x.dtype == np.uint8 and x.shape == (24, 32, 32, 3) and info["cache"] == "memory"
    assert "held in memory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cache='memory' holds decoded images"):
        tfds_streams.open_tfds("tf_flowers", image_size=64, cache="memory")


@pytest.mark.slow
def test_a_tfds_stream_resumed_at_an_epoch_reads_what_the_whole_run_read(cifar):
    (x, y), _, info = cifar
    whole = _batches(streams.train_stream(x, y, info, 8, seed=1), 6)  # 3 steps an epoch
    resumed = _batches(streams.train_stream(x, y, info, 8, seed=1, start_epoch=1), 3)
    for a, b in zip(whole[3:], resumed):
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(whole[:3], whole[3:])), "epochs differ"
    epoch = np.concatenate([b[1] for b in whole[:3]])
    assert sorted(epoch.tolist()) != epoch.tolist() or len(set(epoch)) == 1


@pytest.mark.slow
def test_two_processes_batches_make_up_the_global_batches_of_one(cifar):
    (x, y), _, info = cifar
    one = _batches(streams.train_stream(x, y, info, 8, seed=2), 3)
    parts = [_batches(streams.train_stream(x, y, info, 8, seed=2, process=p, processes=2), 3)
             for p in range(2)]
    for s, (images, labels) in enumerate(one):  # process p: rows 4p .. 4p+3, as folders and arrays
        for p in range(2):
            assert np.array_equal(parts[p][s][1], labels[4 * p:4 * p + 4])
            np.testing.assert_allclose(parts[p][s][0], images[4 * p:4 * p + 4], atol=1e-5)


@pytest.mark.slow
def test_evaluation_rows_of_the_processes_are_the_batches_of_one(cifar):
    _, (x_test, y_test), info = cifar
    one = _batches(streams.eval_stream(x_test, y_test, info, 10), 10)
    assert [len(b[1]) for b in one] == [10, 10, 4] and all(np.all(b[2] == 1) for b in one)
    parts = [_batches(streams.eval_stream(x_test, y_test, info, 10, process=p, processes=2), 10)
             for p in range(2)]
    for s, (images, labels, _) in enumerate(one):
        share = len(labels) // 2
        assert np.array_equal(np.concatenate([parts[0][s][1], parts[1][s][1]]), labels)
        np.testing.assert_allclose(parts[1][s][0], images[share:], atol=1e-6)


@pytest.mark.slow
def test_the_photo_recipe_streams_crops_of_the_input_size(mock):
    (x, y), _, info = tfds_streams.open_tfds("tf_flowers", image_size=64)
    assert info["transforms"]["recipe"] == "photo" and info["cache"] == "none"
    images, labels = _batches(streams.train_stream(x, y, info, 4, seed=0), 1)[0]
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.float32 and labels.shape == (4,)
    assert np.all(np.isfinite(images)) and images.std() > 0.1


@pytest.mark.slow
def test_a_streamed_tfds_run_trains_validates_tests_and_draws_its_mistakes(mock, tmp_path):
    import json

    kwargs = dict(dataset="cifar10", cache="none", depth=8, width=0.25, run_dir=str(tmp_path / "run"),
                  verbose=0)
    result = training.train(recipe=training.Recipe(epochs=1, batch_size=8, seed=0), **kwargs)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data_feed"] == "stream" and config["train_images"] == 22 and config["val_images"] == 2
    assert result["test_images"] == 24 and 0 <= result["test_accuracy"] <= 1
    assert result["epochs_run"] == 1 and result["best_val_accuracy"] is not None
    assert (tmp_path / "run" / "mistakes.png").is_file(), "drawn from the stream's worst mistakes"
    assert sum(c["support"] for c in result["per_class"]["classes"]) == 24


@pytest.mark.slow
def test_export_data_of_a_tfds_set_is_its_sample_of_the_whole_load(mock, tmp_path, capsys):
    import json
    from types import SimpleNamespace

    from keras_resnet.training import run_folder
    from keras_resnet.data.pipelines import calibration_index

    (tmp_path / "config.json").write_text(json.dumps({"dataset": "cifar10", "transforms": {"recipe": "small"},
                                                      "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}))
    model, path = SimpleNamespace(input_shape=(None, 32, 32, 3)), str(tmp_path / "model.keras")
    _, (x, y), (x_test, y_test), info, _ = run_folder.load_data_for(model, path)
    _, (xs, ys), (xs_test, ys_test), part_info, _ = run_folder.load_data_for(model, path, train_count=5,
                                                                          test_count=3)
    assert "decoding 5 training and 3 test images" in capsys.readouterr().err
    index = calibration_index(len(x), 5)
    assert xs.shape == (5, 32, 32, 3) and np.array_equal(xs, x[index]) and np.array_equal(ys, y[index])
    kept = data.subset_index(y_test, 3, stratified=False)  # a tfds set's rule: a seeded uniform sample
    assert np.array_equal(xs_test, x_test[kept]) and np.array_equal(ys_test, y_test[kept])
    assert part_info == info and info["mean"] == [0.5] * 3 and info["num_classes"] == 10
