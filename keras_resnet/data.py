"""Datasets -> uint8 arrays, and the training input pipeline (augmentation + normalisation) on top.

Three sources, one return shape: ``(x_train, y_train), (x_test, y_test), info`` with uint8 NHWC images
and int64 labels.

- IDX sets (``"fashion_mnist"``, ``"mnist"``): parsed here from the four ``*-ubyte.gz`` files, nothing
  written to disk. Fashion-MNIST is found in ``data_dir``, then the Debian package
  ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), then the Keras cache.
- Any tensorflow-datasets image-classification name (``"cifar10"``, ``"svhn_cropped"``, ...).
- A directory with one sub-folder of images per class.

The pipeline exists twice with the same recipe (He et al. 2015, section 4.2: pad by 1/8 of the side,
random crop back, horizontal flip; optionally random erasing, Zhong et al. 2017): ``tf_dataset`` as
tf.data, and ``numpy_dataset`` as a ``keras.utils.PyDataset`` in numpy only, for the JAX or PyTorch
backend on a machine without TensorFlow. Both augment a whole batch at once from one table of uniform
draws per image (``_augment``), so they differ only in where the random numbers come from.
TensorFlow is imported inside the functions that need it, never at module import.
"""

import gzip
import math
import os
import struct
import subprocess
import zlib
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np

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
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
ERASE_AREA = (0.02, 0.4)  # random erasing: fraction of the image area (Zhong et al. 2017, s_l, s_h)
ERASE_RATIO = 0.3  # and aspect ratio in [r_1, 1/r_1]


class DatasetError(ValueError):
    """The data is missing or corrupt. The message says what was wrong and how to get the data."""


# ---------------------------------------------------------------------------------------------------
# Loading


def load(dataset="fashion_mnist", data_dir=None, download=False, *, image_size=None,
         test_fraction=0.2, seed=0):
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
      ``test_fraction`` of the images is held out, stratified and seeded. Images are read with
      ``keras.utils.image_dataset_from_directory``; grayscale if the first image is, else RGB.

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
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0 < test_fraction < 1:
        raise ValueError("`test_fraction` must be a number in (0, 1). "
                         f"Received: test_fraction={test_fraction!r}")
    is_folder = isinstance(dataset, str) and os.path.isdir(os.path.expanduser(dataset))
    if isinstance(dataset, os.PathLike) or is_folder:
        train, test, info = _load_folder(Path(dataset).expanduser(), image_size, test_fraction, seed)
    elif not isinstance(dataset, str) or not dataset:
        raise ValueError("`dataset` must be a dataset name or a directory path. "
                         f"Received: dataset={dataset!r}")
    elif dataset in IDX_SETS:
        train, test, info = _load_idx_set(dataset, data_dir, download)
        if image_size is not None and image_size != train[0].shape[1:3]:
            train, test = (_resize(train[0], image_size), train[1]), (_resize(test[0], image_size), test[1])
    else:
        train, test, info = _load_tfds(dataset, data_dir, download, image_size, test_fraction, seed)
    info["input_shape"] = tuple(int(d) for d in train[0].shape[1:])
    info["mean"], info["std"] = _channel_stats(train[0])
    return train, test, info


def _image_size(image_size):
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError("`image_size` must be None, a positive int or (height, width). "
                         f"Received: image_size={image_size!r}")
    return size


def _channel_stats(x):
    """Per-channel mean and std in [0, 1] scale, exact, from a 256-bin histogram per channel."""
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(x.shape[-1]):
        hist = np.bincount(x[..., c].ravel(), minlength=256)
        n = max(hist.sum(), 1)
        mean = (hist @ values) / n
        var = max((hist @ values**2) / n - mean**2, 0.0)
        means.append(round(float(mean) / 255, 6))
        stds.append(round(max(math.sqrt(var), 1.0) / 255, 6))  # constant images: std of 1 pixel level
    return means, stds


def _resize(x, size):
    """Bilinear resize of uint8 NHWC arrays with keras.ops, in chunks; antialiased when shrinking."""
    antialias = size[0] < x.shape[1] or size[1] < x.shape[2]
    chunks = [
        keras.ops.convert_to_numpy(keras.ops.image.resize(
            x[i:i + 4096].astype("float32"), size, antialias=antialias, data_format="channels_last"))
        for i in range(0, len(x), 4096)
    ]
    return np.clip(np.rint(np.concatenate(chunks)), 0, 255).astype(np.uint8)


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
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
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
        folder = Path(data_dir)
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
    except (OSError, ValueError, KeyError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read it ({e}). Delete it and load again with "
                           "download=True, or " + _idx_help(spec)) from e
    return (_nhwc(x), y.astype(np.int64)), (_nhwc(x_test), y_test.astype(np.int64)), \
        _idx_info(spec, name, str(path))


