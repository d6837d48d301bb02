"""Datasets -> uint8 arrays (this module), and the training input pipeline on top (`pipelines`).

Three sources, one return shape: ``(x_train, y_train), (x_test, y_test), info`` with uint8 NHWC images
and int64 labels.

- IDX sets (``"fashion_mnist"``, ``"mnist"``): parsed here from the four ``*-ubyte.gz`` files, nothing
  written to disk. Fashion-MNIST is found in ``data_dir``, then the Debian package
  ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), then the Keras cache.
- Any tensorflow-datasets image-classification name (``"cifar10"``, ``"svhn_cropped"``, ...).
- A directory with one sub-folder of images per class (every image is decoded while loading, so a
  corrupt file is named here, not met mid-epoch). Training streams large folders instead
  (`keras_resnet.streams`); this array path is for small folders and machines without TensorFlow.

Normalisation, augmentation and the tf.data / NumPy pipelines live in `keras_resnet.pipelines`; their
public names (``normalize``, ``calibration_images``, ``tf_dataset``, ``numpy_dataset``,
``NumpyDataset``, ``check_batch_size``) are importable from here too. TensorFlow is imported inside
the functions that need it, never at module import.
"""

import dataclasses
import gzip
import math
import os
import re
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np

from keras_resnet.flags import field
from keras_resnet.checks import check_bool, check_choice, check_int, check_int_tuple, check_number, is_int
from keras_resnet.images import CROP_FRACTION, IMAGE_EXTENSIONS, TRANSFORM_CHOICES, describe  # noqa: F401
from keras_resnet.pipelines import (  # noqa: F401 (public names of this module)
    NumpyDataset, calibration_images, check_batch_size, normalize, numpy_dataset, tf_dataset)

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
# tensorflow-datasets sets of digits and characters, where a mirror image is another class or none.
NO_FLIP = {"mnist", "emnist", "kmnist", "svhn_cropped", "binarized_mnist", "omniglot"}
BAD_IMAGES = ("error", "skip")  # what `load` does with a file in an image folder that does not decode
# A tensorflow-datasets name ("cifar10", "emnist/letters", "cifar10:3.*.*"); a `dataset` string that is
# not one, or ends in a file extension, and is not an existing folder is a mistyped path.
TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*(/[\w.+-]+)?(:[\d.*]+)?")
FILE_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,4}$")


class DatasetError(ValueError):
    """The data is missing or corrupt. The message says what was wrong and how to get the data."""


@dataclasses.dataclass
class DataSource:
    """Where a command's images come from: the first three arguments of `load` (the flags of `train`,
    `evaluate`, `export` and `tune`, declared here once)."""

    dataset: str = field("fashion_mnist", "fashion_mnist (offline), a tensorflow-datasets name, or a folder "
                                          "of class folders")
    data_dir: str = field(None, "where the dataset's files are", type=str)
    download: bool = field(False, "let tensorflow-datasets or Keras download a missing dataset (needs "
                                  "internet)")


# ---------------------------------------------------------------------------------------------------
# Loading


