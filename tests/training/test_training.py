"""The training recipe: compile settings, run folder, resume after kill -9, NaN guard, distribution."""

import csv
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import training
from keras_resnet.utils import io_utils
from keras_resnet.training import devices as execution
from keras_resnet.training import Recipe

TINY = dict(depth=8, width=0.25)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    result = training.train(recipe=Recipe(epochs=3, batch_size=64, learning_rate=0.05, seed=1),
                            train_size=1500, test_size=2000, run_dir=run_dir, verbose=0, **TINY)
    return run_dir, result


@pytest.mark.slow
def test_run_writes_model_history_metrics_and_plot(tiny_run):
    run_dir, result = tiny_run
    for name in ("model.keras", "best.keras", "history.csv", "run.json", "config.json", "curves.png",
                 "confusion.png", "mistakes.png"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "logs").is_dir()
    saved = json.loads((run_dir / "run.json").read_text())
    assert saved["epochs_run"] == 3
    assert saved["model"]["name"] == "resnet8_w0.25"
    assert saved["normalization"]["mean"] and saved["class_names"][0] == "T-shirt/top"
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    classes = saved["per_class"]["classes"]
    assert [c["class"] for c in classes] == saved["class_names"] and sum(c["support"] for c in classes) == 2000
    assert saved["per_class"]["accuracy"] == pytest.approx(saved["test_accuracy"])
    assert not list(run_dir.glob("*partial*"))


