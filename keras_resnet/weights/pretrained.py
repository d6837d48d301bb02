"""Checkpoint files and Hub names -> the weights of a model that `build` made.

`load_weights(model, source)` fills a `keras_resnet.build` model from

* a torchvision checkpoint (``resnet50-0676ba61.pth``, a PyTorch ``state_dict``), read with torch;
  timm's in the same layout, and timm's pre-activation ResNetV2 (``resnetv2_50`` ...) into
  ``build("resnetv2_50")``;
* a safetensors file (timm's Hub repositories ship ``model.safetensors`` and ``config.json``), read
  through NumPy, without torch;
* a Hub name, ``timm/resnet50.a1_in1k`` or ``hf-hub:timm/resnet50.a1_in1k``, downloaded once into
  the huggingface_hub cache (or a local folder holding ``model.safetensors``);
* the package's own ``.keras`` and ``.weights.h5`` files.

The tensor names and the architecture read from them live in `keras_resnet.weights.layout`, the checks
in `keras_resnet.weights.assignment`; nothing is assigned unless every check passes, so on any error the
model keeps the weights it had. `normalization_of(source)` gives the mean and std the checkpoint
expects, in the scale of ``keras_resnet.data.normalize``.
"""

import contextlib
import os
import re
import warnings

import numpy as np

from keras_resnet import models
from keras_resnet.weights import assignment
from keras_resnet.weights import layout as ckpt
from keras_resnet.weights.layout import (  # re-exported: the public names of the pretrained API
    IMAGENET_NORMALIZATION,
    SUPPORTED,
    checkpoint_key,
    read_architecture,
    to_state_dict,
)

__all__ = ["IMAGENET_NORMALIZATION", "SUPPORTED", "architecture_of", "checkpoint_key", "load_weights",
           "normalization_of", "read_architecture", "to_state_dict"]

# timm's default configuration of its ResNetV2 (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD)
RESNETV2_NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
_FILE_SUFFIXES = _TORCH_SUFFIXES + (".safetensors", ".keras", ".h5")


def _load_keras_file(model, path, source):
    """Our own ``.keras`` (any head: transfer) or ``.weights.h5`` (the same architecture) file."""
    import keras

    config = models.config_of(model)
    if path.endswith(".keras"):
        other = keras.saving.load_model(path, compile=False, safe_mode=True)
        try:
            other_config = models.config_of(other)
        except ValueError:
            raise ValueError(f"{source}: the file holds {other.name!r} of type {type(other).__name__}, "
                             "not a model made by keras_resnet.build.") from None
        name = other.name
        file_classes = other_config["num_classes"] if other_config["include_top"] else None
    else:
        # A twin takes the file, so that a failure leaves the model untouched; Keras warns (instead of
        # raising) about parts of the file it skipped, which here is a failure too.
        other, name = models.ResNet.from_config(model.get_config()), model.name
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                other.load_weights(path)
                error = next((str(w.message) for w in caught if "Skipping" in str(w.message)), None)
            except (ValueError, KeyError, TypeError) as e:
                error = str(e)
        if error is not None:
            raise ValueError(f"{source}: the weights do not fit the model {model.name} (a .weights.h5 file "
                             f"loads only into the architecture that wrote it; use its .keras file to change "
                             f"the classifier). Nothing was loaded; the model keeps its weights. {error}")
        file_classes = config["num_classes"] if config["include_top"] else None
    arrays = {v.path: np.asarray(v.numpy()) for v in other.weights
              if v.path.split("/")[-1] in ckpt.PARAMS}
    load_head, note = assignment.head_decision(config, file_classes, name)
    plan, problems = assignment.plan_assignment(model, arrays, lambda p: p, tuple, load_head,
                                                ignored=() if load_head else ("logits/kernel", "logits/bias"))
    if problems:
        assignment.raise_problems(source, f"{len(problems)} weight(s) of {name} do not fit the model "
                                          f"{model.name}", problems)
    return {"name": name}, assignment.assign(plan, arrays, lambda a: a), load_head, note


# ------------------------------------------------------------------ sources


