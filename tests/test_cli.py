"""The command line: every bad input is one line, ``keras-resnet <command>: error: ...``, with exit
status 2 for bad input and 1 for a failure while running; no traceback unless --debug."""

import json
import os
import subprocess
import sys

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
    ("evaluate {root}/truncated.keras", 2, ["truncated.keras", "truncated or corrupt"]),
    ("evaluate {root}/missing.keras", 2, ["missing.keras"]),
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