@pytest.mark.slow
def test_training_loss_goes_down(tiny_run):
    run_dir, _ = tiny_run
    history = training.read_history(str(run_dir / "history.csv"))
    assert history["epoch"] == [0, 1, 2]
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.slow
def test_saved_model_evaluates_to_the_reported_accuracy_and_per_class_figures(tiny_run, tmp_path):
    run_dir, result = tiny_run
    evaluated = training.evaluate(str(run_dir / "model.keras"), output=tmp_path, test_size=2000)
    assert evaluated["test_images"] == result["test_images"] == 2000  # the run's test_size, reproduced
    assert evaluated["test_accuracy"] == pytest.approx(result["test_accuracy"], abs=1e-3)
    assert json.loads((tmp_path / "evaluation.json").read_text()) == evaluated
    for name in ("confusion.png", "mistakes.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recall = {c["class"]: c["recall"] for c in evaluated["per_class"]["classes"]}
    assert recall == {c["class"]: pytest.approx(c["recall"], abs=0.01) for c in result["per_class"]["classes"]}


@pytest.mark.slow
def test_a_model_copied_away_from_its_run_folder_keeps_the_run_s_normalisation(tiny_run, tmp_path, capsys):
    """The run trained on 1,500 images: their statistics are not Fashion-MNIST's whole training split's.
    The model file carries them; a file saved without that record falls back, and says so."""
    run_dir, result = tiny_run
    (tmp_path / "alone").mkdir()
    alone = tmp_path / "alone" / "model.keras"
    alone.write_bytes((run_dir / "model.keras").read_bytes())
    recorded = io_utils.model_facts(alone)
    assert recorded["normalization"] == result["normalization"] and recorded["dataset"] == "fashion_mnist"
    evaluated = training.evaluate(str(alone), test_size=2000)
    assert "its own record of its run" in capsys.readouterr().out
    assert evaluated["test_accuracy"] == result["test_accuracy"]
    assert evaluated["data"]["test"] == result["data"]["test"]
    (tmp_path / "bare").mkdir()
    bare = tmp_path / "bare" / "model.keras"
    io_utils.save_model(io_utils.load_model(alone), bare)  # no record: Fashion-MNIST's own statistics
    assert io_utils.model_facts(bare) is None
    training.evaluate(str(bare), test_size=2000)
    assert "no config.json or run.json next to" in capsys.readouterr().out


@pytest.mark.slow
def test_flip_test_time_augmentation_is_reported_and_reproduced_by_evaluate(tiny_run):
    run_dir, result = tiny_run
    evaluated = training.evaluate(str(run_dir / "model.keras"), tta=True, test_size=2000)
    assert evaluated["tta"] == "flip"
    assert evaluated["test_accuracy"] == pytest.approx(result["test_accuracy_flip_tta"], abs=1e-3)


@pytest.mark.slow
def test_flip_averaged_predictions_do_not_depend_on_which_way_the_image_faces(tiny_run):
    run_dir, _ = tiny_run
    model = keras.saving.load_model(str(run_dir / "model.keras"))
    x = np.random.default_rng(0).standard_normal((8, 28, 28, 1)).astype("float32")
    mirrored = x[:, :, ::-1]
    plain, plain_mirrored = training.predict_probs(model, x), training.predict_probs(model, mirrored)
    assert np.abs(plain - plain_mirrored).max() > 1e-4  # the model itself is not mirror-symmetric
    np.testing.assert_allclose(training.predict_probs(model, x, flip=True),
                               training.predict_probs(model, mirrored, flip=True), atol=1e-6)
    np.testing.assert_allclose(training.predict_probs(model, x, flip=True).sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_flip_test_time_augmentation_is_refused_for_data_trained_without_flips(tiny_run, monkeypatch):
    run_dir, _ = tiny_run
    real_load = keras_resnet.data.arrays.load

    def load_without_flips(*args, **kwargs):
        train, test, info = real_load(*args, **kwargs)
        return train, test, {**info, "flip": False}

    monkeypatch.setattr(keras_resnet.data.arrays, "load", load_without_flips)  # what evaluate reads
    with pytest.raises(ValueError, match="`tta`=True.*not trained with flips"):
        training.evaluate(str(run_dir / "model.keras"), tta=True)


@pytest.fixture(scope="module")
def fashion_mnist_at_40():
    """The whole of Fashion-MNIST as `data.load` resizes it to 40x40: the reference of the paths that
    resize only the images they keep."""
    from keras_resnet import data

    return data.load("fashion_mnist", image_size=40)


@pytest.mark.slow  # resizes the whole set as the reference
def test_train_and_test_sizes_cut_the_arrays_before_they_are_resized(fashion_mnist_at_40):
    """Quick runs resize only the images they keep: the same pixels as cutting the whole resized set,
    with the statistics of the training images kept."""
    from keras_resnet import data

    run = training.load_run_data(recipe=Recipe(val_fraction=0.1, seed=3), train_size=300, test_size=50,
                                 image_size=40)
    (x, y), (x_test, y_test), _ = fashion_mnist_at_40
    train, test = data.subset_index(y, 300), data.subset_index(y_test, 50)  # seeded, stratified samples
    kept = np.concatenate([run.x_train, run.x_val])
    assert len(run.x_train) + len(run.x_val) == 300 and len(run.x_test) == 50
    assert sorted(map(bytes, kept)) == sorted(map(bytes, x[train]))
    np.testing.assert_array_equal(run.x_test, x_test[test])
    np.testing.assert_array_equal(run.y_test, y_test[test])
    assert run.info["input_shape"] == (40, 40, 1) and run.info["transforms"]["size"] == [40, 40]
    assert run.info["mean"] == data.resized((x[train], y[train]), (x_test[:1], y_test[:1]), {})[2]["mean"]
    with pytest.raises(ValueError, match="`test_size` must be a positive integer, or None. Received: test_size=0"):
        training.load_run_data(test_size=0)


@pytest.mark.slow  # resizes the whole set as the reference
def test_a_resized_run_folder_gives_export_and_evaluate_the_images_of_the_whole_load(tmp_path, fashion_mnist_at_40):
    """`run_folder.load_data_for` with counts resizes only the images it keeps when the run folder
    holds the statistics; they equal the same images of the whole resized set."""
    from keras_resnet import data
    from keras_resnet.training import run_folder
    from keras_resnet.data.pipelines import calibration_index

    model = keras_resnet.build(depth=8, width=0.25, input_shape=(40, 40, 1), num_classes=10)
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "fashion_mnist", "class_names": list("abcdefghij"),
                                                      "normalization": {"mean": [0.25], "std": [0.5]}}))
    _, (x, y), (x_test, y_test), info, _ = run_folder.load_data_for(model, tmp_path / "model.keras",
                                                                    train_count=20, test_count=30)
    (x_all, y_all), (x_test_all, y_test_all), _ = fashion_mnist_at_40
    index = calibration_index(len(y_all), 20)
    np.testing.assert_array_equal(x, x_all[index])
    np.testing.assert_array_equal(y, y_all[index])
    kept = data.subset_index(y_test_all, 30)  # the test images a test_size of 30 keeps
    np.testing.assert_array_equal(x_test, x_test_all[kept])
    np.testing.assert_array_equal(y_test, y_test_all[kept])
    assert info["input_shape"] == (40, 40, 1) and info["mean"] == [0.25] and info["class_names"][0] == "a"
    _, (x, _), (x_test, _), _, _ = run_folder.load_data_for(model, tmp_path / "model.keras", train_count=0)
    assert x.shape == (0, 40, 40, 1) and x_test.shape == (10000, 40, 40, 1)