def _read_torch(path):
    try:
        import torch
    except ImportError:
        stem = os.path.splitext(path)[0]
        raise ImportError(
            f"Reading the PyTorch checkpoint {path!r} needs torch, which is not installed. Install it "
            f"(pip install torch), or convert the file once where torch is installed and pass the "
            f".safetensors file instead (read through NumPy, no torch needed):\n  python -c \"import torch; "
            f"from safetensors.torch import save_file; save_file({{k: v.contiguous() for k, v in "
            f"torch.load('{path}', weights_only=True).items()}}, '{stem}.safetensors')\"") from None
    with _unreadable(path, "PyTorch checkpoint (.pth)"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):  # training checkpoints wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict (a dict of tensors). "
                         f"Received: {type(state).__name__}")
    arrays = {}
    for key, value in state.items():
        if torch.is_tensor(value):
            key = key[len("module."):] if key.startswith("module.") else key  # saved from DataParallel
            value = value.detach().cpu()
            arrays[key] = (value.float() if value.is_floating_point() else value).numpy()
    return arrays


def _read_safetensors(path):
    try:
        from safetensors import safe_open
    except ImportError:
        raise ImportError(f"Reading {path!r} needs the safetensors package: "
                          "pip install 'keras3-resnet[pretrained]'") from None
    with _unreadable(path, ".safetensors file"):
        with safe_open(path, framework="np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}


@contextlib.contextmanager
def _unreadable(path, what):
    """A checkpoint that its reader cannot read (truncated, corrupt, another format) becomes one
    ValueError naming the file; the reader's own errors do not."""
    try:
        yield
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 -- safetensors and torch raise their own kinds for a damaged file
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{path!r} is not a readable {what} (truncated or corrupt?): {type(e).__name__}: "
                         f"{first[:200]}. Download or convert it again.") from e


def _hub_settings():
    """The huggingface_hub cache folder and offline flag, read now (tests and users set them late)."""
    from huggingface_hub import constants

    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or (
        os.path.join(env["HF_HOME"], "hub") if env.get("HF_HOME") else constants.HF_HUB_CACHE)
    offline = env.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE") or constants.HF_HUB_OFFLINE
    return cache, offline


def _hub_download(repo_id):
    """``(weights path, config path or None)`` of a Hub repository, from the cache or downloaded."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ImportError(f"Loading {repo_id!r} from the Hugging Face Hub needs huggingface_hub: "
                          "pip install 'keras3-resnet[pretrained]'") from None
    cache, offline = _hub_settings()

    def fetch(filename):
        try:
            return hf_hub_download(repo_id, filename, cache_dir=cache, local_files_only=offline), None
        except Exception as e:  # noqa: BLE001 - offline, network and missing-file errors differ by version
            return None, e

    error = None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path, error = fetch(filename)
        if path is not None:
            return path, fetch("config.json")[0]
    why = "HF_HUB_OFFLINE=1 forbids downloading it" if offline else "downloading it failed"
    raise FileNotFoundError(
        f"The Hub repository {repo_id!r} is not in the huggingface_hub cache {cache!r} and {why} "
        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Download it where "
        f"there is internet (python -c \"import huggingface_hub; print(huggingface_hub.snapshot_download("
        f"'{repo_id}', allow_patterns=['model.safetensors', 'config.json']))\"), copy the folder here and "
        f"pass the local file instead: load_weights(model, 'FOLDER/model.safetensors'); or set HF_HUB_CACHE "
        f"to a cache that holds it.")


def _resolve(source):
    """``(kind, weights path, config.json path or None)`` of a source."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"`source` must be a file path or a Hub name such as 'timm/resnet50.a1_in1k'. "
                        f"Received: source={source!r} of type {type(source).__name__}")
    text = os.fspath(source)
    hub = re.fullmatch(r"(?:hf-hub:)?([A-Za-z0-9][\w.-]*/[\w.-]+)", text)
    if os.path.isdir(text):
        path = next((os.path.join(text, f) for f in ("model.safetensors", "pytorch_model.bin")
                     if os.path.isfile(os.path.join(text, f))), None)
        if path is None:
            raise FileNotFoundError(f"The folder {text!r} holds neither model.safetensors nor "
                                    "pytorch_model.bin.")
        text = path
    elif not os.path.exists(text):
        if hub and (text.startswith("hf-hub:") or not text.endswith(_FILE_SUFFIXES)):
            path, config = _hub_download(hub[1])
            return "hub", path, config
        raise FileNotFoundError(f"No such checkpoint file: {text!r}. `source` is a .pth/.safetensors/.keras/"
                                ".weights.h5 file, a folder holding model.safetensors, or a Hub name such "
                                "as 'timm/resnet50.a1_in1k'.")
    config = os.path.join(os.path.dirname(text), "config.json")
    config = config if os.path.isfile(config) else None
    if text.endswith(".safetensors"):
        return "safetensors", text, config
    if text.endswith(_TORCH_SUFFIXES):
        return "pth", text, config
    if text.endswith(".keras"):
        return "keras", text, None
    if text.endswith(".weights.h5"):
        return "weights.h5", text, None
    raise ValueError(f"Unknown checkpoint format: {text!r}. Allowed: .pth/.pt/.bin (torch), .safetensors, "
                     ".keras, .weights.h5, or a Hub name such as 'timm/resnet50.a1_in1k'.")


