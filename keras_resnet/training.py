"""The training recipe: compile + fit, callbacks, distribution, mixed precision, resumable runs.

Defaults follow the papers: SGD with Nesterov momentum 0.9, batch 128, peak learning rate 0.1 (He et
al. 2015) reached after a linear warm-up (Goyal et al. 2017), cosine decay to zero (Loshchilov & Hutter
2017), decoupled weight decay 5e-4 (Zagoruyko & Komodakis 2016) on convolution and dense kernels only,
never on BatchNorm or biases.

Every run writes to ``saved_models/<run>/``: ``model.keras`` (final), ``best.keras`` (best validation
accuracy), ``history.csv``, ``run.json`` (config and metrics), ``curves.png`` and TensorBoard logs.
Model files are written to a temporary name and renamed, so a crash never leaves a half-written model.
A run killed at any point and started again with the same command resumes from its last finished
epoch (``keras.callbacks.BackupAndRestore``).

TensorFlow is optional here: with another Keras backend (JAX on a GPU machine) the data come from the
NumPy pipeline and TensorFlow is never imported.
"""

import csv
import dataclasses
import json
import math
import os
import threading
import time
import warnings

import keras
import numpy as np

from keras_resnet import data as data_lib
from keras_resnet.losses import SmoothedSparseCrossentropy
from keras_resnet.models import build
from keras_resnet.summary import summarize

SCHEDULES = ("cosine", "step")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
DISTRIBUTE = ("auto", "none", "mirrored")


@dataclasses.dataclass
class Recipe:
    """Optimisation settings of a run (the model's settings are `build()` arguments)."""

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = None  # None: 2 epochs, or a fifth of a shorter run
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    erase: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be > 0. Received: learning_rate={self.learning_rate!r}")
        if self.weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={self.weight_decay!r}")
        if self.warmup_epochs is None:
            self.warmup_epochs = min(2.0, self.epochs / 5)
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"`warmup_epochs` must be in [0, epochs={self.epochs}). "
                             f"Received: warmup_epochs={self.warmup_epochs!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}. Received: schedule={self.schedule!r}")
        for name in ("label_smoothing", "erase", "val_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")


def learning_rate_schedule(recipe, steps_per_epoch):
    """Linear warm-up to the peak, then cosine decay to zero (or steps of 0.1 at 50% and 75%)."""
    total = recipe.epochs * steps_per_epoch
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    if recipe.schedule == "step":
        bounds = [int(total * 0.5), int(total * 0.75)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            bounds, [recipe.learning_rate * f for f in (1.0, 0.1, 0.01)])
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else recipe.learning_rate,
        decay_steps=max(total - warmup, 1),
        warmup_target=recipe.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def compile_model(model, recipe, steps_per_epoch):
    """Compiles `model` with the recipe's optimizer, schedule and loss (sparse integer labels)."""
    optimizer = keras.optimizers.SGD(
        learning_rate=learning_rate_schedule(recipe, steps_per_epoch),
        momentum=recipe.momentum,
        nesterov=True,
        weight_decay=recipe.weight_decay or None,
    )
    # Decay kernels only: BatchNorm's scale and shift and the biases stay free.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    if recipe.label_smoothing:
        loss = SmoothedSparseCrossentropy(recipe.label_smoothing, model.output_shape[-1])
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def save_model_atomic(model, path):
    """Saves `model` to `path` (.keras) through a temporary file in the same folder, then renames."""
    path = os.fspath(path)
    tmp = f"{path[:-len('.keras')]}.partial-{os.getpid()}.keras"
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class BestModelCheckpoint(keras.callbacks.Callback):
    """Keeps the model with the best `monitor` value, written atomically."""

    def __init__(self, path, monitor="val_accuracy"):
        super().__init__()
        self.path, self.monitor, self.best = path, monitor, -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best = value
            save_model_atomic(self.model, self.path)


class NaNGuard(keras.callbacks.Callback):
    """Stops training the moment the loss is not finite, and says so plainly."""

    def __init__(self):
        super().__init__()
        self.message = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.message = (
                f"the training loss became {float(loss)} at batch {batch}; training stopped. "
                "Lower --learning-rate, raise --warmup-epochs, or use float32 precision."
            )
            self.model.stop_training = True


