"""scripts/speedrun.py: its compute accounting, its files, and a resumed run's evaluation records."""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

import keras_resnet
from keras_resnet import training
from keras_resnet.models.summary import count_macs

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "speedrun.py"
TRAIN_SIZE, VAL_FRACTION, BATCH, EPOCHS = 320, 0.2, 64, 2


@pytest.fixture(scope="module")
def speedrun():
    spec = importlib.util.spec_from_file_location("speedrun", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _argv(out_dir):
    return ["--depth", "8", "--width", "0.25", "--epochs", str(EPOCHS), "--batch-size", str(BATCH),
            "--train-size", str(TRAIN_SIZE), "--test-size", "500", "--val-fraction", str(VAL_FRACTION),
            "--eval-every", "1",
            "--ema", "0.9", "--precision", "float32", "--verbose", "0", "--out-dir", str(out_dir)]


@pytest.fixture(scope="module")
def finished_run(speedrun, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("speedrun")
    assert speedrun.main(_argv(out_dir)) == 0
    return out_dir


def test_training_compute_is_six_macs_per_image_seen(speedrun):
    assert speedrun.training_pflop(10e6, 1e6) == pytest.approx(6 * 10e6 * 1e6 / 1e15)
    recipe = training.Recipe(batch_size=128)
    assert speedrun.images_per_epoch(recipe, 1000) == 896  # whole batches only: 7 x 128
    assert speedrun.eval_epochs(7, 3) == [3, 6, 7]


def test_reference_run_is_counted_with_the_same_rule(speedrun):
    macs = count_macs(keras_resnet.build(20, input_shape=(28, 28, 1), num_classes=10))
    assert speedrun.reference_pflop() == pytest.approx(6 * macs * 32 * (57000 // 128 * 128) / 1e15)
    assert 0.3 < speedrun.reference_pflop() < 0.4


@pytest.mark.slow
def test_records_count_images_seen_and_pflop(finished_run):
    result = json.loads((finished_run / "speedrun.json").read_text())
    macs = count_macs(keras_resnet.build(8, width=0.25, input_shape=(28, 28, 1), num_classes=10))
    train_images = TRAIN_SIZE - round(TRAIN_SIZE * VAL_FRACTION)
    per_epoch = train_images // BATCH * BATCH
    seed = result["seeds"]["0"]
    assert (seed["macs"], seed["train_images"], seed["images_per_epoch"]) == (macs, train_images, per_epoch)
    assert [r["epoch"] for r in seed["records"]] == [1, 2]
    for r in seed["records"]:
        assert r["images_seen"] == r["epoch"] * per_epoch
        assert r["pflop"] == pytest.approx(6 * macs * r["epoch"] * per_epoch / 1e15)
        assert 0.0 <= r["val_accuracy"] <= 1.0 and 0.0 <= r["test_accuracy_flip_tta"] <= 1.0
    assert [p["pflop"] for p in result["curve"]] == [r["pflop"] for r in seed["records"]]
    assert (finished_run / "speedrun.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_resumed_run_makes_up_lost_evaluations(speedrun, finished_run, tmp_path):
    out_dir = tmp_path / "resumed"
    shutil.copytree(finished_run, out_dir)
    run_dir = out_dir / "seed0"
    records = json.loads((run_dir / speedrun.EVALS_FILE).read_text())
    # As if killed after epoch 1 was committed but before its evaluation was recorded.
    shutil.rmtree(run_dir / "state" / "epoch-0002")
    (run_dir / speedrun.EVALS_FILE).write_text("[]")
    assert speedrun.main(_argv(out_dir)) == 0
    resumed = json.loads((run_dir / speedrun.EVALS_FILE).read_text())
    assert [r["epoch"] for r in resumed] == [1, 2]
    # Epoch 1 was evaluated again from its committed weights: the same numbers.
    assert resumed[0]["val_accuracy"] == records[0]["val_accuracy"]
    assert resumed[0]["test_accuracy"] == records[0]["test_accuracy"]


@pytest.mark.slow
def test_finished_run_evaluates_its_missing_last_point(speedrun, finished_run, tmp_path):
    out_dir = tmp_path / "finished"
    shutil.copytree(finished_run, out_dir)
    evals = out_dir / "seed0" / speedrun.EVALS_FILE
    records = json.loads(evals.read_text())
    evals.write_text(json.dumps(records[:1]))
    assert speedrun.main(_argv(out_dir)) == 0
    assert json.loads(evals.read_text()) == records


@pytest.mark.slow
def test_other_settings_in_the_same_folder_are_refused(speedrun, finished_run):
    argv = _argv(finished_run)
    argv[argv.index("--ema") + 1] = "0.5"
    with pytest.raises(ValueError, match="other settings"):
        speedrun.main(argv)
    assert os.path.exists(finished_run / "seed0" / speedrun.SETTINGS_FILE)
