"""IDX sets (Fashion-MNIST, MNIST): the four ``*-ubyte.gz`` files parsed into uint8 arrays, nothing
written to disk. Fashion-MNIST is found in ``data_dir``, then the Debian package
``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), then the Keras cache."""

import gzip
import math
import os
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np

from keras_resnet.data.common import DatasetError, DatasetInfo


FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


# name -> where an IDX set lives. `keras` is the keras.datasets module that downloads it.
IDX_SETS = {
    "fashion_mnist": SimpleNamespace(
        title="Fashion-MNIST", class_names=FASHION_MNIST_CLASSES, flip=True,
        package="dataset-fashion-mnist", system_dir="/usr/share/datasets/fashion-mnist",
        cache="fashion-mnist", keras="fashion_mnist"),
    "mnist": SimpleNamespace(
        title="MNIST", class_names=[str(d) for d in range(10)], flip=False,
        package=None, system_dir=None, cache="mnist.npz", keras="mnist"),
}


def read_idx(path, ndim):
    """Reads one IDX file (gzip-compressed if its name ends in .gz) of uint8 data with `ndim` dims.

    Raises:
        DatasetError: naming the file, if it is not valid gzip, is truncated, has a wrong magic
            number or dimension count, or holds more or fewer bytes than its header declares.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read or decompress it ({e}). The file is truncated or "
                           "corrupt; replace it with a fresh copy.") from e
    if len(data) < 4:
        raise DatasetError(f"{path}: holds only {len(data)} bytes (an IDX file starts with a 4-byte "
                           "magic number). The file is truncated or corrupt.")
    if data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise DatasetError(f"{path}: bad IDX magic number 0x{data[:4].hex()}; expected "
                           f"0x000008{ndim:02x} (uint8 data, {ndim} dimension(s)). The file is corrupt "
                           "or not an IDX file.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: IDX header is truncated ({len(data)} bytes, expected at least "
                           f"{header}). The file is truncated or corrupt.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise DatasetError(f"{path}: holds {len(data)} bytes but its header declares shape {dims}, "
                           f"which needs exactly {expected}. The file is truncated or corrupt.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()  # writable


def _idx_files(folder):
    """The four IDX paths in `folder` (``.gz`` or uncompressed), or the names that are missing."""
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                found[key] = folder / name
                break
        else:
            missing.append(stem + ".gz")
    return found, missing


def _dpkg_dirs(package):
    """Folders holding the package's train-images file, from ``dpkg -L``; [] without dpkg."""
    try:
        out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [Path(line).parent for line in out.splitlines() if line.endswith(IDX_FILES["x_train"] + ".gz")]


def _keras_cache():
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def load_idx_set(name, data_dir, download):
    spec = IDX_SETS[name]
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        found, missing = _idx_files(folder)
        if missing:
            raise DatasetError(
                f"{spec.title}: data_dir={str(data_dir)!r} lacks {', '.join(missing)}"
                + ("" if folder.is_dir() else " (no such directory)") + ". " + _idx_help(spec))
        return _read_idx_set(spec, name, found)
    candidates = []
    if spec.system_dir:
        candidates.append(Path(spec.system_dir))
        if not _idx_files(candidates[0])[0]:
            candidates += _dpkg_dirs(spec.package)
    cache = _keras_cache() / spec.cache
    if cache.suffix == ".npz":
        if cache.is_file():
            return _read_npz_set(spec, name, cache)
    else:
        candidates.append(cache)
    for folder in candidates:
        found, missing = _idx_files(folder)
        if not missing:
            return _read_idx_set(spec, name, found)
    if download:
        module = getattr(keras.datasets, spec.keras)
        (x, y), (x_test, y_test) = module.load_data()
        return (_nhwc(x), y.astype(np.int64)), (_nhwc(x_test), y_test.astype(np.int64)), \
            _idx_info(spec, name, f"keras.datasets.{spec.keras}")
    looked = ", ".join(str(c) for c in candidates + ([cache] if cache.suffix == ".npz" else []))
    raise DatasetError(f"{spec.title} not found (looked in: {looked}). " + _idx_help(spec))


def _idx_help(spec):
    install = f"install it with `sudo apt-get install {spec.package}`, or " if spec.package else ""
    names = ", ".join(stem + ".gz" for stem in IDX_FILES.values())
    return (f"To get {spec.title}: {install}pass `--data-dir DIR` (data_dir=DIR) for a folder holding "
            f"{names}, or pass `--download` (download=True) where there is internet.")


def _read_idx_set(spec, name, paths):
    arrays = {key: read_idx(path, 3 if key.startswith("x") else 1) for key, path in paths.items()}
    for split in ("train", "test"):
        x, y = arrays["x_" + split], arrays["y_" + split]
        if len(x) != len(y):
            raise DatasetError(f"{paths['x_' + split]} holds {len(x)} images but {paths['y_' + split]} "
                               f"holds {len(y)} labels. One of the files is from another dataset.")
        if len(y) and y.max() >= len(spec.class_names):
            raise DatasetError(f"{paths['y_' + split]}: label {int(y.max())} is out of range for "
                               f"{len(spec.class_names)} classes. The file is corrupt.")
    return ((_nhwc(arrays["x_train"]), arrays["y_train"].astype(np.int64)),
            (_nhwc(arrays["x_test"]), arrays["y_test"].astype(np.int64)),
            _idx_info(spec, name, str(paths["x_train"].parent)))


def _read_npz_set(spec, name, path):
    try:
        with np.load(path) as f:
            x, y, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    except (OSError, ValueError, KeyError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise DatasetError(f"{path}: cannot read it ({e}). Delete it and load again with "
                           "download=True, or " + _idx_help(spec)) from e
    for images, labels in ((x, y), (x_test, y_test)):
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or labels.shape != images.shape[:1]:
            raise DatasetError(f"{path}: holds images {images.dtype}{images.shape} and labels "
                               f"{labels.shape}; expected uint8 (N, H, W) images and N labels. Delete it "
                               "and load again with download=True, or " + _idx_help(spec))
    return (_nhwc(x), y.astype(np.int64)), (_nhwc(x_test), y_test.astype(np.int64)), \
        _idx_info(spec, name, str(path))


def _nhwc(x):
    return x.reshape(x.shape + (1,)) if x.ndim == 3 else x


def _idx_info(spec, name, source):
    return DatasetInfo(name=name, num_classes=len(spec.class_names), class_names=list(spec.class_names),
                       flip=spec.flip, source=source,
                       splits=None if source.endswith(".npz") else {"train": IDX_FILES["x_train"],
                                                                    "test": IDX_FILES["x_test"]})
