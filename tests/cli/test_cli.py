"""The command line: every bad input is one line, ``keras-resnet <command>: error: ...``, with exit
status 2 for bad input and 1 for a failure while running; no traceback unless --debug."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import keras_resnet
from keras_resnet import build
from keras_resnet.cli import main

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved tiny model, a truncated copy, a file that is not an image, and small image folders."""
    root = tmp_path_factory.mktemp("cli")
    model = build(depth=8, width=0.25, input_shape=(28, 28, 1), num_classes=10)
    model.save(root / "model.keras")
    data = (root / "model.keras").read_bytes()
    (root / "truncated.keras").write_bytes(data[: len(data) // 2])
    (root / "notes.png").write_text("this is not an image")
    rgb = root / "lone"
    rgb.mkdir()
    build(depth=8, width=0.25, input_shape=(32, 32, 3), num_classes=10).save(rgb / "model.keras")
    run = root / "moved_run"  # a run folder whose dataset was moved away after training
    run.mkdir()
    (run / "model.keras").write_bytes(data)
    (run / "config.json").write_text(json.dumps({"dataset": str(root / "photos_moved_away")}))
    _truncated_checkpoints(root)
    rng = np.random.default_rng(0)
    for name, per_class, corrupt in (("photos", 20, True), ("few", 60, False)):
        for label in ("cat", "dog"):
            folder = root / name / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        if corrupt:
            (root / name / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def _truncated_checkpoints(root):
    """Half of a real .safetensors file and of a real torch .pth file."""
    import torch
    from safetensors.numpy import save_file

    tensors = {"conv1.weight": np.ones((8, 3, 3, 3), np.float32), "fc.bias": np.zeros(10, np.float32)}
    save_file(tensors, str(root / "whole.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, root / "whole.pth")
    for ext in ("safetensors", "pth"):
        whole = (root / f"whole.{ext}").read_bytes()
        (root / f"truncated.{ext}").write_bytes(whole[: len(whole) // 2])


# (argv with {root} for the fixture folder, exit status, fragments the one error line must hold)
BAD_COMMANDS = [
    ("summary --depth 21", 2, ["depth=21", "blocks"]),
    ("summary --width -1 --depth 20", 2, ["width=-1"]),
    ("summary --arch resnet50x", 2, ["depth='resnet50x'", "resnet50d"]),
    ("summary --depth 20 --input-shape 28,28,1 --stem deep", 2, ["stem", "small-input stem"]),
    ("summary --depth 18 --groups 32", 2, ["groups=32", "bottleneck"]),
    ("summary {root}/truncated.keras", 2, ["truncated.keras", "not a readable .keras file"]),
    ("summary {root}/missing.keras", 2, ["missing.keras"]),
    ("summary {root}/notes.png", 2, ["must be the path of a .keras file"]),
    ("train --depth 21 --epochs 1", 2, ["depth=21"]),
    ("train --epochs 0", 2, ["epochs=0"]),
    ("train --learning-rate -0.1", 2, ["learning_rate=-0.1"]),
    ("train --freeze-epochs 5 --epochs 3", 2, ["freeze_epochs=5"]),
    ("train --dataset ~/photoz-typo --epochs 1", 2, ["no such folder", "photoz-typo"]),
    ("train --dataset {root}/photos --epochs 1", 2, ["broken.png", "--bad-images skip"]),
    ("train --dataset {root}/few --epochs 1 --val-fraction 0.5", 2, ["batch_size", "--batch-size 32"]),
    ("train --weights {root}/missing.pth --epochs 1 --train-size 500", 2, ["missing.pth"]),
    ("train --depth 8 --width 0.25 --epochs 1 --train-size 256 --batch-size 64 --run-dir /dev/null/run",
     2, ["/dev/null/run"]),
    ("train --learning-rate inf --epochs 1", 2, ["learning_rate=inf", "a number in (0, 10]"]),
    ("train --test-size 0 --epochs 1", 2, ["test_size=0"]),
    ("train --weight-decay nan --epochs 1", 2, ["weight_decay=nan", "a number in [0, 1)"]),
    ("train --label-smoothing inf --epochs 1", 2, ["label_smoothing=inf"]),
    ("train --depth 8 --width 0.25 --weights {root}/truncated.safetensors --epochs 1 --train-size 256 "
     "--batch-size 64", 2, ["truncated.safetensors", "not a readable .safetensors file"]),
    ("train --depth 8 --width 0.25 --weights {root}/truncated.pth --epochs 1 --train-size 256 --batch-size 64",
     2, ["truncated.pth", "not a readable PyTorch checkpoint"]),
    ("export {root}/lone/model.keras --quantize int8", 2,
     ["int8 calibration needs images like the ones", "no run folder", "--dataset", "takes 3 channels"]),
    ("evaluate {root}/moved_run/model.keras", 2,
     ["photos_moved_away", "comes from the run folder", "moved_run/config.json", "--dataset"]),
    ("predict {root}/notes.png {root}/notes.png", 2, ["first argument of predict must be a .tflite file",
                                                     "notes.png"]),
    ("predict {root} {root}/notes.png", 2, ["first argument of predict must be a .tflite file", "is a directory"]),
    ("predict {root}/model.tflite {root}/photos", 2, ["photos", "is a directory", "image files"]),
    ("tune --depths 8 --width-min 0.25 --width-max 0.25 --max-trials 1 --time-limit 0.001 --train-size 300 "
     "--batch-size 32 --retrain-epochs 0 --directory {root}/searches --search-name none --quiet",
     1, ["no trial of the search completed", "leaderboard.csv"]),
    ("evaluate {root}/truncated.keras", 2, ["truncated.keras", "truncated or corrupt"]),
    ("evaluate {root}/missing.keras", 2, ["missing.keras"]),
    ("evaluate {root}/missing.keras --test-size 0", 2, ["test_size=0"]),
    ("explain {root}/truncated.keras {root}/notes.png", 2, ["truncated.keras", "truncated or corrupt"]),
    ("explain {root}/missing.keras {root}/notes.png --class 3", 2, ["missing.keras"]),
    ("tune --depths 21 --max-trials 1", 2, ["21"]),
    ("tune --width-min 2 --width-max 1", 2, ["width_min"]),
]


@pytest.mark.parametrize("argv, status, fragments", BAD_COMMANDS, ids=[c[0].split(" {")[0] for c in BAD_COMMANDS])
def test_bad_input_is_one_clear_line(files, capsys, argv, status, fragments):
    args = [a.replace("{root}", str(files)) for a in argv.split()]
    assert main(args) == status
    err = capsys.readouterr().err.strip().splitlines()
    line = [ln for ln in err if ln.startswith(f"keras-resnet {args[0]}: error: ")]
    assert len(line) == 1, err
    for fragment in fragments:
        assert fragment in line[0], line[0]
    assert not any("Traceback" in ln for ln in err)


@pytest.mark.slow
def test_bad_images_skip_trains_on_the_readable_ones(files, tmp_path, capsys):
    argv = ["train", "--dataset", str(files / "photos"), "--bad-images", "skip", "--depth", "8", "--width",
            "0.25", "--epochs", "1", "--batch-size", "8", "--verbose", "0", "--run-dir", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "test accuracy" in captured.out


@pytest.mark.slow
def test_a_run_folder_records_its_folder_dataset_by_absolute_path_for_any_working_directory(
        files, tmp_path, monkeypatch, capsys):
    shutil.copytree(files / "few", tmp_path / "few")
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--dataset", "few", "--depth", "8", "--width", "0.25", "--epochs", "1", "--batch-size", "8",
            "--verbose", "0", "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"] == str(tmp_path / "few")
    monkeypatch.chdir(files)
    assert main(["evaluate", str(tmp_path / "run" / "model.keras")]) == 0
    (tmp_path / "few").rename(tmp_path / "moved")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run" / "model.keras")]) == 2
    err = capsys.readouterr().err
    assert f"the dataset '{tmp_path / 'few'}' comes from the run folder ({tmp_path / 'run' / 'config.json'})" in err


@pytest.mark.slow
def test_ctrl_c_while_train_starts_prints_one_line_and_exits_130(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "keras_resnet.cli", "train", "--epochs", "1", "--run-dir",
                                str(tmp_path / "run")], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    time.sleep(1.0)  # Python is up; Keras and TensorFlow are still being imported
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert err.strip().splitlines() == ["keras-resnet: interrupted while starting; nothing was written"], err[-3000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_real_process_prints_no_traceback_and_no_native_log_lines(files):
    out = subprocess.run([sys.executable, "-m", "keras_resnet.cli", "evaluate", str(files / "truncated.keras")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr
    assert out.stderr.startswith("keras-resnet evaluate: error: ")


@pytest.mark.slow
def test_debug_shows_the_traceback(files):
    out = subprocess.run([sys.executable, "-m", "keras_resnet.cli", "--debug", "evaluate",
                          str(files / "truncated.keras")], env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" in out.stderr


def test_a_name_builds_its_architecture_from_the_command_line(capsys):
    assert main(["summary", "--arch", "seresnext50_32x4d", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "seresnext50_32x4d" and info["trainable_params"] == 27_559_896
    assert main(["models"]) == 0
    assert capsys.readouterr().out.split() == keras_resnet.list_models()