def set_precision(precision):
    """Sets Keras's global dtype policy and returns the precision it chose.

    "auto": mixed precision on a GPU (bfloat16 on Ampere and newer, float16 before); on a CPU,
    bfloat16 where the TensorFlow backend can run it natively (AVX512-BF16 or AMX), else float32.
    An explicit mixed precision on a CPU that lacks native support warns: it is emulated there and
    trains several times slower than float32 (about 9x for a ResNet-20 at width 1.5 on an AVX2-only
    CPU).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={precision!r}")
    gpus = _gpu_names() if precision != "float32" else []
    if precision == "auto":
        if gpus:
            modern = any(any(t in g for t in ("A100", "H100", "H200", "L4", "L40", "RTX 30", "RTX 40"))
                         for g in gpus)
            precision = "mixed_bfloat16" if modern else "mixed_float16"
        elif keras.backend.backend() == "tensorflow" and cpu_has_native_bfloat16():
            precision = "mixed_bfloat16"
        else:
            precision = "float32"
    elif precision != "float32" and not gpus and not (
            precision == "mixed_bfloat16" and cpu_has_native_bfloat16()):
        warnings.warn(
            f"precision={precision!r} on a CPU without native {precision[6:]} arithmetic is emulated and "
            "trains several times slower than float32; use precision='float32' or 'auto' here.",
            stacklevel=2)
    keras.mixed_precision.set_global_policy(precision)
    return precision


def cpu_has_native_bfloat16(cpuinfo="/proc/cpuinfo"):
    """True when the CPU advertises bfloat16 arithmetic (AVX512-BF16 or AMX-BF16); False if unknown."""
    return bool(set((cpu_info_field("flags", cpuinfo) or "").split()) & {"avx512_bf16", "amx_bf16"})


def cpu_info_field(name, cpuinfo="/proc/cpuinfo"):
    """The first CPU's `name` field of Linux's cpuinfo (e.g. "flags", "model name"); None if unknown."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _gpu_names():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    if backend == "tensorflow":
        import tensorflow as tf

        return [tf.config.experimental.get_device_details(g).get("device_name", "GPU")
                for g in tf.config.list_physical_devices("GPU")]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def distribution_scope(distribute="auto"):
    """A `tf.distribute.MirroredStrategy` scope when several GPUs are visible (TensorFlow backend).

    ``"mirrored"`` forces it over every visible device of the preferred kind (GPUs, else the logical
    CPUs), which is how it is tested on one machine. With JAX, several GPUs use Keras's DataParallel.
    Returns ``(scope, replicas)``.
    """
    import contextlib

    if distribute not in DISTRIBUTE:
        raise ValueError(f"`distribute` must be one of {DISTRIBUTE}. Received: distribute={distribute!r}")
    backend = keras.backend.backend()
    if distribute == "none" or backend not in ("tensorflow", "jax"):
        return contextlib.nullcontext(), 1
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if len(gpus) > 1 or (distribute == "mirrored" and len(jax.devices()) > 1):
            keras.distribution.set_distribution(keras.distribution.DataParallel())
            return contextlib.nullcontext(), len(gpus or jax.devices())
        return contextlib.nullcontext(), 1
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if distribute == "mirrored" or len(gpus) > 1:
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices)
        return strategy.scope(), strategy.num_replicas_in_sync
    return contextlib.nullcontext(), 1


def make_datasets(x_train, y_train, x_val, y_val, info, recipe, pipeline="auto"):
    """The training and validation inputs, with tf.data on TensorFlow and NumPy elsewhere."""
    pipeline = _pipeline(pipeline)
    if pipeline not in ("tf", "numpy"):
        raise ValueError(f"`pipeline` must be 'auto', 'tf' or 'numpy'. Received: pipeline={pipeline!r}")
    make = data_lib.tf_dataset if pipeline == "tf" else data_lib.numpy_dataset
    train = make(x_train, y_train, info, batch_size=recipe.batch_size, training=True,
                 seed=recipe.seed, erase=recipe.erase)
    val = make(x_val, y_val, info, batch_size=recipe.batch_size) if len(x_val) else None
    return train, val


