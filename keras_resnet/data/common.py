"""What every source of the data package shares: its error, the bad-images policy, the dataset flags,
image-size arguments, channel statistics and the one rule for held-out splits."""

import collections.abc
import dataclasses
import hashlib
import math
import os

import keras
import numpy as np

from keras_resnet.utils.checks import check_int, check_int_tuple, check_number, is_int
from keras_resnet.utils.flags import field


BAD_IMAGES = ("error", "skip")  # what `load` does with a file in an image folder that does not decode


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


def check_image_size(image_size):
    """None, or ``(height, width)`` from one int (square) or a pair of positive ints."""
    if image_size is None or is_int(image_size):
        side = check_int("image_size", image_size, 1, none_ok=True)
        return None if side is None else (side, side)
    return check_int_tuple("image_size", image_size, {2})


def check_folder_path(name, value):
    """None, or a str / os.PathLike path with ``~`` expanded, as a str."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(f"`{name}` must be a folder path (str or os.PathLike) or None. "
                        f"Received: {name}={value!r}")
    return os.path.expanduser(os.fspath(value))


STATS_CHUNK = 1 << 22  # pixels per histogram chunk


def channel_stats(x):
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
    val = _stratified(y, fraction, int(round(fraction * len(y))), np.random.default_rng(seed))
    return (x[~val], y[~val]), (x[val], y[val])


def _stratified(y, fraction, count, rng):
    """A mask of `count` of the labels `y`: `fraction` of every class (largest remainder up to
    `count`), drawn by `rng` within each class."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    quota = fraction * counts
    take = np.floor(quota).astype(int)
    extra = count - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:max(extra, 0)]] += 1
    chosen = np.zeros(len(y), bool)
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        chosen[rng.permutation(members)[:take[c]]] = True
    return chosen


SUBSET_SEED = 0  # the same N gives the same examples in every run and command


def subset_index(labels, count, stratified=True):
    """The positions (sorted, int64) of the `count` examples that a ``train_size`` or ``test_size`` of
    `count` keeps: every class in proportion when `stratified` (largest remainder, seeded within each
    class), else a seeded uniform sample (a tensorflow-datasets stream, whose labels are read with
    the images). None or a count of at least ``len(labels)`` keeps them all. The same count gives the
    same examples every time: training, ``evaluate`` and ``export`` call this."""
    n = len(labels)
    if count is None or count >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng((SUBSET_SEED, 5))
    if not stratified:
        return np.sort(rng.permutation(n)[:count]).astype(np.int64)
    return np.flatnonzero(_stratified(np.asarray(labels), count / n, count, rng)).astype(np.int64)


def split_indices(n, fraction, seed):
    """``(kept, held out)``: sorted int64 indices of ``range(n)``, ``round(fraction * n)`` of them held
    out, drawn from `seed`."""
    held = np.random.default_rng((seed, 4)).permutation(n)[:int(round(fraction * n))]
    mask = np.zeros(n, bool)
    mask[held] = True
    return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)


CACHE = ("auto", "memory", "none")


STATS_SAMPLE = 256  # training files whose pixels give the normalisation statistics


CACHE_BUDGET = 1 << 30  # decoded bytes a small-image folder may hold in memory


