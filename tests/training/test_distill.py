"""Knowledge distillation: the loss, the teacher's view of the student's batch, the saved student, bad
teachers, the search with a teacher, and a resume after kill -9 that ends where an uninterrupted run ends."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import training
from keras_resnet.models.losses import DistillationLoss
from keras_resnet.training import Recipe, distill
from keras_resnet.utils import io_utils

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
INFO = {"mean": [0.25], "std": [0.5], "num_classes": 10, "class_names": [str(i) for i in range(10)]}


def _teacher_file(folder, input_shape=(28, 28, 1), num_classes=10, mean=(0.3,), std=(0.4,), class_names=None,
                  run_folder=True, **build):
    """A teacher (an untrained depth-8 network, seeded) saved as ``folder/model.keras``, with the
    ``config.json`` of a run folder beside it."""
    os.makedirs(folder, exist_ok=True)
    keras.utils.set_random_seed(7)
    model = keras_resnet.build(depth=8, width=0.5, input_shape=input_shape, num_classes=num_classes, **build)
    path = os.path.join(folder, "model.keras")
    model.save(path)
    if run_folder:
        io_utils.write_json(os.path.join(folder, "config.json"), {
            "dataset": "fashion_mnist", "normalization": {"mean": list(mean), "std": list(std)},
            "class_names": class_names})
    return path


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    return _teacher_file(str(tmp_path_factory.mktemp("teacher")))


def test_distillation_loss_is_t_squared_times_the_kl_of_the_softened_predictions():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(4, 10)) * 3, rng.normal(size=(4, 10)) * 3
    probs = np.exp(student) / np.exp(student).sum(-1, keepdims=True)  # what the student outputs
    t = 4.0

    def soft(z):
        e = np.exp(z / t - (z / t).max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = soft(teacher), soft(student)
    expected = t * t * np.mean(np.sum(p * (np.log(p) - np.log(q)), -1))
    got = float(DistillationLoss(t)(teacher.astype("float32"), probs.astype("float32")))
    assert got == pytest.approx(expected, rel=1e-4)
    assert float(DistillationLoss(t)(student.astype("float32"), probs.astype("float32"))) == pytest.approx(0, abs=1e-5)


def test_teacher_sees_the_students_batch_in_its_own_size_and_normalisation(tmp_path):
    path = _teacher_file(str(tmp_path), input_shape=(32, 32, 3), mean=(0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7))
    teacher = training.load_teacher(path, INFO, (28, 28, 1))
    pixels = np.random.default_rng(1).uniform(size=(3, 28, 28, 1)).astype("float32")
    student_view = (pixels - 0.25) / 0.5
    model = keras.saving.load_model(path)
    logits = keras.Model(model.inputs, model.get_layer("logits").output)
    own = (np.repeat(pixels, 3, -1) - np.array([0.2, 0.3, 0.4])) / np.array([0.5, 0.6, 0.7])
    expected = logits(keras.ops.image.resize(own.astype("float32"), (32, 32)), training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(teacher(student_view)), expected, atol=1e-4)
    assert teacher.described["sha256"] == io_utils.sha256_of(path)
    assert teacher.described["normalization"] == {"mean": [0.2, 0.3, 0.4], "std": [0.5, 0.6, 0.7]}


def test_distiller_loss_weighs_cross_entropy_and_distillation_and_validation_keeps_cross_entropy(teacher_path):
    student = keras_resnet.build(depth=8, width=0.25, input_shape=(28, 28, 1), num_classes=10)
    teacher = training.load_teacher(teacher_path, INFO, student.input_shape)
    distiller = training.Distiller(student, teacher, distill_weight=0.7, temperature=2.0)
    training.compile_model(distiller, Recipe(), steps_per_epoch=10)
    x = np.random.default_rng(2).normal(size=(8, 28, 28, 1)).astype("float32")
    y = np.arange(8) % 10
    probs = student(x, training=False)
    ce = float(keras.losses.SparseCategoricalCrossentropy()(y, probs))
    soft = float(DistillationLoss(2.0)(teacher(x), probs))
    got = float(distiller.compute_loss(x=x, y=y, y_pred=probs, training=True))
    assert got == pytest.approx(0.3 * ce + 0.7 * soft, rel=1e-4)
    assert float(distiller.compute_loss(x=x, y=y, y_pred=probs, training=False)) == pytest.approx(ce, rel=1e-4)
    assert [v.path for v in distiller.weights] == [v.path for v in student.weights]  # the teacher is not in it
    assert training.student_of(distiller) is student and training.student_of(student) is student


@pytest.mark.parametrize("field, value, allowed", [
    ("temperature", 0.0, "a finite number > 0"), ("temperature", -1.0, "a finite number > 0"),
    ("distill_weight", 1.5, "a number in [0, 1]"), ("distill_weight", -0.1, "a number in [0, 1]")])
def test_bad_distillation_settings_name_the_argument(field, value, allowed):
    with pytest.raises(ValueError, match=re.escape(f"`{field}` must be {allowed}. Received: {field}={value!r}")):
        Recipe(**{field: value})


def test_bad_teachers_are_refused_in_one_line_naming_the_teacher(tmp_path):
    def refused(path, info=INFO, shape=(28, 28, 1), error=ValueError):
        with pytest.raises(error) as e:
            training.load_teacher(path, info, shape)
        message = str(e.value)
        assert "`teacher`" in message and "\n" not in message
        return message

    assert "no file at" in refused(str(tmp_path / "missing.keras"), error=FileNotFoundError)
    assert "a classifier of 5 classes" in refused(_teacher_file(str(tmp_path / "five"), num_classes=5))
    assert "classifier" in refused(_teacher_file(str(tmp_path / "top"), include_top=False, pooling="avg"))
    assert "needs its run folder" in refused(_teacher_file(str(tmp_path / "alone"), run_folder=False))
    named = _teacher_file(str(tmp_path / "named"), class_names=[f"c{i}" for i in range(10)])
    assert "class 0 is 'c0', not '0'" in refused(named)
    assert "3-channel" in refused(_teacher_file(str(tmp_path / "gray")), shape=(28, 28, 3))


def test_cli_refuses_a_missing_teacher_in_one_line(capsys, tmp_path):
    from keras_resnet.cli import main

    assert main(["train", "--depth", "8", "--width", "0.25", "--epochs", "1", "--train-size", "200",
                 "--test-size", "100", "--run-dir", str(tmp_path / "run"),
                 "--teacher", str(tmp_path / "none.keras")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`teacher`: no file at" in err[0]


def _command(run_dir, teacher):
    return [sys.executable, "-m", "keras_resnet.cli", "train", "--depth", "8", "--width", "0.25", "--epochs", "4",
            "--train-size", "1500", "--test-size", "300", "--batch-size", "64", "--verbose", "2",
            "--teacher", teacher, "--temperature", "2", "--run-dir", str(run_dir)]


@pytest.mark.slow
def test_distillation_killed_with_sigkill_resumes_to_the_result_of_an_uninterrupted_run(tmp_path, teacher_path):
    """Bound: one CLI process killed after its first epoch, its resume and an uninterrupted run of a
    depth-8 student and teacher on 1,350 images: about 40 s on 2 cores."""
    from keras_resnet import cli

    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen(_command(killed_dir, teacher_path), env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (killed_dir / "state" / "epoch-0001").exists():
            assert time.monotonic() < deadline and process.poll() is None, process.communicate()[1][-2000:]
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    done = training.read_history(str(killed_dir / "history.csv"))["epoch"]
    assert 1 <= len(done) < 4 and not (killed_dir / "model.keras").exists()

    assert cli.main(_command(killed_dir, teacher_path)[3:]) == 0  # the same command resumes
    assert cli.main(_command(whole_dir, teacher_path)[3:]) == 0
    resumed, whole = (json.loads((d / "run.json").read_text()) for d in (killed_dir, whole_dir))
    assert training.read_history(str(killed_dir / "history.csv"))["epoch"] == [0, 1, 2, 3]
    assert resumed["test_accuracy"] == whole["test_accuracy"] and resumed["test_loss"] == whole["test_loss"]
    a, b = (keras.saving.load_model(d / "model.keras", safe_mode=True) for d in (killed_dir, whole_dir))
    assert not isinstance(a, distill.Distiller) and [v.path for v in a.weights] == [v.path for v in b.weights]
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    # the run folder names its teacher and the file's fingerprint; the saved student is the plain model
    assert resumed["teacher"]["sha256"] == io_utils.sha256_of(teacher_path)
    assert resumed["recipe"]["teacher"] == teacher_path and resumed["recipe"]["temperature"] == 2.0
    assert keras_resnet.config_of(a)["depth"] == 8


@pytest.mark.slow
def test_a_run_folder_refuses_to_resume_with_another_teacher_file_or_none(tmp_path, teacher_path):
    data = training.load_run_data(recipe=Recipe(seed=1), train_size=300, test_size=100)
    recipe = Recipe(epochs=2, batch_size=64, teacher=teacher_path)
    student = keras_resnet.build(depth=8, width=0.25, input_shape=(28, 28, 1), num_classes=10)
    run_dir = str(tmp_path / "run")
    training.fit_run(student, Recipe(epochs=1, batch_size=64, teacher=teacher_path), data, run_dir, verbose=0)
    other = _teacher_file(str(tmp_path / "other"), stem_width=8)  # another file
    with pytest.raises(ValueError, match="another file: resume with the same teacher"):
        training.fit_run(student, Recipe(epochs=2, batch_size=64, teacher=other), data, run_dir, verbose=0)
    with pytest.raises(ValueError, match="was trained with the teacher .*; `teacher` is now None"):
        training.fit_run(student, Recipe(epochs=2, batch_size=64), data, run_dir, verbose=0)
    assert training.fit_run(student, recipe, data, run_dir, verbose=0)["epochs_run"] == 2


@pytest.mark.slow
def test_search_with_a_teacher_distils_every_trial_and_the_retraining(tmp_path, teacher_path, monkeypatch):
    import keras_tuner

    from keras_resnet import tuning

    distilled = []
    real = distill.Distiller.compute_loss

    def compute_loss(self, *args, training=True, **kwargs):
        distilled.append((self.name, training))
        return real(self, *args, training=training, **kwargs)

    monkeypatch.setattr(distill.Distiller, "compute_loss", compute_loss)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("learning_rate", 0.05)
    results = tuning.run_search(
        tuning.SearchSpace(depths=(8,), width_min=0.25, width_max=0.5), tuning.Budget(max_epochs=2, max_trials=3),
        Recipe(batch_size=32, seed=3, teacher=teacher_path), data=tuning.SearchData(train_size=320, test_size=200),
        retrain=tuning.Retrain(retrain_epochs=1, retrain_size=320),
        setup=tuning.SearchSetup(search_name="kd", directory=str(tmp_path)), hyperparameters=hp, verbose=0)
    assert results["trials"]["COMPLETED"] >= 2 and results["teacher"]["sha256"] == io_utils.sha256_of(teacher_path)
    assert any(t for _, t in distilled)
    retrain = json.loads((tmp_path / "kd" / "retrain" / "config.json").read_text())
    assert retrain["teacher"]["sha256"] == results["teacher"]["sha256"]
    best = keras.saving.load_model(tmp_path / "kd" / "best.keras", safe_mode=True)
    assert not isinstance(best, distill.Distiller) and best.count_params() == results["best"]["params"]
