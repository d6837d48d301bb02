"""Image-classification data from a folder with one sub-folder of images per class.

`list_folder` lists the files of the layouts (``DIR/<class>/...``, and ``DIR/train/<class>/...`` with
``DIR/test/``, ``DIR/val/`` or both: `VALIDATION_FOLDERS`)
without decoding them: the streamed input of `keras_resnet.data.streams` starts from it. `load_folder`
(what `keras_resnet.data.load` calls for a directory) decodes every file into preallocated uint8
arrays, for small folders and machines without TensorFlow. Both read files with the package's one
decoder, `keras_resnet.data.images.read_image`, and apply the run's evaluation transform. No TensorFlow here.
"""

import dataclasses
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from keras_resnet.data import images
from keras_resnet.data.common import DatasetError, DatasetInfo, held_out_name, split_validation
from keras_resnet.data.images import IMAGE_EXTENSIONS


@dataclasses.dataclass
class Listing:
    """A folder's files, listed and split, not decoded: paths (str arrays) and int64 labels."""

    folder: str
    train_dir: str
    class_names: list
    train_paths: np.ndarray
    train_labels: np.ndarray
    test_paths: np.ndarray
    test_labels: np.ndarray

    all_paths: np.ndarray  # every split, in the folder's order
    val_paths: np.ndarray = None  # a validation folder's files, when the folder has one beside test/
    val_labels: np.ndarray = None
    splits: dict = None  # where each split comes from (`keras_resnet.data.common.split_name`)


VALIDATION_FOLDERS = ("val", "valid", "validation")  # what ImageNet, Kaggle and most photo sets ship


def list_folder(folder, test_fraction=0.2, seed=0):
    """Lists `folder` (a ``Path``): its classes, and its training, test and validation files. Nothing is
    decoded.

    - ``train/`` and ``test/``: the two splits; with a validation folder (``val/``, ``valid/`` or
      ``validation/``) beside them, that one is the validation split (a run draws none from train/).
    - ``train/`` and a validation folder, no ``test/``: the validation folder is the test split (as
      ImageNet's ``val/`` is); one line says so.
    - otherwise the class folders are ``DIR``'s own, and a stratified, seeded `test_fraction` of the
      files is the test split.
    """
    val_dir = _validation_folder(folder)
    test_dir = folder / "test" if (folder / "test").is_dir() else None
    has_splits = (folder / "train").is_dir() and (test_dir or val_dir) is not None
    train_dir = folder / "train" if has_splits else folder
    class_names = _class_folders(train_dir)
    paths, labels = _list_images(train_dir, class_names)
    if len(class_names) < 2:
        raise DatasetError(f"{train_dir}: only one class sub-folder ({class_names[0]!r}); classification "
                           "needs two or more, one sub-folder of images per class.")
    if not has_splits:
        train, test = split_validation(paths, labels, test_fraction, seed)
        listing = Listing(str(folder), str(train_dir), class_names, *train, *test, paths,
                          splits={"train": f"{folder.name}/", "test": held_out_name(f"{folder.name}/", test_fraction, seed)})
    else:
        if test_dir is None:
            print(f"data: {folder}: no test/ folder: {val_dir.name}/ is the test split", file=sys.stderr)
            test_dir, val_dir = val_dir, None
        test = _split_folder(test_dir, train_dir, class_names)
        val = _split_folder(val_dir, train_dir, class_names) if val_dir is not None else (None, None)
        if val_dir is not None:
            print(f"data: {folder}: {val_dir.name}/ is the validation split, test/ the test split",
                  file=sys.stderr)
        everything = np.concatenate([paths, test[0]] + ([val[0]] if val_dir is not None else []))
        splits = {"train": "train/", "test": f"{test_dir.name}/"}
        if val_dir is not None:
            splits["validation"] = f"{val_dir.name}/"
        listing = Listing(str(folder), str(train_dir), class_names, paths, labels, *test, everything, *val,
                          splits=splits)
    if not len(listing.test_paths):
        raise DatasetError(f"{folder}: no test images (test_fraction={test_fraction} of {len(labels)} "
                           "images, or none in test/); pass a larger test_fraction or add images.")
    return listing