def load(dataset="fashion_mnist", data_dir=None, download=False, *, image_size=None,
         test_fraction=0.2, seed=0, bad_images="error", transform="small", crop_fraction=CROP_FRACTION):
    """Loads an image-classification dataset as uint8 NHWC arrays and int64 labels.

    ``dataset`` is one of:

    - ``"fashion_mnist"`` (default) or ``"mnist"``: the IDX files, parsed here. Fashion-MNIST is looked
      for in ``data_dir`` if given (and only there), else in /usr/share/datasets/fashion-mnist (Debian
      package ``dataset-fashion-mnist``; its other locations via ``dpkg -L``), else in the Keras cache
      (``~/.keras/datasets/fashion-mnist``). With ``download=True`` and nothing found, Keras downloads
      it. MNIST is read from ``data_dir``, the Keras cache (``mnist.npz``) or downloaded.
    - a tensorflow-datasets image-classification name such as ``"cifar10"``: ``tfds.load`` with
      ``data_dir`` and ``download``, splits ``"train"`` and ``"test"`` (without a ``"test"`` split,
      ``test_fraction`` of ``"train"`` is held out, stratified and seeded).
    - a directory path with one sub-folder of images per class (the folder names, sorted, are the
      classes). If it holds ``train/`` and ``test/`` sub-folders those are the two splits; otherwise
      ``test_fraction`` of the images is held out, stratified and seeded. Files ending in
      .png/.jpg/.jpeg/.bmp/.gif/.webp/.tif/.tiff are decoded with the package's one decoder
      (`keras_resnet.images.read_image`, also used by ``predict``) and brought to ``image_size``
      (default: the first image's size; a line on stderr says how many images had another size) by
      ``transform``: ``"small"`` resizes bilinearly, ``"photo"`` resizes the shorter side to
      ``size / crop_fraction`` and keeps the centre. RGB if any image is colour, else grayscale (one
      line on stderr says which). A file that does not decode stops the load with a
      `DatasetError` naming it, or with ``bad_images="skip"`` is left out (one line on stderr gives
      the count and the first paths). A path that does not exist is a `DatasetError` ("no such
      folder"), not a tensorflow-datasets look-up.

    ``info["mean"]`` and ``info["std"]`` are per-channel statistics of the training split in [0, 1]
    pixel scale; ``info["flip"]`` says whether horizontal flips make sense (False for digits; set it
    yourself for your own folder if mirrored images are not the same class).

    Args:
        dataset: a name (see above) or a directory path.
        data_dir: where the data lives: the folder of the IDX files, or tensorflow-datasets' data_dir.
        download: allow a download when the data is not found.
        image_size: ``(height, width)`` (or one int for square) to resize every image to. ``None``
            keeps the native size (for a folder: the size of its first image).
        test_fraction: the held-out fraction when a source has no test split, in (0, 1).
        seed: seed of that held-out split.
        bad_images: for an image folder, what to do with files that do not decode: ``"error"``
            (default) or ``"skip"``.
        transform: for an image folder, ``"small"`` (resize), ``"photo"`` (centre crop) or
            ``"auto"`` (photo from 64 pixels up).
        crop_fraction: the photo transform's share of the resized image that is kept, in (0, 1].

    Returns:
        ``(x_train, y_train), (x_test, y_test), info``: ``x_*`` uint8 arrays ``(N, H, W, C)``, ``y_*``
        int64 arrays ``(N,)`` in ``0..num_classes-1``, and ``info``, a dict with ``"name"``,
        ``"num_classes"``, ``"class_names"``, ``"input_shape"`` ``(H, W, C)``, ``"mean"``, ``"std"``,
        ``"flip"`` and ``"source"`` (where the data was read from).

    Example:

    >>> (x, y), (x_test, y_test), info = load("fashion_mnist")
    >>> x.shape, info["class_names"][0]
    ((60000, 28, 28, 1), 'T-shirt/top')
    """
    image_size = _image_size(image_size)
    check_number("test_fraction", test_fraction, 0, 1, low_open=True, high_open=True)
    check_int("seed", seed, 0)
    check_bool("download", download)
    check_choice("bad_images", bad_images, BAD_IMAGES)
    check_choice("transform", transform, TRANSFORM_CHOICES)
    check_number("crop_fraction", crop_fraction, 0, 1, low_open=True)
    data_dir = _check_folder_path("data_dir", data_dir)
    folder = _folder_of(dataset)
    if folder is not None:
        from keras_resnet import folders  # it imports this module

        train, test, info = folders.load_folder(folder, image_size, test_fraction, seed, bad_images, transform,
                                                crop_fraction)
    elif dataset in IDX_SETS:
        train, test, info = _load_idx_set(dataset, data_dir, download)
        return resized(train, test, info, image_size)
    else:
        train, test, info = _load_tfds(dataset, data_dir, download, image_size, test_fraction, seed)
    return _described(train, test, info)


def resized(train, test, info, image_size=None):
    """Arrays ``(x, y)`` of `load` brought to `image_size` (bilinear; None keeps them), with ``info``'s
    input shape, transforms and statistics (of ``train``'s images) made theirs."""
    image_size = _image_size(image_size)
    if image_size is not None and image_size != train[0].shape[1:3]:
        train, test = ((resize_images(x, image_size), y) for x, y in (train, test))
    return _described(train, test, {**info, "transforms": None})


def _described(train, test, info):
    info["input_shape"] = tuple(int(d) for d in train[0].shape[1:])
    if info.get("transforms") is None:
        info["transforms"] = describe("small", info["input_shape"][:2])
    info["mean"], info["std"] = _channel_stats(train[0])
    return train, test, info


def _image_size(image_size):
    """None, or ``(height, width)`` from one int (square) or a pair of positive ints."""
    if image_size is None or is_int(image_size):
        side = check_int("image_size", image_size, 1, none_ok=True)
        return None if side is None else (side, side)
    return check_int_tuple("image_size", image_size, {2})


