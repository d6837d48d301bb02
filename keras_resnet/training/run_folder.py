"""What a run folder says about the model files in it: dataset, normalisation and class names.

A training run writes ``config.json`` (and ``run.json``, the config with the metrics) next to its
``model.keras`` and ``best.keras``; `run_defaults` reads them back, so that ``export`` and
``evaluate`` use the data the model was trained on when no dataset is given.
"""

import os

from keras_resnet.utils import io_utils

DEFAULT_DATASET = "fashion_mnist"
RUN_FILES = ("config.json", "run.json")
RUN_FACTS = ("dataset", "data_dir", "normalization", "class_names", "transforms")  # what a .keras file carries


def run_defaults(model_path):
    """The training facts recorded next to a ``.keras`` file, or None when there is no run folder.

    Args:
        model_path: the path of a ``.keras`` file.

    Returns:
        None, or a dict with ``dataset`` (the name or folder it was trained on), ``data_dir`` (where
        its files were, for an IDX or tensorflow-datasets set, or None), ``normalization``
        (``{"mean": [...], "std": [...]}``, [0, 1] pixel scale, or None), ``class_names`` (a list or
        None), ``transforms`` (the recipe of `keras_resnet.data.images`, or None) and ``source`` (the
        file read). The first of ``config.json`` and ``run.json`` in the
        model's folder that holds a ``dataset`` is used, else the record the ``.keras`` file carries
        of its run (`RUN_FACTS`, written by training: a model copied away from its run folder keeps
        its normalisation).
    """
    if not isinstance(model_path, (str, os.PathLike)) or not os.fspath(model_path):
        raise TypeError(f"`model_path` must be a file path (str or os.PathLike). Received: "
                        f"model_path={model_path!r}")
    folder = os.path.dirname(os.path.abspath(os.fspath(model_path)))
    records = [(os.path.join(folder, name), io_utils.read_json(os.path.join(folder, name))) for name in RUN_FILES]
    records.append((f"{os.fspath(model_path)} (its own record of its run)", io_utils.model_facts(model_path)))
    for source, config in records:
        if isinstance(config, dict) and config.get("dataset"):
            norm = config.get("normalization")
            if not (isinstance(norm, dict) and "mean" in norm and "std" in norm):
                norm = None
            transforms = config.get("transforms")
            return {"dataset": str(config["dataset"]), "data_dir": config.get("data_dir"),
                    "normalization": None if norm is None else {"mean": norm["mean"], "std": norm["std"]},
                    "class_names": config.get("class_names"), "source": source,
                    "transforms": transforms if isinstance(transforms, dict) else None}
    return None


def dataset_for(model_path, dataset=None):
    """``(dataset, defaults, note)``: `dataset` if given, else the run folder's, else fashion_mnist.

    `defaults` is `run_defaults(model_path)` whenever there is a run folder: the run folder is the
    truth, so its normalisation, transforms and class names are used with a `dataset` given too (its
    ``data_dir`` only for the dataset it recorded); else None. `note` is one line for people saying
    which data is used and why, or None when `dataset` was given and there is no run folder.
    """
    defaults = run_defaults(model_path)
    if dataset is not None:
        if defaults is None:
            return dataset, None, None
        same = _recorded(dataset) == defaults["dataset"]
        note = (f"using the normalisation, transforms and class names of {defaults['source']}"
                + ("" if same else f" (the run trained on {defaults['dataset']!r}, not {str(dataset)!r})"))
        return dataset, {**defaults, "data_dir": defaults["data_dir"] if same else None}, note
    if defaults is not None:
        return defaults["dataset"], defaults, (f"using dataset {defaults['dataset']!r}, its normalisation "
                                               f"and class names from {defaults['source']}")
    return DEFAULT_DATASET, None, (f"no config.json or run.json next to {os.fspath(model_path)}: using "
                                   f"{DEFAULT_DATASET} (pass --dataset to choose)")