def _read(path):
    return _read_safetensors(path) if path.endswith(".safetensors") else _read_torch(path)


def _timm_config(config_path):
    """timm's config.json beside a checkpoint (architecture, num_classes, pretrained_cfg), or {}."""
    from keras_resnet.utils.io_utils import read_json

    config = read_json(config_path) if config_path else None
    return config if isinstance(config, dict) else {}


def _normalization(kind, config, layout=None):
    """`layout`: a function giving the checkpoint's layout, called only when config.json has none."""
    if kind in ("keras", "weights.h5"):
        return {"mean": None, "std": None,
                "from": "not recorded in Keras files: use the dataset's statistics"}
    cfg = config.get("pretrained_cfg") or {}
    if len(cfg.get("mean") or ()) == 3 and len(cfg.get("std") or ()) == 3:
        return {"mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]],
                "from": "config.json pretrained_cfg"}
    if layout is not None and layout() == ckpt.RESNETV2:
        return {**RESNETV2_NORMALIZATION, "from": "timm ResNetV2's default configuration (Inception statistics)"}
    return {**IMAGENET_NORMALIZATION, "from": "torchvision's ImageNet statistics"}


def normalization_of(source):
    """The per-channel mean and std that a checkpoint expects, in [0, 1] scale.

    timm checkpoints carry them in ``config.json`` (``pretrained_cfg``, read from the Hub repository
    or from beside the file); torchvision's are ImageNet's, (0.485, 0.456, 0.406) and (0.229, 0.224,
    0.225); a timm ResNetV2 file without ``config.json`` gets timm's default for it, (0.5, 0.5, 0.5)
    and (0.5, 0.5, 0.5). The scale is the one `keras_resnet.data.normalize` takes from ``info["mean"]`` and
    ``info["std"]``: it computes ``(x / 255 - mean) / std`` on uint8 images, so
    ``info.update(mean=m["mean"], std=m["std"])`` carries them into training and export. Keras files
    record none (``None``: use the dataset's statistics).

    Returns:
        ``{"mean": [r, g, b], "std": [r, g, b], "from": where they come from}``.
    """
    kind, path, config_path = _resolve(source)
    return _normalization(kind, _timm_config(config_path),
                          lambda: ckpt.file_layout(_shapes(path)))