def run_name(model_name, dataset):
    return f"{model_name}_{os.path.basename(os.path.normpath(str(dataset)))}"


def train(
    *,
    dataset="fashion_mnist",
    data_dir=None,
    download=False,
    recipe=None,
    run_dir=None,
    precision="auto",
    distribute="auto",
    pipeline="auto",
    train_size=None,
    verbose=1,
    **build_kwargs,
):
    """Trains a ResNet with the recipe, evaluates it on the test split, and writes the run folder.

    Args:
        dataset, data_dir, download: what `keras_resnet.data.load` takes ("fashion_mnist" by default,
            offline; download=True lets tensorflow-datasets or Keras fetch a missing dataset).
        recipe: a `Recipe` (defaults from the papers).
        run_dir: the run's folder; defaults to ``saved_models/<model>_<dataset>``. Running the same
            command again resumes an interrupted run in that folder.
        precision: "auto" (mixed on GPU, float32 on CPU), "float32", "mixed_float16", "mixed_bfloat16".
        distribute: "auto" (mirrored over several GPUs), "none", or "mirrored" (force it).
        pipeline: "auto", "tf" or "numpy".
        train_size: use only the first N training images (quick experiments and tests).
        **build_kwargs: `keras_resnet.build` arguments (depth, width, variant, ...); the input shape
            and class count come from the dataset.

    Returns:
        The metrics dict also written to ``run.json``.
    """
    recipe = recipe or Recipe()
    keras.utils.set_random_seed(recipe.seed)
    (x_train, y_train), (x_test, y_test), info = data_lib.load(dataset, data_dir=data_dir,
                                                                download=download)
    if train_size is not None:
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    (x_train, y_train), (x_val, y_val) = data_lib.split_validation(
        x_train, y_train, recipe.val_fraction, seed=recipe.seed)
    build_kwargs.setdefault("input_shape", tuple(info["input_shape"]))
    build_kwargs.setdefault("num_classes", info["num_classes"])

    precision = set_precision(precision)
    scope, replicas = distribution_scope(distribute)
    steps = len(x_train) // recipe.batch_size
    if steps < 1:
        raise ValueError(f"`batch_size`={recipe.batch_size} is larger than the {len(x_train)} "
                         "training images left after the validation split.")
    with scope:
        model = build(**build_kwargs)
        compile_model(model, recipe, steps)
    run_dir = os.fspath(run_dir or os.path.join("saved_models", run_name(model.name, dataset)))
    os.makedirs(run_dir, exist_ok=True)
    train_ds, val_ds = make_datasets(x_train, y_train, x_val, y_val, info, recipe, pipeline)

    nan_guard = NaNGuard()
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"), double_checkpoint=True),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True),
        nan_guard,
    ]
    if val_ds is not None:
        callbacks.append(BestModelCheckpoint(os.path.join(run_dir, "best.keras")))
    if keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")))

    config = {
        "dataset": str(dataset), "build": _jsonable(build_kwargs), "recipe": dataclasses.asdict(recipe),
        "precision": precision, "replicas": replicas, "backend": keras.backend.backend(),
        "train_images": int(len(x_train)), "val_images": int(len(x_val)),
        "normalization": {"mean": info["mean"], "std": info["std"]}, "class_names": info["class_names"],
    }
    write_json_atomic(os.path.join(run_dir, "config.json"), config)
    start = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs, callbacks=callbacks, shuffle=False,
              verbose=verbose)
    seconds = time.perf_counter() - start
    if nan_guard.message:
        raise FloatingPointError(nan_guard.message)

    save_model_atomic(model, os.path.join(run_dir, "model.keras"))
    test_ds = (data_lib.tf_dataset if _pipeline(pipeline) == "tf" else data_lib.numpy_dataset)(
        x_test, y_test, info, batch_size=256)
    test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)
    history = read_history(os.path.join(run_dir, "history.csv"))
    metrics = {
        **config,
        "model": summarize(model),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        **{k: v for k, v in test_accuracies(model, data_lib.normalize(x_test, info), y_test, info).items()
           if k != "test_accuracy"},
        "best_val_accuracy": max(history.get("val_accuracy", [float("nan")])),
        "epochs_run": len(history.get("epoch", [])),
        "fit_seconds_this_process": round(seconds, 1),
    }
    write_json_atomic(os.path.join(run_dir, "run.json"), metrics)
    plot_history(history, os.path.join(run_dir, "curves.png"), title=model.name)
    return {**metrics, "run_dir": run_dir}


