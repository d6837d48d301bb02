import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from keras_resnet import data

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def fashion():
    return data.load("fashion_mnist")


def _copy_fashion(folder):
    folder.mkdir(exist_ok=True)
    for name in FASHION_DIR.iterdir():
        shutil.copy(name, folder / name.name)
    return folder


def _link_fashion(folder):
    folder.mkdir(parents=True)
    for path in FASHION_DIR.iterdir():
        (folder / path.name).symlink_to(path)


# --- loading ---------------------------------------------------------------------------------------


def test_fashion_mnist_loads_real_arrays_and_info(fashion):
    (x, y), (x_test, y_test), info = fashion
    assert x.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x.dtype == np.uint8 and y.dtype == np.int64 and y_test.dtype == np.int64
    assert np.array_equal(np.bincount(y), [6000] * 10) and np.array_equal(np.bincount(y_test), [1000] * 10)
    assert info["name"] == "fashion_mnist" and info["num_classes"] == 10
    assert info["class_names"][0] == "T-shirt/top" and info["class_names"][9] == "Ankle boot"
    assert info["input_shape"] == (28, 28, 1) and info["flip"] is True
    assert info["mean"] == pytest.approx([x.mean() / 255], abs=1e-6)
    assert info["std"] == pytest.approx([x.std() / 255], abs=1e-6)
    assert info["mean"][0] == pytest.approx(0.2860, abs=1e-3)
    assert info["std"][0] == pytest.approx(0.3530, abs=1e-3)


def test_data_dir_with_uncompressed_idx_files_loads_the_same(fashion, tmp_path):
    for path in FASHION_DIR.iterdir():
        (tmp_path / path.name[:-3]).write_bytes(gzip.decompress(path.read_bytes()))
    (x, y), (x_test, _), info = data.load("fashion_mnist", data_dir=tmp_path)
    assert np.array_equal(x_test, fashion[1][0]) and np.array_equal(y, fashion[0][1])
    assert info["source"] == str(tmp_path)


def test_mnist_from_data_dir_is_read_as_digits_without_flips(tmp_path):
    _link_fashion(tmp_path / "idx")  # the same IDX format
    (x, _), _, info = data.load("mnist", data_dir=tmp_path / "idx")
    assert x.shape == (60000, 28, 28, 1) and info["name"] == "mnist"
    assert info["class_names"] == [str(d) for d in range(10)] and info["flip"] is False


def test_truncated_idx_file_raises_dataset_error_naming_the_file(tmp_path):
    folder = _copy_fashion(tmp_path / "fm")
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(data.DatasetError, match="t10k-labels-idx1-ubyte.gz.*truncated or corrupt"):
        data.load("fashion_mnist", data_dir=folder)


def test_idx_file_shorter_than_its_header_says_raises_dataset_error(tmp_path):
    folder = _copy_fashion(tmp_path / "fm")
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))
    with pytest.raises(data.DatasetError, match=r"t10k-labels.*9998 bytes.*needs exactly 10008"):
        data.load("fashion_mnist", data_dir=folder)


def test_idx_file_with_wrong_magic_number_raises_dataset_error(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + bytes(12)))
    with pytest.raises(data.DatasetError, match="idx3-ubyte.gz: bad IDX magic number 0x00000d03"):
        data.read_idx(path, 3)


def test_missing_data_dir_raises_dataset_error_saying_how_to_get_the_data(tmp_path):
    with pytest.raises(data.DatasetError) as err:
        data.load("fashion_mnist", data_dir=tmp_path / "nowhere")
    message = str(err.value)
    assert "no such directory" in message and "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message and "download=True" in message
    assert isinstance(err.value, ValueError)


def test_image_size_resizes_fashion_mnist(fashion):
    (x, _), (x_test, _), info = data.load("fashion_mnist", image_size=32)
    assert x.shape == (60000, 32, 32, 1) and x_test.shape == (10000, 32, 32, 1) and x.dtype == np.uint8
    assert info["input_shape"] == (32, 32, 1)
    assert info["mean"][0] == pytest.approx(fashion[2]["mean"][0], abs=0.01)