def _check_folder_path(name, value):
    """None, or a str / os.PathLike path with ``~`` expanded, as a str."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(f"`{name}` must be a folder path (str or os.PathLike) or None. "
                        f"Received: {name}={value!r}")
    return os.path.expanduser(os.fspath(value))


def _folder_of(dataset):
    """The folder `dataset` names, or None for a dataset name; a DatasetError for a missing path.

    An existing folder is always a folder. A string that is not one is a name unless it looks like a
    path (it starts with ``~`` or ``.``, holds a path separator outside a tensorflow-datasets name such
    as ``"emnist/letters"``, or ends in a file extension), so a typo is not sent to tensorflow-datasets.
    """
    if not isinstance(dataset, (str, os.PathLike)) or not os.fspath(dataset):
        raise ValueError("`dataset` must be a dataset name or a directory path. "
                         f"Received: dataset={dataset!r}")
    name = os.fspath(dataset)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    separators = {os.sep, os.altsep, "/"} - {None}
    looks_like_path = isinstance(dataset, os.PathLike) or name.startswith(("~", ".")) or bool(
        FILE_EXTENSION.search(name) and ":" not in name) or (
        any(s in name for s in separators) and not TFDS_NAME.fullmatch(name))
    if looks_like_path and path.exists():
        raise DatasetError(f"{os.path.abspath(path)} is a file; `dataset` takes a folder with one "
                           "sub-folder of images per class, or a dataset name.")
    if looks_like_path:
        raise DatasetError(f"no such folder: {os.path.abspath(path)}")
    return None


STATS_CHUNK = 1 << 22  # pixels per histogram chunk


def _channel_stats(x):
    """Per-channel mean and std in [0, 1] scale, exact, from a 256-bin histogram per channel.

    The histogram is summed over chunks of 4 Mi pixels: one `np.bincount` over a whole split first
    copies it into int64 (8 bytes a pixel), which is about 30 times slower than the chunks."""
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(x.shape[-1]):
        pixels = x[..., c].reshape(-1)
        hist = np.zeros(256, np.int64)
        for start in range(0, pixels.size, STATS_CHUNK):
            hist += np.bincount(pixels[start:start + STATS_CHUNK], minlength=256)
        n = max(hist.sum(), 1)
        mean = (hist @ values) / n
        var = max((hist @ values**2) / n - mean**2, 0.0)
        means.append(round(float(mean) / 255, 6))
        stds.append(round(max(math.sqrt(var), 1.0) / 255, 6))  # constant images: std of 1 pixel level
    return means, stds


def resize_images(x, size):
    """Bilinear resize of uint8 NHWC arrays with keras.ops, in chunks; antialiased when shrinking: the
    images `load` gives for ``image_size=size``.

    Each chunk is rounded into the uint8 result in place: no float32 copy of the whole set is made
    (for Fashion-MNIST at 40x40, 384 MB that took longer to allocate than the resize itself)."""
    out = np.empty((len(x), *size, x.shape[-1]), np.uint8)
    antialias = size[0] < x.shape[1] or size[1] < x.shape[2]
    for i in range(0, len(x), 4096):
        chunk = keras.ops.convert_to_numpy(keras.ops.image.resize(
            x[i:i + 4096].astype("float32"), size, antialias=antialias, data_format="channels_last"))
        out[i:i + 4096] = np.clip(np.rint(chunk, out=chunk), 0, 255, out=chunk)
    return out


# --- IDX (Fashion-MNIST, MNIST) --------------------------------------------------------------------


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


def _load_idx_set(name, data_dir, download):
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
    return {"name": name, "num_classes": len(spec.class_names), "class_names": list(spec.class_names),
            "flip": spec.flip, "source": source}


# --- tensorflow-datasets ---------------------------------------------------------------------------


def tfds_split(name, which, data_dir=None, download=False, **kwargs):
    """``tfds.load(name, split=which, as_supervised=True, with_info=True, **kwargs)``, its errors said
    as `DatasetError`s that name the dataset and how to get it."""
    import tensorflow_datasets as tfds

    try:
        return tfds.load(name, split=which, data_dir=data_dir, download=download, as_supervised=True,
                         with_info=True, **kwargs)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DatasetError(
            f"dataset={name!r} is not 'fashion_mnist' or 'mnist', not an existing directory (no "
            f"such folder: {os.path.abspath(os.path.expanduser(name))}), and not a "
            "tensorflow-datasets name (see https://www.tensorflow.org/datasets/catalog; "
            "e.g. 'cifar10').") from e
    except AssertionError as e:  # tfds: "could not find data in ..."
        where = data_dir or "tensorflow-datasets' default data_dir (~/tensorflow_datasets)"
        where += "" if data_dir is None or os.path.isdir(data_dir) else " (no such folder)"
        raise DatasetError(
            f"tensorflow-datasets dataset {name!r} is not prepared in {where}. Pass `--data-dir DIR` "
            "(data_dir=DIR) where it was prepared, or `--download` (download=True) to download and "
            f"prepare it there. ({e})") from e


def tfds_features(name, tinfo, image_size):
    """``(image key, image shape (H, W, C) with None where it varies, the label feature)`` of an
    image-classification set; a `DatasetError` for another kind of set."""
    if tinfo.supervised_keys is None or len(tinfo.supervised_keys) != 2:
        raise DatasetError(f"tensorflow-datasets dataset {name!r} has no (image, label) supervised keys; "
                           "it is not an image-classification dataset.")
    image_key, label_key = tinfo.supervised_keys
    image_feature, label_feature = tinfo.features[image_key], tinfo.features[label_key]
    shape = tuple(getattr(image_feature, "shape", ()))
    if len(shape) != 3 or not hasattr(label_feature, "num_classes"):
        raise DatasetError(f"tensorflow-datasets dataset {name!r} is not image classification: "
                           f"{image_key} has shape {shape}, {label_key} is {type(label_feature).__name__}.")
    if None in shape[:2] and image_size is None:
        raise ValueError(f"tensorflow-datasets dataset {name!r} has images of varying size {shape}; "
                         "pass image_size=(height, width). Received: image_size=None")
    return image_key, shape, label_feature


def tfds_info(name, label_feature):
    """The ``info`` entries of a tensorflow-datasets set that do not depend on its pixels."""
    base = name.split(":")[0].split("/")[0]
    return {"name": base, "num_classes": int(label_feature.num_classes),
            "class_names": [str(n) for n in label_feature.names],
            "flip": base not in NO_FLIP, "source": f"tfds:{name}"}


def _load_tfds(name, data_dir, download, image_size, test_fraction, seed):
    def split(which):
        return tfds_split(name, which, data_dir, download)

    train_ds, tinfo = split("train")
    _, _, label_feature = tfds_features(name, tinfo, image_size)
    x, y = _materialise(train_ds, image_size)
    if not tinfo.splits or "test" in tinfo.splits:
        test = _materialise(split("test")[0], image_size)
        train = (x, y)
    else:
        train, test = split_validation(x, y, test_fraction, seed)
    return train, test, tfds_info(name, label_feature)


def _materialise(ds, image_size):
    import tensorflow as tf

    if image_size is not None:
        ds = ds.map(lambda x, y: (tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
            x, image_size, antialias=True)), 0, 255), tf.uint8), y), num_parallel_calls=tf.data.AUTOTUNE)
    xs, ys = [], []
    for x, y in ds.batch(1024).prefetch(2).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DatasetError("the split is empty.")
    return np.concatenate(xs).astype(np.uint8), np.concatenate(ys).astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# Splits


def split_validation(x, y, fraction=0.1, seed=0):
    """Holds out a stratified, seeded `fraction` of ``(x, y)`` for validation.

    Each class gives the same share (largest remainder, so the total is ``round(fraction * len(y))``);
    both parts keep the original order.

    Args:
        x: array of samples, first axis the sample.
        y: int labels, shape ``(len(x),)``.
        fraction: share held out, in [0, 1). 0 gives empty validation arrays.
        seed: which samples of each class are held out.

    Returns:
        ``(x_train, y_train), (x_val, y_val)``.
    """
    check_number("fraction", fraction, 0, 1, high_open=True)
    check_int("seed", seed, 0)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"`y` must be 1-D with one label per sample of `x`. Received: y.shape={y.shape} "
                         f"for {len(x)} samples")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    quota = fraction * counts
    take = np.floor(quota).astype(int)
    extra = int(round(fraction * len(y))) - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:max(extra, 0)]] += 1
    rng = np.random.default_rng(seed)
    val = np.zeros(len(y), bool)
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        val[rng.permutation(members)[:take[c]]] = True
    return (x[~val], y[~val]), (x[val], y[val])
