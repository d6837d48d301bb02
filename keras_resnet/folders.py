"""Image-classification data from a folder with one sub-folder of images per class.

`keras_resnet.data.load` calls `load_folder` for a directory path. Every image is decoded here, with
TensorFlow's ``decode_image`` and a bilinear resize (what ``keras.utils.image_dataset_from_directory``
does), in parallel, and a file that does not decode is named while loading instead of stopping
training mid-epoch. TensorFlow is imported inside the functions.
"""

import os
import sys

import numpy as np

from keras_resnet.data import IMAGE_EXTENSIONS, DatasetError, split_validation

def load_folder(folder, image_size=None, test_fraction=0.2, seed=0, bad_images="error"):
    """Loads `folder` (a ``Path``) for `keras_resnet.data.load`, which documents it and checks the
    arguments.

    Returns:
        ``(x_train, y_train), (x_test, y_test), info`` without ``info``'s statistics and input shape.
    """
    has_splits = (folder / "train").is_dir() and (folder / "test").is_dir()
    train_dir = folder / "train" if has_splits else folder
    class_names = _class_folders(train_dir)
    paths, labels = _list_images(train_dir, class_names)
    if len(class_names) < 2:
        raise DatasetError(f"{train_dir}: only one class sub-folder ({class_names[0]!r}); classification "
                           "needs two or more, one sub-folder of images per class.")
    channels, first_size = _probe(paths)
    size = image_size or first_size
    x, y = _read_images(train_dir, paths, labels, size, channels, bad_images, image_size is None)
    empty = [name for c, name in enumerate(class_names) if not np.any(y == c)]
    if empty:
        raise DatasetError(f"{train_dir}: the class sub-folder(s) {empty} hold no readable images "
                           f"({', '.join(IMAGE_EXTENSIONS)}).")
    if has_splits:
        test_dir = folder / "test"
        if _class_folders(test_dir) != class_names:
            raise DatasetError(f"{test_dir}: its class sub-folders {_class_folders(test_dir)} differ "
                               f"from those of {train_dir}: {class_names}.")
        test_paths, test_labels = _list_images(test_dir, class_names)
        train, test = (x, y), _read_images(test_dir, test_paths, test_labels, size, channels, bad_images,
                                           image_size is None)
    else:
        train, test = split_validation(x, y, test_fraction, seed)
    if not len(test[0]):
        raise DatasetError(f"{folder}: no test images (test_fraction={test_fraction} of {len(y)} images, "
                           "or none readable in test/); pass a larger test_fraction or add images.")
    return train, test, {"name": folder.resolve().name, "num_classes": len(class_names),
                         "class_names": class_names, "flip": True, "source": str(folder)}


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
    return paths, np.asarray(labels, np.int64)


def _decode(path, channels=0):
    import tensorflow as tf

    return tf.image.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)


def _probe(paths):
    """(channels, (height, width)) of the first image that decodes: 1 if it is grayscale, else 3."""
    import tensorflow as tf

    for path in paths:
        try:
            image = _decode(path)
        except tf.errors.OpError:
            continue  # named by _read_images
        return (1 if image.shape[-1] in (1, 2) else 3), tuple(image.shape[:2])
    return 3, (1, 1)


def _read_images(folder, paths, labels, size, channels, bad_images, note_sizes):
    """Decodes and resizes every image in parallel; files that do not decode are reported."""
    import tensorflow as tf

    def read(index, path):
        image = _decode(path, channels)
        resized = tf.image.resize(image, size, method="bilinear")  # what Keras's folder loader does
        return index, tf.shape(image)[:2], tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().batch(256)
    batches = list(ds.as_numpy_iterator())
    index = np.concatenate([b[0] for b in batches]) if batches else np.zeros(0, np.int64)
    bad = [paths[i] for i in np.setdiff1d(np.arange(len(paths)), index)]
    _report_bad_images(folder, bad, len(paths), bad_images)
    if not batches:
        return np.zeros((0,) + tuple(size) + (channels,), np.uint8), labels[:0]
    shapes = np.concatenate([b[1] for b in batches])
    other = np.flatnonzero(np.any(shapes != size, axis=1))
    if note_sizes and len(other):
        h, w = shapes[other[0]]
        print(f"note: {folder}: {len(other)} of {len(index)} images are not {size[0]}x{size[1]} (the "
              f"first image's size), e.g. {paths[index[other[0]]]} is {h}x{w}; they are resized to "
              f"{size[0]}x{size[1]}. Pass image_size=(height, width) to choose the size.", file=sys.stderr)
    return np.concatenate([b[2] for b in batches]), labels[index]


def _report_bad_images(folder, bad, total, bad_images):
    """Raises a DatasetError naming the first file that does not decode, or prints one line."""
    if not bad:
        return
    import tensorflow as tf

    shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
    if bad_images == "skip":
        print(f"warning: {folder}: skipped {len(bad)} of {total} image files that do not decode: {shown}",
              file=sys.stderr)
        return
    try:
        _decode(bad[0])
        reason = "it did not decode while loading"
    except tf.errors.OpError as e:
        reason = e.message.split("}} ")[-1].split(" [Op:")[0].strip()
    others = f" ({len(bad)} of {total} files do not: {shown})" if len(bad) > 1 else ""
    raise DatasetError(f"{bad[0]}: not a readable image: {reason}{others}. Delete or replace it, or "
                       "pass bad_images='skip' (--bad-images skip) to leave such files out.")