def test_fashion_mnist_search_falls_back_to_dpkg_then_keras_cache(monkeypatch, tmp_path):
    spec = data.IDX_SETS["fashion_mnist"]
    monkeypatch.setattr(spec, "system_dir", str(tmp_path / "moved"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert data.load("fashion_mnist")[2]["source"] == str(FASHION_DIR)  # found through `dpkg -L`
    monkeypatch.setattr(data.idx, "_dpkg_dirs", lambda package: [])  # a system without dpkg
    _link_fashion(tmp_path / "keras" / "datasets" / "fashion-mnist")
    assert data.load("fashion_mnist")[2]["source"] == str(tmp_path / "keras" / "datasets" / "fashion-mnist")


def test_fashion_mnist_found_nowhere_raises_dataset_error(monkeypatch, tmp_path):
    monkeypatch.setattr(data.IDX_SETS["fashion_mnist"], "system_dir", str(tmp_path / "moved"))
    monkeypatch.setattr(data.idx, "_dpkg_dirs", lambda package: [])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(data.DatasetError, match=r"Fashion-MNIST not found \(looked in: .*moved.*apt-get"):
        data.load("fashion_mnist")


@pytest.mark.parametrize("kwargs", [{"image_size": (32, 0)}, {"test_fraction": 1.0}, {"dataset": 3}])
def test_load_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=f"Received: {next(iter(kwargs))}="):
        data.load(**{"dataset": "fashion_mnist", **kwargs})


def test_tfds_cifar10_loads_from_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        (x, y), (x_test, y_test), info = data.load("cifar10")
    assert x.shape == (12, 32, 32, 3) and x_test.shape == (12, 32, 32, 3) and x.dtype == np.uint8
    assert y.dtype == np.int64 and 0 <= y.min() and y.max() < 10
    assert info["name"] == "cifar10" and info["num_classes"] == 10 and len(info["class_names"]) == 10
    assert info["input_shape"] == (32, 32, 3) and info["flip"] is True
    assert len(info["mean"]) == 3 and all(0 < s for s in info["std"])


def test_tfds_images_of_varying_size_need_image_size():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        with pytest.raises(ValueError, match="varying size.*Received: image_size=None"):
            data.load("tf_flowers")
        (x, _), (x_test, _), info = data.load("tf_flowers", image_size=(16, 16))
    assert x.shape == (6, 16, 16, 3) and x_test.shape == (6, 16, 16, 3) and x.dtype == np.uint8
    assert info["input_shape"] == (16, 16, 3) and info["num_classes"] == 5


def test_tfds_dataset_not_in_data_dir_raises_dataset_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(data.DatasetError, match=r"'cifar10' is not prepared in .*--data-dir.*download=True"):
        data.load("cifar10", data_dir=str(tmp_path), download=False)


def test_unknown_dataset_name_raises_dataset_error():
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(data.DatasetError, match="dataset='no_such_set_xyz' is not"):
        data.load("no_such_set_xyz")


def _write_pngs(folder, classes, per_class, size=(12, 10), mode="RGB"):
    from PIL import Image

    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full(size + ((3,) if mode == "RGB" else ()), 40 * c + i, np.uint8)
            Image.fromarray(pixels, mode).save(folder / name / f"{i}.png")


def test_image_folder_loads_with_a_stratified_held_out_test_split(tmp_path):
    _write_pngs(tmp_path / "shapes", ["circle", "square", "triangle"], per_class=5)
    (x, y), (x_test, y_test), info = data.load(tmp_path / "shapes")
    assert x.shape == (12, 12, 10, 3) and x_test.shape == (3, 12, 10, 3) and x.dtype == np.uint8
    assert np.array_equal(np.bincount(y_test), [1, 1, 1])
    assert info["class_names"] == ["circle", "square", "triangle"] and info["input_shape"] == (12, 10, 3)
    # PNG is lossless and the size is unchanged: each image's value is 40 * class + index
    assert np.array_equal(x[:, 0, 0, 0] // 40, y) and np.array_equal(x_test[:, 0, 0, 0] // 40, y_test)


def test_image_folder_with_train_and_test_subfolders_uses_them(tmp_path):
    _write_pngs(tmp_path / "train", ["a", "b"], per_class=4, mode="L")
    _write_pngs(tmp_path / "test", ["a", "b"], per_class=2, mode="L")
    (x, y), (x_test, y_test), info = data.load(str(tmp_path), image_size=(8, 8))
    assert x.shape == (8, 8, 8, 1) and x_test.shape == (4, 8, 8, 1)
    assert list(y_test) == [0, 0, 1, 1] and info["num_classes"] == 2


def test_folder_without_images_raises_dataset_error(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(data.DatasetError, match="no images"):
        data.load(tmp_path)


# --- splits --------------------------------------------------------------------------------------


def test_split_validation_is_stratified_and_sized(fashion):
    (x, y), _, _ = fashion
    (x_train, y_train), (x_val, y_val) = data.split_validation(x, y, 0.1, seed=0)
    assert len(x_val) == 6000 and len(x_train) == 54000
    assert np.array_equal(np.bincount(y_val), [600] * 10)
    (_, _), (x_val2, _) = data.split_validation(x, y, 0.1, seed=0)
    (_, _), (x_val3, _) = data.split_validation(x, y, 0.1, seed=1)
    assert np.array_equal(x_val, x_val2) and not np.array_equal(x_val, x_val3)


def test_split_validation_total_is_rounded_fraction_for_uneven_classes():
    y = np.array([0] * 7 + [1] * 5 + [2] * 3)
    (x_train, _), (x_val, y_val) = data.split_validation(np.arange(15), y, 0.3)
    assert len(x_val) == round(0.3 * 15) and len(x_train) == 15 - len(x_val)
    assert sorted(set(x_train) | set(x_val)) == list(range(15)) and set(y_val) <= {0, 1, 2}


def test_split_validation_zero_fraction_gives_empty_validation():
    x, y = np.arange(20), np.arange(20) % 4
    (x_train, y_train), (x_val, y_val) = data.split_validation(x, y, 0.0)
    assert np.array_equal(x_train, x) and x_val.shape == (0,) and y_val.shape == (0,)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, "0.1"])
def test_split_validation_rejects_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match=r"`fraction` must be a number in \[0, 1\). Received: fraction="):
        data.split_validation(np.zeros(10), np.zeros(10, int), fraction)