def _recorded(dataset):
    """`dataset` as a run folder records it: a folder's absolute path, else the name."""
    path = os.path.expanduser(os.fspath(dataset))
    return os.path.abspath(path) if os.path.isdir(path) else str(dataset)


def load_data_for(model, model_path, dataset=None, data_dir=None, download=False, purpose="evaluation", *,
                  train_count=None, test_count=None):
    """The data a saved model is evaluated or exported with: the run folder's dataset, normalisation
    and class names (see `dataset_for`), its images brought to the model's input by the run's
    evaluation transform (`keras_resnet.data.images.eval_transform`: the photo recipe's centre crop, or a
    resize) when it was trained on resized images.

    With `train_count` or `test_count`, only part of a split is returned: the seeded sample of
    `train_count` training images that ``keras_resnet.data.calibration_images(x_train, info,
    count=train_count)`` would take (`keras_resnet.data.pipelines.calibration_index`), and the first
    `test_count` test images, each the image the whole split holds. For an image folder or a
    tensorflow-datasets set only those images are decoded (`keras_resnet.data.folder_streams.sample_folder`,
    `keras_resnet.data.tfds_streams.sample_tfds`), so memory does not grow with the dataset; the statistics,
    when the run folder has none, then come from a sample of the training split. None: the whole split.

    Args:
        purpose: what the images are for, in messages ("evaluation", "int8 calibration", ...).
        train_count: None (every training image) or how many to sample, an int >= 0.
        test_count: None (every test image) or how many of the first to keep, an int >= 0.

    Returns:
        ``(dataset, (x_train, y_train), (x_test, y_test), info, note)``; ``info`` carries the run's
        ``mean``, ``std`` and ``class_names``; ``note`` is `dataset_for`'s line or None.

    Raises:
        ValueError: no dataset given, no run folder, and a model whose images are not Fashion-MNIST's
            kind (not one channel): the fallback would not fit it. FileNotFoundError or ValueError:
            the run folder's dataset is not where it recorded it.
    """
    from keras_resnet import data
    from keras_resnet.utils.checks import check_int

    check_int("train_count", train_count, minimum=0, none_ok=True)
    check_int("test_count", test_count, minimum=0, none_ok=True)
    given = dataset is not None
    dataset, defaults, note = dataset_for(model_path, dataset)
    if data_dir is None and defaults:  # where the run read its IDX or tensorflow-datasets files
        data_dir = defaults["data_dir"]
    channels = model.input_shape[-1]
    if defaults is None and note is not None and channels != 1:
        raise ValueError(
            f"{purpose} needs images like the ones {os.fspath(model_path)} was trained on, and no run folder "
            f"beside it (config.json or run.json) says which: pass --dataset (a folder of class folders, or "
            f"a tensorflow-datasets name; the API's `dataset`). The fallback, {DEFAULT_DATASET}, has 1-channel "
            f"images; this model takes {channels} channels.")
    transforms = (defaults or {}).get("transforms") or {}
    size = tuple(model.input_shape[1:3])
    try:
        train, test, info = data.open_for_model(
            dataset, size, transforms, data_dir=data_dir, download=download, train_count=train_count,
            test_count=test_count, normalization_known=bool(defaults and defaults["normalization"]))
    except (OSError, ValueError) as e:
        if defaults is None or given:
            raise
        message = (f"the dataset {defaults['dataset']!r} comes from the run folder ({defaults['source']}) and "
                   f"cannot be loaded from there: {' '.join(str(e).split())}. Pass --dataset to use data "
                   "elsewhere")
        raise (FileNotFoundError if isinstance(e, FileNotFoundError) else ValueError)(message) from e
    info["transforms"] = transforms or None
    if defaults:
        info = data.DatasetInfo.of(info, **{**(defaults["normalization"] or {}),
                                            "class_names": defaults["class_names"] or info["class_names"]})
    return dataset, train, test, info, note
