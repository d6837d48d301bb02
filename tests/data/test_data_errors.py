"""Bad input and faulty data on the data side: each gives one clear error naming what was wrong."""

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from keras_resnet import data

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
INFO = {"mean": [0.5], "std": [0.25], "flip": True}
X = np.zeros((40, 8, 8, 1), np.uint8)
Y = np.zeros(40, np.int64)


def _raises(error, fragment, call):
    with pytest.raises(error, match=re.escape(fragment)):
        call()


# --- arguments -------------------------------------------------------------------------------------

ARGUMENTS = [
    (lambda: data.load(image_size=(32, 0)), ValueError, "`image_size` must be a list of 2 integers >= 1. "
                                                        "Received: image_size=(32, 0)"),
    (lambda: data.load(image_size=0), ValueError, "`image_size` must be a positive integer, or None. "
                                                  "Received: image_size=0"),
    (lambda: data.load(image_size="32"), ValueError, "Received: image_size='32'"),
    (lambda: data.load(image_size=True), ValueError, "Received: image_size=True"),
    (lambda: data.load(test_fraction=1.0), ValueError, "`test_fraction` must be a number in (0, 1). "
                                                       "Received: test_fraction=1.0"),
    (lambda: data.load(test_fraction="0.2"), ValueError, "Received: test_fraction='0.2'"),
    (lambda: data.load(seed=-1), ValueError, "`seed` must be an integer >= 0. Received: seed=-1"),
    (lambda: data.load(seed=1.5), ValueError, "Received: seed=1.5"),
    (lambda: data.load(download="yes"), TypeError, "`download` must be True or False. Received: "
                                                   "download='yes'"),
    (lambda: data.load(bad_images="ignore"), ValueError, "`bad_images` must be one of ('error', 'skip'). "
                                                         "Received: bad_images='ignore'"),
    (lambda: data.load(data_dir=3), TypeError, "`data_dir` must be a folder path (str or os.PathLike) "
                                               "or None. Received: data_dir=3"),
    (lambda: data.load(3), ValueError, "`dataset` must be a dataset name or a directory path. "
                                       "Received: dataset=3"),
    (lambda: data.load(""), ValueError, "Received: dataset=''"),
    (lambda: data.split_validation(X, Y, 1.0), ValueError, "`fraction` must be a number in [0, 1). "
                                                           "Received: fraction=1.0"),
    (lambda: data.split_validation(X, Y, 0.1, seed=-2), ValueError, "Received: seed=-2"),
    (lambda: data.split_validation(X, Y[:5]), ValueError, "one label per sample"),
    (lambda: data.calibration_images(X, INFO, count=0), ValueError, "Received: count=0"),
    (lambda: data.calibration_images(X, INFO, seed="a"), ValueError, "Received: seed='a'"),
    (lambda: data.normalize(X, {"mean": [0.5]}), ValueError, "`info` must be the dict returned by "
                                                             "keras_resnet.data.load, with keys ('mean', "
                                                             "'std'). Received: info with keys "
                                                             "['mean']"),
    (lambda: data.check_batch_size(128, 96), ValueError,
     "`batch_size`=128 is larger than the 96 training images left after the validation split; "
     "pass --batch-size 64 (batch_size=64) or less"),
    (lambda: data.check_batch_size(128, 0), ValueError, "there are no training images left after the "
                                                        "validation split"),
    (lambda: data.check_batch_size(0, 96), ValueError, "`batch_size` must be a positive integer"),
    (lambda: data.check_batch_size(32, 9.5), ValueError, "Received: n_train=9.5"),
]


@pytest.mark.parametrize("call, error, fragment", ARGUMENTS)
def test_bad_argument_gets_a_clear_error(call, error, fragment):
    _raises(error, fragment, call)


PIPELINE_ARGUMENTS = [
    ({"x": X.astype(np.float32)}, "`x` must be a uint8 array of images"),
    ({"y": Y[:3]}, "3 labels for 40 images"),
    ({"info": {"mean": [0.5, 0.5], "std": [1, 1], "flip": True}}, "`x` has 1 channel(s)"),
    ({"info": None}, "Received: info of type NoneType"),
    ({"batch_size": 0}, "Received: batch_size=0"),
    ({"erase": 1.5}, "`erase` must be a number in [0, 1]. Received: erase=1.5"),
    ({"seed": -1}, "Received: seed=-1"),
    ({"training": "yes"}, "`training` must be True or False"),
    ({"augment": 1}, "`augment` must be True or False"),
    ({"training": True, "batch_size": 64}, "`batch_size`=64 is larger than the 40 images of `x`"),
]