def _nhwc(x):
    return x.reshape(x.shape + (1,)) if x.ndim == 3 else x


def _idx_info(spec, name, source):
    return {"name": name, "num_classes": len(spec.class_names), "class_names": list(spec.class_names),
            "flip": spec.flip, "source": source}


# --- tensorflow-datasets ---------------------------------------------------------------------------


def _load_tfds(name, data_dir, download, image_size, test_fraction, seed):
    import tensorflow_datasets as tfds

    def split(which):
        try:
            return tfds.load(name, split=which, data_dir=data_dir, download=download,
                             as_supervised=True, with_info=True)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise DatasetError(
                f"dataset={name!r} is not 'fashion_mnist' or 'mnist', not an existing directory, and "
                "not a tensorflow-datasets name (see https://www.tensorflow.org/datasets/catalog; "
                "e.g. 'cifar10').") from e
        except AssertionError as e:  # tfds: "could not find data in ..."
            where = data_dir or "tensorflow-datasets' default data_dir (~/tensorflow_datasets)"
            raise DatasetError(
                f"tensorflow-datasets dataset {name!r} is not prepared in {where}. Pass `--data-dir DIR` "
                "(data_dir=DIR) where it was prepared, or `--download` (download=True) to download and "
                f"prepare it there. ({e})") from e

    train_ds, tinfo = split("train")
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
    x, y = _materialise(train_ds, image_size)
    if not tinfo.splits or "test" in tinfo.splits:
        test = _materialise(split("test")[0], image_size)
        train = (x, y)
    else:
        train, test = split_validation(x, y, test_fraction, seed)
    base = name.split(":")[0].split("/")[0]
    return train, test, {"name": base, "num_classes": int(label_feature.num_classes),
                         "class_names": [str(n) for n in label_feature.names],
                         "flip": base not in NO_FLIP, "source": f"tfds:{name}"}


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


# --- a folder of class sub-folders -----------------------------------------------------------------


def _first_image(folder):
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(sub.rglob("*")):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                return f
    return None


def _load_folder(folder, image_size, test_fraction, seed):
    has_splits = (folder / "train").is_dir() and (folder / "test").is_dir()
    train_dir = folder / "train" if has_splits else folder
    first = _first_image(train_dir)
    if first is None:
        raise DatasetError(f"{train_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its sub-folders. "
                           "An image folder holds one sub-folder of images per class, e.g. "
                           "DIR/cat/1.png, DIR/dog/2.png (or DIR/train/<class>/... and "
                           "DIR/test/<class>/...).")
    from PIL import Image

    with Image.open(first) as im:
        color_mode = "grayscale" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "rgb"
        image_size = image_size or (im.height, im.width)
    x, y, class_names = _read_folder(train_dir, image_size, color_mode, None)
    if has_splits:
        test = _read_folder(folder / "test", image_size, color_mode, class_names)[:2]
        train = (x, y)
    else:
        train, test = split_validation(x, y, test_fraction, seed)
    return train, test, {"name": folder.resolve().name, "num_classes": len(class_names),
                         "class_names": class_names, "flip": True, "source": str(folder)}


def _read_folder(folder, image_size, color_mode, class_names):
    try:
        ds = keras.utils.image_dataset_from_directory(
            folder, labels="inferred", label_mode="int", class_names=class_names, color_mode=color_mode,
            image_size=image_size, shuffle=False, batch_size=256, verbose=False)
    except ValueError as e:
        raise DatasetError(f"{folder}: {e}") from e
    batches = list(ds.as_numpy_iterator())
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches]).astype(np.int64)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), y, list(ds.class_names)


# ---------------------------------------------------------------------------------------------------
# Splits and normalisation


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
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"`fraction` must be a number in [0, 1). Received: fraction={fraction!r}")
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