def test_history_of_a_run_without_validation_has_no_validation_columns(tmp_path):
    path = tmp_path / "history.csv"  # what CSVLogger writes when fit gets no validation data
    path.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.5,NA,NA\n1,0.75,1.0,NA,NA\n")
    assert training.read_history(str(path)) == {"epoch": [0, 1], "accuracy": [0.5, 0.75], "loss": [1.5, 1.0]}
    training.plot_history(training.read_history(str(path)), str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weight_decay_skips_batchnorm_and_biases():
    model = keras_resnet.build(depth=8, width=0.25, input_shape=(32, 32, 3), num_classes=10)
    training.compile_model(model, Recipe(), steps_per_epoch=10)
    decayed = [v.name for v in model.trainable_variables if model.optimizer._use_weight_decay(v)]
    assert decayed and all(name == "kernel" for name in decayed)
    assert sum(v.name == "kernel" for v in model.trainable_variables) == len(decayed)
    assert any(v.name in ("gamma", "beta", "bias") for v in model.trainable_variables)


def test_schedule_warms_up_then_decays_to_zero():
    schedule = training.learning_rate_schedule(Recipe(epochs=10, learning_rate=0.1, warmup_epochs=2), 100)
    lr = [float(schedule(step)) for step in (0, 100, 200, 600, 1000)]
    assert lr[0] == pytest.approx(0.0) and lr[1] == pytest.approx(0.05)
    assert lr[2] == pytest.approx(0.1) and lr[2] > lr[3] > lr[4]
    assert lr[4] == pytest.approx(0.0, abs=1e-6)


def test_label_smoothing_matches_the_formula():
    loss = keras_resnet.SmoothedSparseCrossentropy(0.1, num_classes=4)
    probs = np.array([[0.7, 0.1, 0.1, 0.1]], dtype="float32")
    target = np.array([0.9 + 0.025, 0.025, 0.025, 0.025])
    expected = -np.sum(target * np.log(probs[0]))
    assert float(loss(np.array([0]), probs)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", -1), ("learning_rate", 0.0),
                                          ("schedule", "linear"), ("label_smoothing", 1.0),
                                          ("val_fraction", -0.1), ("warmup_epochs", 30)])
def test_bad_recipe_values_name_the_argument(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        Recipe(**{field: value})


def test_nan_guard_stops_training_with_a_clear_message():
    model = keras_resnet.build(blocks=(1, 1, 1), width=0.25, input_shape=(32, 32, 3), num_classes=10)
    training.compile_model(model, Recipe(epochs=3), steps_per_epoch=4)
    x = np.full((64, 32, 32, 3), np.nan, dtype="float32")
    guard = training.callbacks.NaNGuard()
    epochs = keras.callbacks.History()
    with pytest.raises(FloatingPointError, match="batch 0 in epoch 1; training stopped"):
        model.fit(x, np.zeros(64), batch_size=16, epochs=3, callbacks=[guard, epochs], verbose=0)
    assert not epochs.epoch, "training went on after the loss became NaN"
    assert "--learning-rate" in guard.message


@pytest.mark.parametrize("field", ["learning_rate", "weight_decay", "label_smoothing", "momentum", "erase",
                                   "ema", "val_fraction", "warmup_epochs", "fine_tune_lr_scale"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -float("inf")])
def test_non_finite_recipe_numbers_are_refused_naming_the_argument(field, value):
    with pytest.raises(ValueError, match=rf"`{field}` must be a (finite )?number.*Received: {field}={value!r}"):
        Recipe(**{field: value})


@pytest.mark.parametrize("field, value", [("learning_rate", 1e6), ("weight_decay", 1.0)])
def test_absurd_recipe_numbers_are_refused_naming_the_argument(field, value):
    with pytest.raises(ValueError, match=rf"Received: {field}={value!r}"):
        Recipe(**{field: value})


@pytest.mark.slow
def test_a_run_whose_weights_become_non_finite_stops_and_keeps_the_last_finite_state(tmp_path, monkeypatch):
    """The learning rate jumps to 1e30 after the first epoch: the weights overflow in the second."""
    data = training.load_run_data(recipe=Recipe(seed=1, val_fraction=0.1), train_size=320)
    model = keras_resnet.build(depth=8, width=0.25, input_shape=(28, 28, 1), num_classes=10)
    monkeypatch.setattr(training.recipe, "learning_rate_schedule", lambda recipe, steps: (
        keras.optimizers.schedules.PiecewiseConstantDecay([steps], [0.05, 1e30])))
    run_dir = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="in epoch 2; training stopped and this epoch was not saved"):
        training.fit_run(model, Recipe(epochs=3, batch_size=32, seed=1), data, run_dir, verbose=0)
    assert sorted(os.listdir(run_dir / "state")) == ["epoch-0001"]
    assert not (run_dir / "model.keras").exists()
    model.load_weights(run_dir / "state" / "epoch-0001" / "model.weights.h5")
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_atomic_save_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    model = keras_resnet.build(blocks=(1, 1, 1), width=0.25, input_shape=(32, 32, 3), num_classes=10)
    path = tmp_path / "model.keras"
    path.write_bytes(b"previous model")

    def broken_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError):
        io_utils.save_model(model, str(path))
    assert path.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def _history_epochs(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path):
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_resnet import training
r = training.train(depth=8, width=0.25, recipe=training.Recipe(epochs=1, batch_size=64),
                   train_size=1024, test_size=256, run_dir={str(tmp_path)!r}, distribute="mirrored", verbose=0)
