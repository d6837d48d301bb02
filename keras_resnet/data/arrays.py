"""Any dataset -> uint8 arrays: ``(x_train, y_train), (x_test, y_test), info`` with uint8 NHWC images
and int64 labels, from an IDX set (`keras_resnet.data.idx`), a tensorflow-datasets set
(`keras_resnet.data.tfds`) or an image folder (`keras_resnet.data.folders`, every image decoded while
loading, so a corrupt file is named here, not met mid-epoch). Training streams large folders and tfds
sets instead (`keras_resnet.data.streams`, `keras_resnet.data.tfds_streams`); the arrays are for small
sets and machines without TensorFlow."""

from keras_resnet.data import folders
from keras_resnet.data.common import (
    BAD_IMAGES, DatasetInfo, channel_stats, check_folder_path, check_image_size, resize_images)
from keras_resnet.data.idx import IDX_SETS, load_idx_set
from keras_resnet.data.images import CROP_FRACTION, TRANSFORM_CHOICES, describe
from keras_resnet.data.sources import folder_of
from keras_resnet.data.tfds import load_tfds_arrays
from keras_resnet.utils.checks import check_bool, check_choice, check_int, check_number


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
      ``test_fraction`` of ``"train"`` is held out, seeded: `keras_resnet.data.tfds.held_out`, the
      examples that every command holds out).
    - a directory path with one sub-folder of images per class (the folder names, sorted, are the
      classes). If it holds ``train/`` and ``test/`` sub-folders those are the two splits (a ``val/``,
      ``valid/`` or ``validation/`` beside them is the validation split, ``info["validation"]``; without
      ``test/`` it is the test split); otherwise ``test_fraction`` of the images is held out,
      stratified and seeded. Files ending in
      .png/.jpg/.jpeg/.bmp/.gif/.webp/.tif/.tiff are decoded with the package's one decoder
      (`keras_resnet.data.images.read_image`, also used by ``predict``) and brought to ``image_size``
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
    image_size = check_image_size(image_size)
    check_number("test_fraction", test_fraction, 0, 1, low_open=True, high_open=True)
    check_int("seed", seed, 0)
    check_bool("download", download)
    check_choice("bad_images", bad_images, BAD_IMAGES)
    check_choice("transform", transform, TRANSFORM_CHOICES)
    check_number("crop_fraction", crop_fraction, 0, 1, low_open=True)
    data_dir = check_folder_path("data_dir", data_dir)
    folder = folder_of(dataset)
    if folder is not None:
        train, test, info = folders.load_folder(folder, image_size, test_fraction, seed, bad_images, transform,
                                                crop_fraction)
    elif dataset in IDX_SETS:
        train, test, info = load_idx_set(dataset, data_dir, download)
        return resized(train, test, info, image_size)
    else:
        train, test, info = load_tfds_arrays(dataset, data_dir, download, image_size, test_fraction, seed)
    return _described(train, test, info)


def resized(train, test, info, image_size=None):
    """Arrays ``(x, y)`` of `load` brought to `image_size` (bilinear; None keeps them), with ``info``'s
    input shape, transforms and statistics (of ``train``'s images) made theirs."""
    image_size = check_image_size(image_size)
    if image_size is not None and image_size != train[0].shape[1:3]:
        train, test = ((resize_images(x, image_size), y) for x, y in (train, test))
    info = DatasetInfo.of(info, transforms=None) if isinstance(info, DatasetInfo) else {**info, "transforms": None}
    return _described(train, test, info)


def _described(train, test, info):
    info["input_shape"] = tuple(int(d) for d in train[0].shape[1:])
    if info.get("transforms") is None:
        info["transforms"] = describe("small", info["input_shape"][:2])
    info["mean"], info["std"] = channel_stats(train[0])
    return train, test, info


# --- IDX (Fashion-MNIST, MNIST) --------------------------------------------------------------------


# --- tensorflow-datasets ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Splits

