"""A dataset opened for a command: the one place that decides, from the `dataset` string, which source
reads it (`keras_resnet.data.sources.folder_of`) and whether it is held in memory as arrays or streamed
(`keras_resnet.data.streams`). Training opens both splits (`open_dataset`); ``evaluate`` asks whether a
test split streams (`streamed_test_folder`, `open_folder_test`); ``evaluate`` and ``export`` read the
images of a saved model's data that they use (`open_for_model`)."""

from keras_resnet.data import arrays, folder_streams, tfds_streams
import numpy as np

from keras_resnet.data.common import CACHE, check_folder_path, has_tensorflow, resize_images, subset_index
from keras_resnet.data.pipelines import calibration_index
from keras_resnet.data.idx import IDX_SETS
from keras_resnet.data.images import CROP_FRACTION
from keras_resnet.data.sources import folder_of
from keras_resnet.utils import checks


def open_dataset(dataset="fashion_mnist", *, data_dir=None, download=False, train_size=None, test_size=None,
                 bad_images="error", image_size=None, transform="auto", crop_fraction=CROP_FRACTION,
                 cache="auto", stream=True):
    """Both splits of `dataset` for a run: ``(x_train, y_train), (x_test, y_test), info``.

    An image folder is listed, not decoded, and streamed unless it is small enough to hold in memory
    or `stream` is False (the NumPy pipeline, or no TensorFlow); then ``x_*`` hold file paths. A
    tensorflow-datasets set is streamed from tfds's files the same way; then ``x_*`` hold example
    indices and ``y_*`` -1 (its labels are read with the images). ``train_size`` and ``test_size``
    keep a seeded sample of N examples of their split, every class in proportion where the labels are
    known before reading the images (`keras_resnet.data.common.subset_index`: the same N gives the same
    examples in every run and command), so nothing reads the whole dataset before training. Arrays (the IDX sets) are cut to these sizes before `image_size` resizes them,
    and their statistics are those of the training images kept. ``info["cache"]`` says which.
    """
    checks.check_int("train_size", train_size, 1, none_ok=True)
    checks.check_int("test_size", test_size, 1, none_ok=True)
    checks.check_choice("cache", cache, CACHE)
    folder = folder_of(dataset)
    stream = stream and has_tensorflow()
    if folder is not None and stream:
        (x_train, y_train), (x_test, y_test), info = folder_streams.open_folder(
            folder, image_size=image_size, seed=0, bad_images=bad_images, transform=transform,
            crop_fraction=crop_fraction, cache=cache)
    elif folder is None and dataset not in IDX_SETS and stream:
        (x_train, y_train), (x_test, y_test), info = tfds_streams.open_tfds(
            dataset, data_dir=data_dir, download=download, image_size=image_size, seed=0, transform=transform,
            crop_fraction=crop_fraction, cache=cache)
    else:
        (x_train, y_train), (x_test, y_test), info = _arrays(
            dataset, folder, data_dir, download, train_size, test_size, bad_images, image_size, transform,
            crop_fraction)
    return subset(x_train, y_train, train_size, dataset), subset(x_test, y_test, test_size, dataset), info


def subset(x, y, count, dataset):
    """``(x, y)`` cut to the `count` examples that a ``train_size`` or ``test_size`` keeps
    (`keras_resnet.data.common.subset_index`): stratified, except for a tensorflow-datasets set,
    whose streams do not know the labels before the images (the same rule held in memory)."""
    stratified = not (folder_of(dataset) is None and dataset not in IDX_SETS)
    index = subset_index(y, count, stratified)
    return (x, y) if len(index) == len(y) else (x[index], y[index])