def _pipeline(pipeline):
    return ("tf" if keras.backend.backend() == "tensorflow" else "numpy") if pipeline == "auto" else pipeline


def _mirror(x):
    """Images (N, H, W, C) flipped left to right."""
    return np.ascontiguousarray(x[:, :, ::-1])


def _accuracy(probs, y):
    return float(np.mean(np.argmax(probs, -1) == y))


def predict_probs(model, x, flip=False, batch_size=256):
    """Class probabilities of normalised images `x` (N, H, W, C); ``flip=True`` averages them with the
    probabilities of the horizontally mirrored images (test-time augmentation; only for data whose
    training used flips, where a mirrored image is as likely as the original)."""
    probs = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype="float64")
    if flip:
        probs = (probs + predict_probs(model, _mirror(x), batch_size=batch_size)) / 2.0
    return probs


def test_accuracies(model, x, y, info, batch_size=256):
    """``{"test_accuracy": plain, "test_accuracy_flip_tta": with mirrored images}`` for normalised `x`;
    the second only where the data's training used flips (``info["flip"]``)."""
    probs = predict_probs(model, x, batch_size=batch_size)
    result = {"test_accuracy": _accuracy(probs, y)}
    if info.get("flip"):
        result["test_accuracy_flip_tta"] = _accuracy(
            probs + predict_probs(model, _mirror(x), batch_size=batch_size), y)
    return result


def evaluate(model_path, dataset="fashion_mnist", data_dir=None, download=False, batch_size=256, tta=False):
    """Test-split accuracy of a saved `.keras` model; ``tta=True`` averages each image's prediction
    with its mirror image's (refused for data whose training does not flip, such as digits)."""
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"No model at {model_path!r}: pass the path of a .keras file.")
    model = keras.saving.load_model(model_path)
    _, (x_test, y_test), info = data_lib.load(dataset, data_dir=data_dir, download=download)
    if tuple(model.input_shape[1:]) != tuple(info["input_shape"]):
        raise ValueError(f"The model takes inputs of shape {model.input_shape[1:]}, but {dataset!r} "
                         f"has images of shape {tuple(info['input_shape'])}.")
    if tta and not info["flip"]:
        raise ValueError(f"`tta`=True averages over mirrored images, but {dataset!r} is not trained with "
                         "flips (mirrored images are not valid samples of it); evaluate it with tta=False.")
    x = data_lib.normalize(x_test, info)
    probs = predict_probs(model, x, flip=tta, batch_size=batch_size)
    return {"test_accuracy": _accuracy(probs, y_test), "test_images": int(len(y_test)),
            "tta": "flip" if tta else None}


def read_history(path):
    """history.csv as columns, one row per epoch (a row written twice around a resume counts once)."""
    rows = {}
    if os.path.exists(path):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows[int(row["epoch"])] = row
    columns = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            # CSVLogger writes "NA" for the validation metrics of a run without validation data.
            columns.setdefault(key, []).append(
                int(value) if key == "epoch" else float("nan") if value in ("NA", "") else float(value))
    return {key: values for key, values in columns.items() if not all(v != v for v in values)}


def plot_history(history, path, title=""):
    """Loss and accuracy curves (train and validation) in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e + 1 for e in history.get("epoch", [])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + metric in history:
                ax.plot(epochs, history[prefix + metric], style, label=(prefix or "train_") + metric)
        ax.set_xlabel("epoch")
        ax.set_title(f"{title} {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path + ".partial.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _jsonable(d):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def write_json_atomic(path, obj, indent=2):
    """Writes JSON through a temporary file unique to this process and thread, then renames."""
    tmp = f"{path}.partial-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
    os.replace(tmp, path)