def _shapes(path):
    """``{tensor name: shape}`` of a checkpoint; a safetensors file is read without its data."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="np") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return {k: v.shape for k, v in _read_torch(path).items()}


_FAMILY = ("stem", "stem_width", "shortcut", "attention", "groups", "width_per_group", "variant")


def architecture_of(source):
    """The `keras_resnet.build` arguments of the network a checkpoint holds.

    timm's ``config.json`` (in a Hub repository, or beside the file) names it in ``architecture``
    (``resnet50d``, or ``resnet50d.ra2_in1k`` with its pretrained tag): a name of `list_models()` is
    taken as it is. Otherwise the architecture is read from the tensors (`read_architecture`): the
    stage list, block, stem, shortcut, attention, groups and width per group. Our ``.keras`` files
    record their `build` arguments.

    Returns:
        A dict of `build` arguments: ``{"depth": "resnet50d"}``, or ``depth``/``blocks``/``block``
        with the stem, shortcut, attention and group options.

    Raises:
        ValueError: for a ``.weights.h5`` file (it records no architecture) or an unsupported
            checkpoint (naming the tensor that shows it).
    """
    kind, path, config_path = _resolve(source)
    if kind == "weights.h5":
        raise ValueError(f"{os.fspath(source)}: a .weights.h5 file does not record its architecture; pass "
                         "the depth or name to build() (or use the model's .keras file).")
    if kind == "keras":
        import keras

        config = models.config_of(keras.saving.load_model(path, compile=False, safe_mode=True))
        return {k: config[k] for k in ("depth", "blocks", "block", "width", *_FAMILY)}
    named = str(_timm_config(config_path).get("architecture") or "").split(".")[0]
    if named in models.ARCHITECTURES:
        return {"depth": named}
    try:
        arch = read_architecture(_shapes(path))
    except ValueError as e:
        raise ValueError(f"{os.fspath(source)}: {e}") from None
    if arch["name"] in models.ARCHITECTURES:
        return {"depth": arch["name"]}
    return {"depth": None, "blocks": arch["blocks"], "block": arch["block"], **{k: arch[k] for k in _FAMILY}}


def load_weights(model, source):
    """Fills a model that `keras_resnet.build` made with the weights of a checkpoint.

    The checkpoint's architecture (layout, block type, blocks per stage, classes) is read from its
    tensors and checked against the model, then every tensor's name and shape; only then is anything
    assigned, so on any error the model keeps its weights. A model with another ``num_classes`` or
    ``include_top=False`` gets the backbone, its classifier keeps its fresh initialisation, and one
    line says so. A pretrained network keeps its ImageNet stem: build with inputs of at least 64 pixels
    a side (e.g. 224) and resize the images up.

    Args:
        model: a model made by `keras_resnet.build` with an input of at least 64 pixels a side, of
            the checkpoint's architecture (``build("resnet50d")``, ``build("resnetv2_50")``;
            ``build(weights=source)`` picks it with `architecture_of`): variant "v1.5" for
            torchvision's layout, "preact" for timm's ResNetV2.
        source: a torchvision/timm ``.pth`` (needs torch), a ``.safetensors`` file (with timm's
            ``config.json`` beside it if present), a folder holding ``model.safetensors``, a Hub name
            (``timm/resnet50.a1_in1k`` or ``hf-hub:timm/resnet50.a1_in1k``, cached by huggingface_hub),
            or our own ``.keras`` / ``.weights.h5`` file.

    Returns:
        A dict: ``kind`` ("pth", "safetensors", "hub", "keras" or "weights.h5"), ``path`` (the local
        file read), ``layout`` ("torchvision", "timm ResNetV2" or "keras"), ``architecture`` (e.g.
        "resnet50", or timm's name from config.json), ``tensors`` (how many were assigned),
        ``head_loaded`` (bool), ``mean``/``std`` (per channel, [0, 1] scale as ``data.normalize``
        takes them; None for Keras files) and ``note`` (the transfer-learning line, or None).

    Raises:
        ValueError: naming the tensor and its shapes in the file and in the model, for a missing,
            unexpected or mis-shaped tensor, an unsupported variant (timm's BiT ResNetV2s, tiered
            stems, attention other than SE ...), another depth, variant, stem, shortcut, attention or
            groups (naming the build() argument or name to use), or a model with the small-input
            stem.
        FileNotFoundError: no such file; a Hub name not cached while offline.
        ImportError: a ``.pth`` file without torch (the message says how to convert it).

    Example:

    >>> model = keras_resnet.build(depth=50, num_classes=10)
    >>> # skipped in the tests, which run offline: a Hub download needs the internet
    >>> info = load_weights(model, "timm/resnet50.a1_in1k")  # doctest: +SKIP
    >>> info["head_loaded"], info["mean"]  # doctest: +SKIP
    (False, [0.485, 0.456, 0.406])
    """
    models.config_of(model)  # a model made by build(), before any file is read
    kind, path, config_path = _resolve(source)
    config = _timm_config(config_path)
    label = os.fspath(source) + (f" (config.json: {config['architecture']})" if config.get("architecture")
                                 else "")
    keras_file = kind in ("keras", "weights.h5")
    if keras_file:
        arch, count, head_loaded, note = _load_keras_file(model, path, label)
    else:
        arch, count, head_loaded, note = assignment.load_state_dict(model, _read(path), label)
    if note:
        print(f"keras_resnet.weights: {note}.", flush=True)
    norm = _normalization(kind, config, lambda: arch["layout"])
    return {"kind": kind, "path": path, "layout": "keras" if keras_file else arch["layout"],
            "architecture": config.get("architecture") or arch["name"], "tensors": count,
            "head_loaded": head_loaded, "mean": norm["mean"], "std": norm["std"], "note": note}