def _validation_folder(folder):
    """The folder's validation folder (one of `VALIDATION_FOLDERS`), or None; two of them is an error."""
    found = [folder / name for name in VALIDATION_FOLDERS if (folder / name).is_dir()]
    if len(found) > 1:
        raise DatasetError(f"{folder}: holds {' and '.join(p.name + '/' for p in found)}; keep one validation "
                           f"folder ({', '.join(VALIDATION_FOLDERS)}), next to train/ and test/.")
    return found[0] if found else None


def _split_folder(split_dir, train_dir, class_names):
    """The files and labels of a test or validation folder, whose classes must be train/'s."""
    if _class_folders(split_dir) != class_names:
        raise DatasetError(f"{split_dir}: its class sub-folders {_class_folders(split_dir)} differ "
                           f"from those of {train_dir}: {class_names}.")
    return _list_images(split_dir, class_names)


def probe(paths):
    """``(channels, (height, width), line)`` of a folder's files from their headers (nothing decoded):
    3 if any image is colour, else 1 (every header is read when none is: a grayscale folder costs one
    small read per file); the size of the first readable image; one line saying which."""
    from PIL import Image

    first, gray = None, 0
    for path in paths:
        try:
            with Image.open(path) as image:
                mode, size = image.mode, image.size
                upright = image.getexif().get(0x0112) not in images.ROTATED  # EXIF orientation
        except Exception:  # noqa: BLE001 (named when it is decoded)
            continue
        first = first or ((size[1], size[0]) if upright else (size[0], size[1]))
        if images.is_colour(mode):
            kind = f"{path} is colour" + (f" ({gray} grayscale images before it)" if gray else "")
            return 3, first, f"colour (3 channels): {kind}; a folder is colour if any image is"
        gray += 1
    return 1, first or (1, 1), (f"grayscale (1 channel): all {gray} readable images are grayscale; a "
                                "folder is colour if any image is")


def load_folder(folder, image_size=None, test_fraction=0.2, seed=0, bad_images="error", transform="small",
                crop_fraction=images.CROP_FRACTION):
    """Loads `folder` (a ``Path``) as arrays for `keras_resnet.data.load`, which documents it and
    checks the arguments.

    Returns:
        ``(x_train, y_train), (x_test, y_test), info`` without ``info``'s statistics and input shape.
    """
    listing = list_folder(folder, test_fraction, seed)
    channels, first_size, line = probe(listing.all_paths)
    print(f"note: {folder}: {line}", file=sys.stderr)
    size = image_size or first_size
    transform = images.choose_transform(transform, size)
    (x, y), bad, resized = read_images(listing.train_paths, listing.train_labels, size, channels, transform,
                                       crop_fraction)
    test, test_bad, test_resized = read_images(listing.test_paths, listing.test_labels, size, channels,
                                               transform, crop_fraction)
    val, val_bad = (None, {}) if listing.val_paths is None else read_images(
        listing.val_paths, listing.val_labels, size, channels, transform, crop_fraction)[:2]
    bad = sorted({**bad, **test_bad, **val_bad}.items())
    if image_size is None and transform == "small":
        note_resized(folder, resized + test_resized, len(y) + len(test[1]), size)
    report_bad_images(folder, [path for path, _ in bad], len(listing.all_paths), bad_images,
                      bad[0][1] if bad else "")
    empty = [name for c, name in enumerate(listing.class_names) if not np.any(y == c)]
    if empty:
        raise DatasetError(f"{listing.train_dir}: the class sub-folder(s) {empty} hold no readable images "
                           f"({', '.join(IMAGE_EXTENSIONS)}).")
    if not len(test[0]):
        raise DatasetError(f"{folder}: no readable test images; add images.")
    info = folder_info(folder, listing, transforms=images.describe(transform, size, crop_fraction))
    if val is not None:
        info["validation"] = val
    return (x, y), test, info