def _scale_offset(info):
    """float32 per-channel (scale, offset) such that (x / 255 - mean) / std == x * scale + offset."""
    mean = np.asarray(info["mean"], np.float64)
    std = np.asarray(info["std"], np.float64)
    return (1 / (255 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def normalize(x, info):
    """uint8 NHWC images -> float32 ``(x / 255 - mean) / std`` with ``info``'s per-channel statistics.

    Works on numpy arrays (returns numpy) and TensorFlow tensors (returns a tensor).
    """
    scale, offset = _scale_offset(info)
    if type(x).__module__.startswith("tensorflow"):
        import tensorflow as tf

        return tf.cast(x, tf.float32) * scale + offset
    return np.asarray(x).astype(np.float32) * scale + offset


def calibration_images(x, info, count=200, seed=0):
    """A seeded random sample of ``min(count, len(x))`` images, normalised float32: int8 calibration data."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"`count` must be a positive int. Received: count={count!r}")
    index = np.random.default_rng(seed).choice(len(x), size=min(count, len(x)), replace=False)
    return normalize(x[np.sort(index)], info)


# ---------------------------------------------------------------------------------------------------
# The pipeline: one augmentation, two array libraries


def _pad(side):
    return side // 8  # 4 px at 32, 3 px at 28


def _augment(x, u, info, erase, ops):
    """Augments and normalises a uint8 batch ``(B, H, W, C)`` from uniform draws ``u`` ``(B, 8)``.

    Reflect-pad by 1/8 of the side and crop back at a random offset, flip horizontally if ``info``
    allows, then normalise and erase one random box with probability ``erase`` (filled with 0, the
    dataset mean after normalisation). The pad and crop are one gather of reflected indices.
    ``ops`` holds the few array functions used, from numpy or TensorFlow.
    """
    h, w = x.shape[1], x.shape[2]

    def crop(offset, side):
        pad = _pad(side)
        i = ops.abs(ops.floor(offset * (2 * pad + 1)) - pad + ops.arange(side))
        return ops.minimum(i, 2 * (side - 1) - i)  # reflect at both edges (pad < side)

    rows, cols = crop(u[:, 0:1], h), crop(u[:, 1:2], w)
    if info["flip"]:
        cols = ops.where(u[:, 2:3] < 0.5, (w - 1) - cols, cols)
    scale, offset = _scale_offset(info)
    out = ops.float32(ops.take(x, rows, cols)) * scale + offset
    if erase > 0:
        lo, hi = ERASE_AREA
        area = h * w * (lo + (hi - lo) * u[:, 3:4])
        ratio = ops.exp(math.log(ERASE_RATIO) * (1 - 2 * u[:, 4:5]))
        eh = ops.clip(ops.floor(ops.sqrt(area * ratio) + 0.5), 1, h)
        ew = ops.clip(ops.floor(ops.sqrt(area / ratio) + 0.5), 1, w)
        top = ops.minimum(ops.floor(u[:, 5:6] * (h - eh + 1)), h - eh)
        left = ops.minimum(ops.floor(u[:, 6:7] * (w - ew + 1)), w - ew)
        r, c = ops.arange(h), ops.arange(w)
        in_rows = (r >= top) & (r < top + eh) & (u[:, 7:8] < erase)
        in_cols = (c >= left) & (c < left + ew)
        out = ops.where((in_rows[:, :, None] & in_cols[:, None, :])[..., None], 0.0, out)
    return out


NUMPY_OPS = SimpleNamespace(
    abs=np.abs, floor=np.floor, sqrt=np.sqrt, exp=np.exp, minimum=np.minimum, clip=np.clip, where=np.where,
    arange=lambda n: np.arange(n, dtype=np.float32),
    float32=lambda a: a.astype(np.float32),
    take=lambda x, rows, cols: x[np.arange(len(x))[:, None, None], rows.astype(np.intp)[:, :, None],
                                 cols.astype(np.intp)[:, None, :]],
)


def _tf_ops():
    import tensorflow as tf

    def take(x, rows, cols):
        x = tf.gather(x, tf.cast(rows, tf.int32), axis=1, batch_dims=1)
        return tf.gather(x, tf.cast(cols, tf.int32), axis=2, batch_dims=1)

    return SimpleNamespace(
        abs=tf.abs, floor=tf.floor, sqrt=tf.sqrt, exp=tf.exp, minimum=tf.minimum,
        clip=tf.clip_by_value, where=tf.where, arange=lambda n: tf.range(n, dtype=tf.float32),
        float32=lambda a: tf.cast(a, tf.float32), take=take)


def _check_pipeline_args(x, y, info, batch_size, erase):
    x_shape = getattr(x, "shape", None)
    if x_shape is None or len(x_shape) != 4 or getattr(x, "dtype", None) != np.uint8:
        raise ValueError("`x` must be a uint8 array of images (N, H, W, C). Received: "
                         f"x with shape={x_shape}, dtype={getattr(x, 'dtype', type(x).__name__)}")
    if len(y) != len(x):
        raise ValueError(f"`y` must hold one label per image. Received: {len(y)} labels for {len(x)} images")
    if x_shape[-1] != len(info["mean"]):
        raise ValueError(f"`x` has {x_shape[-1]} channel(s) but info['mean'] has {len(info['mean'])}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    if isinstance(erase, bool) or not isinstance(erase, (int, float)) or not 0 <= erase <= 1:
        raise ValueError(f"`erase` must be a probability in [0, 1]. Received: erase={erase!r}")


def tf_dataset(x, y, info, batch_size=128, training=False, augment=True, seed=0, erase=0.0):
    """A tf.data pipeline of normalised float32 image batches and int64 labels from uint8 arrays.

    In training: a seeded shuffle that changes every epoch, batches of exactly `batch_size` (the last
    partial batch dropped), and with ``augment`` the augmentation of the module docstring, seeded and
    different every epoch. Augmentation runs on whole batches (batch first, then map), in parallel.
    Outside training: the arrays in order, every sample, normalisation only.

    Args:
        x: uint8 images ``(N, H, W, C)``.
        y: int labels ``(N,)``; they stay sparse.
        info: the dict from `load` (``mean``, ``std``, ``flip``).
        batch_size: images per batch.
        training: shuffle, augment and drop the remainder.
        augment: augment in training (pad-crop, flip if ``info["flip"]``, erasing).
        seed: seed of the shuffle and of the augmentation.
        erase: probability of random erasing per image, in [0, 1].

    Returns:
        A ``tf.data.Dataset`` of ``(images, labels)``.
    """
    import tensorflow as tf

    _check_pipeline_args(x, y, info, batch_size, erase)
    images, labels = tf.constant(x), tf.constant(np.asarray(y, np.int64))
    ds = tf.data.Dataset.range(len(x))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=training)
    if training and augment:
        ops = _tf_ops()
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def fn(index, draw_seed):
            u = tf.random.stateless_uniform((tf.shape(index)[0], 8), seed=draw_seed)
            return _augment(tf.gather(images, index), u, info, erase, ops), tf.gather(labels, index)

        ds = tf.data.Dataset.zip(ds, draws).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda index: (normalize(tf.gather(images, index), info), tf.gather(labels, index)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class NumpyDataset(keras.utils.PyDataset):
    """The `tf_dataset` recipe in numpy only: see `numpy_dataset`."""

    def __init__(self, x, y, info, batch_size=128, training=False, augment=True, seed=0, erase=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        _check_pipeline_args(x, y, info, batch_size, erase)
        self.x, self.y, self.info = x, np.asarray(y, np.int64), info
        self.batch_size, self.training, self.augment = batch_size, training, augment
        self.seed, self.erase = seed, erase
        self.epoch = 0
        self._order = self._permutation()

    def _permutation(self):
        if not self.training:
            return np.arange(len(self.x))
        return np.random.default_rng((self.seed, 0, self.epoch)).permutation(len(self.x))

    def __len__(self):
        n = len(self.x)
        return n // self.batch_size if self.training else -(-n // self.batch_size)

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(f"batch index {i} out of range for {len(self)} batches")
        index = self._order[i * self.batch_size:(i + 1) * self.batch_size]
        x = self.x[index]
        if self.training and self.augment:
            u = np.random.default_rng((self.seed, 1, self.epoch, i)).random((len(x), 8), np.float32)
            x = _augment(x, u, self.info, self.erase, NUMPY_OPS)
        else:
            x = normalize(x, self.info)
        return x, self.y[index]

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._permutation()


def numpy_dataset(x, y, info, batch_size=128, training=False, augment=True, seed=0, erase=0.0, **kwargs):
    """The `tf_dataset` recipe as a ``keras.utils.PyDataset`` in numpy only (no TensorFlow import).

    For training with the JAX or PyTorch backend where TensorFlow is not installed. Same arguments and
    the same augmentation as `tf_dataset` (a different random stream); batch ``i`` of epoch ``e`` is a
    function of ``(seed, e, i)`` only, so it is reproducible with any number of workers, and
    ``on_epoch_end`` (called by ``fit``) reshuffles. ``kwargs`` go to ``PyDataset``
    (``workers``, ``use_multiprocessing``, ``max_queue_size``).

    Returns:
        A `NumpyDataset` of ``(float32 images, int64 labels)`` batches.
    """
    return NumpyDataset(x, y, info, batch_size, training, augment, seed, erase, **kwargs)