def _arrays(dataset, folder, data_dir, download, train_size, test_size, bad_images, image_size, transform,
            crop_fraction):
    """`open_dataset` of a set held as arrays: `arrays.load`, an IDX set cut before it is resized."""
    if folder is None and transform == "photo":
        raise ValueError(f"transform='photo' is the recipe of image folders and tensorflow-datasets "
                         f"streams; {dataset!r} is held as arrays and trains with the small-image "
                         "recipe. Received: transform='photo'")
    cut_first = folder is None and (train_size, test_size) != (None, None)  # resize only what is kept
    (x_train, y_train), (x_test, y_test), info = arrays.load(
        dataset, data_dir=data_dir, download=download, bad_images=bad_images,
        image_size=None if cut_first else image_size,
        transform=transform if folder is not None else "small", crop_fraction=crop_fraction)
    if cut_first:
        (x_train, y_train), (x_test, y_test), info = arrays.resized(
            subset(x_train, y_train, train_size, dataset), subset(x_test, y_test, test_size, dataset),
            info, image_size)
    info["cache"] = "memory"
    return (x_train, y_train), (x_test, y_test), info


def streamed_test_folder(dataset):
    """The folder whose test split ``evaluate`` streams (memory flat in the folder's size), or None: a
    dataset name, a machine without TensorFlow, or a path that is not there (the array path then says
    what is wrong)."""
    try:
        folder = folder_of(dataset)
    except (ValueError, TypeError):
        return None
    return folder if has_tensorflow() else None


def open_folder_test(folder, image_size, transforms=None):
    """The test split of an image folder, listed and not decoded, for a stream through `transforms`
    (a run's recorded recipe; the small-image recipe without one): ``(paths, labels), info``."""
    transforms = transforms or {}
    _, test, info = folder_streams.open_folder(
        folder, image_size=image_size, transform=transforms.get("recipe") or "small",
        crop_fraction=transforms.get("crop_fraction") or CROP_FRACTION, cache="none")
    return test, info


def open_for_model(dataset, size, transforms=None, *, data_dir=None, download=False, train_count=None,
                   test_count=None, normalization_known=False):
    """The images of `dataset` that a command on a model of input `size` uses: ``(x_train, y_train),
    (x_test, y_test), info``, brought to `size` by `transforms` (a run's recorded recipe: the photo
    recipe's centre crop, or a resize).

    With `train_count` or `test_count`, only part of a split: the seeded sample of `train_count`
    training images (`keras_resnet.data.pipelines.calibration_index`) and the `test_count` test images
    that a ``test_size`` of that count keeps in training (`keras_resnet.data.common.subset_index`). An
    image folder or a tensorflow-datasets set then decodes only those (`folder_streams.sample_folder`, `tfds_streams.sample_tfds`; the statistics, unless
    `normalization_known`, from a sample of the training split); an IDX set is loaded whole and cut.
    """
    transforms = transforms or {}
    bounded = train_count is not None or test_count is not None
    folder = folder_of(dataset)
    part = bounded and (folder is not None or dataset not in IDX_SETS)  # else arrays, cut below
    if part:
        kwargs = dict(image_size=size, transform=transforms.get("recipe") or "small",
                      crop_fraction=transforms.get("crop_fraction") or CROP_FRACTION, train_count=train_count,
                      test_count=test_count, stats=not normalization_known)
        if folder is not None:
            return folder_streams.sample_folder(folder, **kwargs)
        return tfds_streams.sample_tfds(dataset, data_dir=check_folder_path("data_dir", data_dir),
                                        download=download, **kwargs)
    if transforms.get("recipe") == "photo":
        train, test, info = arrays.load(dataset, data_dir=data_dir, download=download, image_size=size,
                                        transform="photo",
                                        crop_fraction=transforms.get("crop_fraction") or CROP_FRACTION)
    else:
        train, test, info = arrays.load(dataset, data_dir=data_dir, download=download)
    resize = tuple(info["input_shape"][:2]) != size  # trained on resized images
    if resize and not (bounded and normalization_known):  # the statistics need them all
        train, test, info = arrays.load(dataset, data_dir=data_dir, download=download, image_size=size)
        resize = False
    if bounded:  # held in memory already: the same images, cut
        index = np.arange(len(train[1])) if train_count is None else calibration_index(len(train[1]), train_count)
        train = tuple(a[index] for a in train)
        test = subset(*test, test_count, dataset)
    if resize:  # the run folder's statistics: only the images kept are resized, as `arrays.load` would
        train, test = ((resize_images(x, size), y) for x, y in (train, test))
        info["input_shape"] = size + tuple(info["input_shape"][2:])
    return train, test, info