def folder_info(folder, listing, **entries):
    """The `DatasetInfo` of a listed folder: its name, classes and path, and `entries` (input_shape,
    transforms, ...). Mirrored photos are the same class unless the user says otherwise."""
    return DatasetInfo(name=folder.resolve().name, num_classes=len(listing.class_names),
                       class_names=listing.class_names, flip=True, source=str(folder), splits=listing.splits,
                       **entries)


def _class_folders(folder):
    """The sorted names of `folder`'s sub-folders (not hidden ones); a DatasetError if it has none."""
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        loose = sum(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())
        raise _no_images(folder, f" (it holds {loose} directly)" if loose else "")
    return names


def _no_images(folder, detail=""):
    return DatasetError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its sub-folders{detail}. "
                        "An image folder holds one sub-folder of images per class, e.g. DIR/cat/1.png, "
                        "DIR/dog/2.png (or DIR/train/<class>/... and DIR/test/<class>/...).")


def _list_images(folder, class_names):
    """Image paths under each class sub-folder (recursively, sorted as Keras does) and their labels."""
    paths, labels = [], []
    for label, name in enumerate(class_names):
        for root, _, files in sorted(os.walk(folder / name), key=lambda walked: walked[0]):
            found = [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
            paths += found
            labels += [label] * len(found)
    if not paths:
        raise _no_images(folder)
    return np.asarray(paths, dtype=str), np.asarray(labels, np.int64)


def read_images(paths, labels, size, channels, transform, crop_fraction):
    """Decodes every image into one preallocated array, with a thread per core (Pillow releases the
    interpreter lock while it decodes). Returns ``((x, y), {path: why}, resized)``: the files that do
    not decode are left out; ``resized`` lists ``(path, height, width)`` of those of another size."""
    x = np.zeros((len(paths),) + tuple(size) + (channels,), np.uint8)
    shapes = np.zeros((len(paths), 2), np.int64)
    errors = {}

    def read(i):
        def scale_of(height, width):  # a JPEG's full size, and its evaluation decode scale
            shapes[i] = height, width
            return images.eval_scale(height, width, size, transform, crop_fraction)

        try:
            pixels = images.read_image(str(paths[i]), channels, scale_of)
        except images.ImageError as e:
            errors[i] = str(e)
            return
        if not shapes[i].any():  # decoded whole
            shapes[i] = pixels.shape[:2]
        x[i] = images.eval_transform(pixels, size, transform, crop_fraction)

    with ThreadPoolExecutor(max(os.cpu_count() or 1, 1)) as pool:
        list(pool.map(read, range(len(paths))))
    keep = np.setdiff1d(np.arange(len(paths)), sorted(errors))
    if errors:
        x, shapes = x[keep], shapes[keep]
    other = np.flatnonzero(np.any(shapes != size, axis=1))
    resized = [(str(paths[keep[i]]), *shapes[i]) for i in other]
    return (x, labels[keep]), {str(paths[i]): why for i, why in errors.items()}, resized


def note_resized(folder, resized, total, size):
    """One line when images of another size than the first were resized to it."""
    if resized:
        path, h, w = min(resized)
        print(f"note: {folder}: {len(resized)} of {total} images are not {size[0]}x{size[1]} (the first "
              f"image's size), e.g. {path} is {h}x{w}; they are resized to {size[0]}x{size[1]}. Pass "
              "image_size=(height, width) to choose the size.", file=sys.stderr)


def report_bad_images(folder, bad, total, bad_images, first_error=""):
    """Raises a DatasetError naming the first file that does not decode (`first_error` says why), or
    with ``bad_images="skip"`` prints one line."""
    if not bad:
        return
    shown = ", ".join(map(str, bad[:3])) + (", ..." if len(bad) > 3 else "")
    if bad_images == "skip":
        print(f"warning: {folder}: skipped {len(bad)} of {total} image files that do not decode: {shown}",
              file=sys.stderr)
        return
    others = f" ({len(bad)} of {total} files do not: {shown})" if len(bad) > 1 else ""
    raise DatasetError(f"{first_error or str(bad[0]) + ': not a readable image'}{others}. Delete or "
                       "replace it, or pass bad_images='skip' (--bad-images skip) to leave such files out.")