def hold_in_memory(n, size, channels, transform, cache):
    """Whether `n` images of the small-image recipe are held decoded in memory rather than streamed
    (`cache` "memory", or "auto" when they fit the budget), and their decoded bytes."""
    decoded = n * int(np.prod(size)) * channels
    fits = decoded <= min(CACHE_BUDGET, memory_bytes() // 8)
    if cache == "memory" and transform == "photo":
        raise ValueError("cache='memory' holds decoded images, for the small-image recipe; the photo "
                         "recipe decodes a new crop of every image each epoch. Received: cache='memory' "
                         "with transform='photo'")
    return transform == "small" and (cache == "memory" or (cache == "auto" and fits)), decoded


def memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def keep_positions(ds, keep):
    """The elements of the tf.data `ds` at the positions where the boolean array `keep` is True."""
    import tensorflow as tf

    keep = tf.constant(keep)

    def kept(position, element):
        return tf.gather(keep, position)

    def unnumbered(position, element):
        return element

    return ds.enumerate().filter(kept).map(unnumbered)


def process_rows(k, n, batch_size, process=0, processes=1):
    """Whether each position `k` (an int array) of `n` examples cut into batches of `batch_size` is
    one of this process's rows: rows ``p*share .. (p+1)*share`` of every batch, share the batch's
    length // processes (the short last batch too; rows past ``share * processes`` are nobody's)."""
    start = k // batch_size * batch_size
    share = np.minimum(batch_size, n - start) // processes
    row = k - start
    return (row >= process * share) & (row < (process + 1) * share)


def has_tensorflow():
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


_ABSENT = object()  # a DatasetInfo entry that is not set (a key a dict would not hold)


@dataclasses.dataclass(eq=False)
class DatasetInfo(collections.abc.MutableMapping):
    """What a dataset is, as every source describes it (the one type, built by `idx`, `tfds`,
    `folders`, `folder_streams` and `tfds_streams`): its name, classes, whether a mirrored image is
    the same class (``flip``), where it was read from (``source``), and, once known, the input shape,
    the per-channel statistics of its training images, the transforms, how a run holds it (``cache``),
    what its streams need (``stream``), a validation split of its own (``validation``: a folder's
    ``val/`` beside ``train/`` and ``test/``) and where each split comes from (``splits``, see
    `split_name`).

    It reads as the dict of 0.1 did (``info["mean"]``, ``info.get("stream")``, ``"stream" in info``,
    ``{**info}``): an entry not yet set is absent, not None."""

    name: str
    num_classes: int
    class_names: list
    flip: bool
    source: str
    input_shape: tuple = _ABSENT
    mean: list = _ABSENT
    std: list = _ABSENT
    transforms: dict = _ABSENT
    cache: str = _ABSENT
    stream: dict = _ABSENT
    validation: tuple = _ABSENT  # a source's own validation split (x_val, y_val): a folder's val/
    splits: dict = _ABSENT  # where each split's examples come from: {"train": ..., "test": ..., "validation": ...}

    def _key(self, key):
        if key not in DATASET_INFO_KEYS:
            raise KeyError(f"{key!r} is not an entry of a dataset's description: {', '.join(DATASET_INFO_KEYS)}")
        return key

    def __getitem__(self, key):
        value = getattr(self, self._key(key))
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value):
        setattr(self, self._key(key), value)

    def __delitem__(self, key):
        self[key]  # noqa: B018 (a KeyError for an absent entry, as a dict)
        setattr(self, key, _ABSENT)

    def __iter__(self):
        return (key for key in DATASET_INFO_KEYS if getattr(self, key) is not _ABSENT)

    def __len__(self):
        return sum(1 for _ in self)

    def __repr__(self):
        return f"DatasetInfo({dict(self)!r})"

    @classmethod
    def of(cls, mapping, **entries):
        """A new `DatasetInfo` with the entries of `mapping` (a `DatasetInfo` or a dict of its keys),
        then `entries`."""
        return cls(**{**mapping, **entries})


DATASET_INFO_KEYS = tuple(f.name for f in dataclasses.fields(DatasetInfo))


def split_name(info, split):
    """Where the examples of `split` ("train", "validation" or "test") come from, in words: a folder's
    ``test/``, a tensorflow-datasets split, or the held-out share of another split that the source drew."""
    return (info.get("splits") or {}).get(split, split)


def held_out_name(split, fraction, seed):
    """The name of a seeded, held-out share of `split` (`split_name`)."""
    return f"{split}: {fraction:g} held out (seed {seed})"


class ExampleDigest:
    """The identity of the examples a figure was measured on, whichever route brought them (a folder
    streamed or held in memory, a tensorflow-datasets set, IDX files): each example is its label and
    the uint8 pixels of the evaluation transform, hashed; the fingerprint is order-free, so two
    measurements on the same images have the same one, and a measurement on other images (another
    split, a held-out share drawn differently, a subset) another.

    ``add(images, labels)`` as batches arrive (memory flat in the number of examples: 8 bytes each);
    ``record(split)`` is what ``run.json`` and ``evaluation.json`` keep."""

    def __init__(self):
        self.digests = []

    def add(self, images, labels):
        images = np.asarray(images)
        tag = f"{images.dtype.str}{images.shape[1:]}".encode()
        for image, label in zip(images, np.asarray(labels)):
            digest = hashlib.blake2b(tag, digest_size=8)
            digest.update(np.ascontiguousarray(image).tobytes())
            digest.update(int(label).to_bytes(8, "little", signed=True))
            self.digests.append(digest.digest())

    def record(self, split):
        """``{"split", "examples", "fingerprint"}``: `split`'s name, the number of examples, and 16 hex
        digits of a SHA-256 over their sorted digests."""
        return {"split": split, "examples": len(self.digests),
                "fingerprint": hashlib.sha256(b"".join(sorted(self.digests))).hexdigest()[:16]}
