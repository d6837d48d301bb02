"""Bad input to export and predict: one clear line naming the path or argument, nothing written."""

import os

import numpy as np
import pytest

from keras_resnet import build, cli, export
from keras_resnet.export import to_tflite


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small saved model and a float32 file of it (no training needed to test errors)."""
    folder = tmp_path_factory.mktemp("saved")
    model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.25, num_classes=10)
    model.save(folder / "model.keras")
    to_tflite(model, folder / "model.tflite", mean=0.3, std=0.3)
    return folder


def _one_line_cli_error(capfd, argv, *needles):
    code = cli.main(argv)
    err = capfd.readouterr().err.strip()
    assert code in (1, 2) and len(err.splitlines()) == 1, err
    assert err.startswith(f"keras-resnet {argv[0]}: error: ")
    for needle in needles:
        assert needle in err
    return err


@pytest.mark.parametrize("damage", ["truncated", "not a zip"])
def test_truncated_or_corrupt_keras_file_is_named_in_one_line(saved, tmp_path, capfd, damage):
    content = (saved / "model.keras").read_bytes()
    bad = tmp_path / "bad.keras"
    bad.write_bytes(content[:len(content) // 2] if damage == "truncated" else os.urandom(2048))

    unreadable = r"bad.keras' is not a readable .keras file \(truncated or corrupt\?\)"
    with pytest.raises(ValueError, match=unreadable):
        to_tflite(bad, tmp_path / "bad.tflite")
    _one_line_cli_error(capfd, ["export", str(bad), "--dataset", "fashion_mnist", "--verify-count", "10"],
                        str(bad), "is not a readable .keras file (truncated or corrupt?)")
    assert sorted(os.listdir(tmp_path)) == ["bad.keras"]


def test_predict_names_a_file_that_is_not_an_image(saved, tmp_path, capfd):
    text = tmp_path / "notes.png"
    text.write_text("these are not pixels")

    with pytest.raises(ValueError, match=r"notes.png' is not a readable image file"):
        export.load_images([text], (28, 28, 3))
    _one_line_cli_error(capfd, ["predict", str(saved / "model.tflite"), str(text)], str(text),
                        "is not a readable image file")


def test_missing_empty_and_wrong_type_paths_raise_clear_errors(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        to_tflite(tmp_path / "missing.keras", tmp_path / "out.tflite")
    with pytest.raises(FileNotFoundError, match="no file at ''"):
        to_tflite("", tmp_path / "out.tflite")
    with pytest.raises(TypeError, match="`model` must be a keras.Model or the path of a .keras file"):
        to_tflite(42, tmp_path / "out.tflite")
    with pytest.raises(ValueError, match="`path` must be a file name ending in .tflite. Received: path=''"):
        to_tflite(saved / "model.keras", "")
    with pytest.raises(FileNotFoundError, match="missing.json.*no sidecar"):
        export.predict(tmp_path / "missing.tflite", np.zeros((28, 28, 3), np.uint8))
    with pytest.raises(TypeError, match="`tflite_path` must be a file path"):
        export.predict(None, np.zeros((28, 28, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="no such .tflite file: .*missing.tflite"):
        export.run(tmp_path / "missing.tflite", np.zeros((1, 28, 28, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="no such image file: .*missing.png"):
        export.load_images([tmp_path / "missing.png"], (28, 28, 3))
    with pytest.raises(TypeError, match="`paths` must be a list of image files"):
        export.load_images(str(tmp_path / "one.png"), (28, 28, 3))
    assert os.listdir(tmp_path) == []


def test_corrupt_tflite_file_and_sidecar_are_named(saved, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(ValueError, match=r"bad.tflite' is not a readable .tflite file"):
        export.run(bad, np.zeros((1, 28, 28, 3), np.float32))
    (tmp_path / "bad.json").write_text('{"input": ')
    with pytest.raises(ValueError, match=r"bad.json' is not a readable sidecar"):
        export.predict(bad, np.zeros((28, 28, 3), np.uint8))


def test_an_output_folder_that_takes_no_files_is_named_before_converting(saved, tmp_path, capfd):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    out = blocker / "model.tflite"

    with pytest.raises(OSError, match=r"cannot write .*a_file/model.tflite.*does not take new files"):
        to_tflite(saved / "model.keras", out)
    with pytest.raises(OSError, match="/proc/keras_resnet_test"):
        to_tflite(saved / "model.keras", "/proc/keras_resnet_test/model.tflite")
    _one_line_cli_error(capfd, ["export", str(saved / "model.keras"), "--output", str(out), "--dataset",
                                 "fashion_mnist", "--verify-count", "10"], str(out))
    assert os.listdir(tmp_path) == ["a_file"]