print("REPLICAS", r["replicas"], "LOSS", r["test_loss"])
"""
    out = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("REPLICAS")][-1].split()
    assert line[1] == "2" and math.isfinite(float(line[3]))


def test_cli_train_rejects_bad_values_with_a_one_line_error(capsys):
    from keras_resnet.cli import main

    assert main(["train", "--depth", "21", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "depth=21" in err and "blocks" in err


@pytest.mark.slow
def test_model_compiled_with_label_smoothing_loads_after_importing_only_the_package(tmp_path):
    model = keras_resnet.build(blocks=(1, 1, 1), width=0.25, input_shape=(32, 32, 3), num_classes=10)
    training.compile_model(model, Recipe(label_smoothing=0.1), steps_per_epoch=10)
    path = tmp_path / "smoothed.keras"
    model.save(path)
    script = ("import keras, keras_resnet, sys; m = keras.saving.load_model(sys.argv[1]); "
              "assert 'keras_resnet.training' not in sys.modules; print(type(m.loss).__name__)")
    out = subprocess.run([sys.executable, "-c", script, str(path)], env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("SmoothedSparseCrossentropy")


def test_package_top_level_exposes_the_entry_points():
    from keras_resnet import data, export, tuning

    assert keras_resnet.train is training.train and keras_resnet.evaluate is training.evaluate
    assert keras_resnet.load_data is data.load and keras_resnet.search is tuning.run_search
    assert keras_resnet.to_tflite is export.to_tflite
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        keras_resnet.fit


def test_cpu_bfloat16_support_is_read_from_the_cpu_flags(tmp_path):
    with_bf16 = tmp_path / "amx"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n")
    avx2_only = tmp_path / "avx2"
    avx2_only.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n")
    assert execution.cpu_has_native_bfloat16(str(with_bf16))
    assert not execution.cpu_has_native_bfloat16(str(avx2_only))
    assert not execution.cpu_has_native_bfloat16(str(tmp_path / "missing"))


@pytest.mark.parametrize("native, expected", [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_precision_on_cpu_uses_bfloat16_only_where_the_cpu_runs_it_natively(
        monkeypatch, native, expected):
    monkeypatch.setattr(execution, "gpu_names", lambda: [])
    monkeypatch.setattr(execution, "cpu_has_native_bfloat16", lambda: native)
    assert execution.resolve_precision("auto") == expected
    with execution.precision_scope("auto") as policy:
        assert policy == keras.mixed_precision.dtype_policy().name == expected
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_mixed_precision_on_a_cpu_that_emulates_it_warns(monkeypatch):
    monkeypatch.setattr(execution, "gpu_names", lambda: [])
    monkeypatch.setattr(execution, "cpu_has_native_bfloat16", lambda: False)
    with pytest.warns(UserWarning, match="precision='mixed_bfloat16'.*emulated"):
        assert execution.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"


def test_train_leaves_the_global_dtype_policy_and_distribution_as_it_found_them(tmp_path, monkeypatch):
    monkeypatch.setattr(execution, "cpu_has_native_bfloat16", lambda: True)  # "auto" picks bfloat16
    seen = {}

    def fit_run(model, recipe, data, run_dir, **kwargs):  # what the run sees, without training it
        seen.update(policy=keras.mixed_precision.dtype_policy().name,
                    layer=model.get_layer("stage1_block1").conv1.dtype_policy.name)
        return {"precision": kwargs["config"]["precision"]}

    monkeypatch.setattr(training.run, "fit_run", fit_run)
    before = keras.mixed_precision.dtype_policy().name
    result = training.train(recipe=Recipe(epochs=1, batch_size=64), train_size=256, run_dir=tmp_path,
                            verbose=0, **TINY)
    assert result["precision"] == seen["policy"] == seen["layer"] == "mixed_bfloat16"
    assert keras.mixed_precision.dtype_policy().name == before == "float32"
    assert keras.distribution.distribution() is None


def test_recipe_flags_are_derived_from_the_dataclass():
    import argparse

    from keras_resnet.utils import flags

    parser = argparse.ArgumentParser()
    flags.add_flags(parser, Recipe)
    args = parser.parse_args(["--epochs", "7", "--label-smoothing", "0.1", "--warmup-epochs", "0.5"])
    assert flags.from_args(Recipe, args) == Recipe(epochs=7, label_smoothing=0.1, warmup_epochs=0.5)
    assert parser.parse_args([]).warmup_epochs is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--schedule", "linear"])