@pytest.mark.parametrize("make", [data.tf_dataset, data.numpy_dataset])
@pytest.mark.parametrize("bad, fragment", PIPELINE_ARGUMENTS)
def test_pipeline_bad_argument_gets_a_clear_error(make, bad, fragment):
    args = {"x": X, "y": Y, "info": INFO, "batch_size": 8, **bad}
    with pytest.raises((ValueError, TypeError), match=re.escape(fragment)):
        make(**args)


@pytest.mark.parametrize("n_train, fits", [(96, 64), (120, 64), (256, 256), (300, 256), (3, 2), (1, 1)])
def test_check_batch_size_suggests_the_largest_power_of_two_that_fits(n_train, fits):
    assert data.check_batch_size(fits, n_train) == fits
    _raises(ValueError, f"pass --batch-size {fits} (batch_size={fits}) or less",
            lambda: data.check_batch_size(n_train + 1, n_train))


# --- dataset paths ---------------------------------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Runs the test in an empty folder, with ``~`` pointing there too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data.npz").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize("dataset, shown", [
    ("~/photoz", "no such folder: {tmp}/photoz"),
    ("./photoz", "no such folder: {tmp}/photoz"),
    ("photoz/", "no such folder: {tmp}/photoz"),
    ("photos/Cats", "no such folder: {tmp}/photos/Cats"),
    ("photos.zip", "no such folder: {tmp}/photos.zip"),
    (Path("photoz"), "no such folder: {tmp}/photoz"),
    ("data.npz", "{tmp}/data.npz is a file; `dataset` takes a folder"),
])
def test_dataset_that_looks_like_a_path_and_is_not_a_folder_is_named(in_tmp, dataset, shown):
    _raises(data.DatasetError, shown.format(tmp=in_tmp), lambda: data.load(dataset))


def test_unknown_name_with_a_slash_says_no_such_folder_too(in_tmp):
    pytest.importorskip("tensorflow_datasets")
    _raises(data.DatasetError, f"no such folder: {in_tmp}/data/photos", lambda: data.load("data/photos"))


def test_tfds_data_dir_that_does_not_exist_is_said(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    _raises(data.DatasetError, f"not prepared in {tmp_path}/nowhere (no such folder)",
            lambda: data.load("cifar10", data_dir=tmp_path / "nowhere"))


def test_data_dir_with_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "fm").mkdir()
    for path in FASHION_DIR.iterdir():
        (tmp_path / "fm" / path.name).symlink_to(path)
    _, (x_test, _), info = data.load("fashion_mnist", data_dir="~/fm")
    assert info["source"] == str(tmp_path / "fm") and x_test.shape == (10000, 28, 28, 1)


# --- truncated and corrupt files -------------------------------------------------------------------


def _labels_file(tmp_path):
    raw = gzip.decompress((FASHION_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    return tmp_path / "t10k-labels-idx1-ubyte", raw


@pytest.mark.parametrize("cut, fragment", [
    (lambda raw: raw[:-10], "holds 9998 bytes but its header declares shape (10000,)"),
    (lambda raw: raw[:6], "IDX header is truncated (6 bytes, expected at least 8)"),
    (lambda raw: raw[:2], "holds only 2 bytes"),
    (lambda raw: b"", "holds only 0 bytes"),
    (lambda raw: gzip.compress(raw)[:100], "cannot read or decompress it"),
])
def test_truncated_idx_file_is_a_dataset_error_naming_it(tmp_path, cut, fragment):
    path, raw = _labels_file(tmp_path)
    name = path.with_suffix(".gz") if fragment.startswith("cannot") else path
    name.write_bytes(cut(raw))
    with pytest.raises(data.DatasetError, match=re.escape(f"{name}: {fragment}")) as err:
        data.read_idx(name, 1)
    assert "truncated or corrupt" in str(err.value)


@pytest.mark.parametrize("content, fragment", [
    (None, "cannot read it"),
    ({"x_train": np.zeros((4, 5), np.uint8)}, "expected uint8 (N, H, W) images and N labels"),
])
def test_corrupt_mnist_npz_in_the_keras_cache_is_a_dataset_error_naming_it(tmp_path, monkeypatch,
                                                                           content, fragment):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    path = tmp_path / "datasets" / "mnist.npz"
    path.parent.mkdir()
    arrays = {"x_train": np.zeros((4, 5, 5), np.uint8), "y_train": np.zeros(4, np.uint8),
              "x_test": np.zeros((2, 5, 5), np.uint8), "y_test": np.zeros(2, np.uint8), **(content or {})}
    np.savez(path, **arrays)
    if content is None:
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(data.DatasetError, match=re.escape(f"{path}: ") + ".*" + re.escape(fragment)):
        data.load("mnist")
