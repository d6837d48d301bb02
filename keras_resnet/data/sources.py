"""What a `dataset` string names, decided in one place: an image folder, an IDX set or a
tensorflow-datasets name."""

import os
import re
from pathlib import Path

from keras_resnet.data.common import DatasetError


# A tensorflow-datasets name ("cifar10", "emnist/letters", "cifar10:3.*.*"); a `dataset` string that is
# not one, or ends in a file extension, and is not an existing folder is a mistyped path.
TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*(/[\w.+-]+)?(:[\d.*]+)?")


FILE_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,4}$")
PREPARED_PLAN = "prepare.json"  # what `keras-resnet prepare` writes first, in a prepared folder


def is_prepared(path):
    """Whether `path` is a prepared folder (`keras_resnet.data.prepared`): a tensorflow-datasets set's
    metadata beside its shards, written by ``keras-resnet prepare`` (read as a tfds set)."""
    path = Path(os.path.expanduser(os.fspath(path)))
    return all((path / name).is_file() for name in (PREPARED_PLAN, "dataset_info.json", "features.json"))


def folder_of(dataset):
    """The folder `dataset` names, or None for a dataset name; a DatasetError for a missing path.

    An existing folder is always a folder, except a prepared one (`is_prepared`), which is read as a
    tensorflow-datasets set by its path. A string that is not one is a name unless it looks like a
    path (it starts with ``~`` or ``.``, holds a path separator outside a tensorflow-datasets name such
    as ``"emnist/letters"``, or ends in a file extension), so a typo is not sent to tensorflow-datasets.
    """
    if not isinstance(dataset, (str, os.PathLike)) or not os.fspath(dataset):
        raise ValueError("`dataset` must be a dataset name or a directory path. "
                         f"Received: dataset={dataset!r}")
    name = os.fspath(dataset)
    path = Path(name).expanduser()
    if path.is_dir():
        return None if is_prepared(path) else path
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
