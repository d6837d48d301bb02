"""The training recipe and the one run path: compile, fit, resume, run folder, one test evaluation.

Defaults follow the papers: SGD with Nesterov momentum 0.9, batch 128, peak learning rate 0.1 (He et
al. 2015) reached after a linear warm-up (Goyal et al. 2017), cosine decay to zero (Loshchilov & Hutter
2017), decoupled weight decay 5e-4 (Zagoruyko & Komodakis 2016) on convolution and dense kernels only,
never on BatchNorm or biases.

`fit_run` is the only place that trains a run: `train` calls it, and so does the search's retraining.
It writes into the run folder ``model.keras`` (final), ``best.keras`` (best validation accuracy),
``history.csv``, ``config.json``, ``run.json`` (config and metrics, per-class precision/recall/F1
included), ``curves.png``, ``confusion.png`` and ``mistakes.png`` (see `keras_resnet.training.diagnostics`),
TensorBoard logs and ``state/`` (see `keras_resnet.training.callbacks.RunState`). Every file is written atomically. A run that
stopped for any reason (killed, full disk, power cut) continues from its last finished epoch when the
same command runs again.

TensorFlow is optional here: with another Keras backend (JAX on a GPU machine) the data come from the
NumPy pipeline and TensorFlow is never imported.
"""

import contextlib
import dataclasses
import os
import sys
import time

import keras
import numpy as np

from keras_resnet.utils import checks, io_utils
from keras_resnet.training import diagnostics
from keras_resnet import data as data_lib
from keras_resnet.training import distributed
from keras_resnet.training.callbacks import NaNGuard, RunState
from keras_resnet.utils.flags import field
from keras_resnet.training.history import plot_history, read_history
from keras_resnet.data.images import CROP_FRACTION
from keras_resnet.models.losses import SmoothedSparseCrossentropy
from keras_resnet.models.resnet import build
from keras_resnet.training.devices import distribution_scope, precision_scope
from keras_resnet.models.summary import summarize

SCHEDULES = ("cosine", "step")
PIPELINES = ("auto", "tf", "numpy")
MAX_LEARNING_RATE = 10.0
CACHE = ("auto", "memory", "none")


@dataclasses.dataclass
class Recipe:
    """Optimisation settings of a run (the model's settings are `build()` arguments)."""

    epochs: int = field(30, "epochs of the run")
    batch_size: int = field(128, "images per step (all devices together)")
    learning_rate: float = field(0.1, "peak learning rate")
    momentum: float = field(0.9, "Nesterov momentum")
    weight_decay: float = field(5e-4, "decoupled weight decay of the kernels")
    warmup_epochs: float = field(None, "linear warm-up epochs (default 2, or a fifth of a shorter run)",
                                 type=float)
    schedule: str = field("cosine", "learning-rate schedule after the warm-up", choices=SCHEDULES)
    label_smoothing: float = field(0.0, "label smoothing of the cross-entropy")
    erase: float = field(0.0, "random-erasing probability")
    ema: float = field(0.0, "momentum of an exponential moving average of the weights that replaces "
                            "them at the end (0: off; e.g. 0.999)")
    freeze_epochs: int = field(0, "first epochs that train the classifier alone, the (pretrained) "
                                  "backbone frozen with BatchNorm in inference mode")
    fine_tune_lr_scale: float = field(0.1, "after `freeze_epochs`, the whole network trains at "
                                           "learning_rate times this (ten times lower: the usual rule "
                                           "for pretrained layers)")
    val_fraction: float = field(0.1, "training images held out for validation")
    seed: int = field(0, "seed of the weights, the split, the shuffling and the augmentation")

    def __post_init__(self):
        checks.check_int("epochs", self.epochs, 1)
        checks.check_int("batch_size", self.batch_size, 1)
        # Finite, and within what SGD can use: a learning rate above MAX_LEARNING_RATE or a decoupled
        # decay of 1 or more (each step removes learning_rate * weight_decay of every kernel) only
        # destroys the weights.
        checks.check_number("learning_rate", self.learning_rate, 0, MAX_LEARNING_RATE, low_open=True)
        checks.check_number("momentum", self.momentum, 0, 1, high_open=True)
        checks.check_number("weight_decay", self.weight_decay, 0, 1, high_open=True)
        if self.warmup_epochs is None:
            self.warmup_epochs = min(2.0, self.epochs / 5)
        checks.check_number("warmup_epochs", self.warmup_epochs, 0, self.epochs, high_open=True)
        checks.check_choice("schedule", self.schedule, SCHEDULES)
        for name in ("label_smoothing", "erase", "ema", "val_fraction"):
            checks.check_number(name, getattr(self, name), 0, 1, high_open=True)
        checks.check_int("seed", self.seed, 0)
        checks.check_int("freeze_epochs", self.freeze_epochs, 0, self.epochs - 1)
        checks.check_number("fine_tune_lr_scale", self.fine_tune_lr_scale, 0, 1, low_open=True)


@dataclasses.dataclass
class RunData:
    """The data of a run: images (N, H, W, C) as loaded, or for a streamed folder the files' paths
    (``info["stream"]`` says how to read them), integer labels, and `data.load`'s info."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    info: dict
    x_test: np.ndarray = None
    y_test: np.ndarray = None


def load_run_data(dataset="fashion_mnist", recipe=None, *, data_dir=None, download=False, train_size=None,
                  test_size=None, bad_images="error", image_size=None, transform="auto",
                  crop_fraction=CROP_FRACTION, cache="auto", pipeline="auto"):
    """Loads `dataset` and splits the recipe's validation fraction off its training images.

    An image folder is listed, not decoded, and streamed (`keras_resnet.data.streams`) unless it is small
    enough to hold in memory or the pipeline is NumPy's; then ``x_*`` hold file paths. A
    tensorflow-datasets set is streamed from tfds's files the same way (`keras_resnet.data.tfds_streams`);
    then ``x_*`` hold example indices and ``y_*`` -1 (its labels are read with the images). The
    validation split is drawn from the file list (stratified, seeded) and ``train_size`` takes the
    first N files, so nothing reads the whole dataset before training. ``test_size`` keeps the first N
    test images. Arrays (the IDX sets) are cut to these sizes before `image_size` resizes them, and
    their statistics are those of the training images kept.
    """
    recipe = recipe or Recipe()
    checks.check_int("train_size", train_size, 1, none_ok=True)
    checks.check_int("test_size", test_size, 1, none_ok=True)
    checks.check_choice("cache", cache, CACHE)
    folder = data_lib.folder_of(dataset)
    streamable = pipeline != "numpy" and _has_tensorflow()
    if folder is not None and streamable:
        from keras_resnet.data import folder_streams

        (x_train, y_train), (x_test, y_test), info = folder_streams.open_folder(
            folder, image_size=image_size, seed=0, bad_images=bad_images, transform=transform,
            crop_fraction=crop_fraction, cache=cache)
    elif folder is None and dataset not in data_lib.IDX_SETS and streamable:
        from keras_resnet.data import tfds_streams

        (x_train, y_train), (x_test, y_test), info = tfds_streams.open_tfds(
            dataset, data_dir=data_dir, download=download, image_size=image_size, seed=0, transform=transform,
            crop_fraction=crop_fraction, cache=cache)
    else:
        if folder is None and transform == "photo":
            raise ValueError(f"transform='photo' is the recipe of image folders and tensorflow-datasets "
                             f"streams; {dataset!r} is held as arrays and trains with the small-image "
                             "recipe. Received: transform='photo'")
        cut_first = folder is None and (train_size, test_size) != (None, None)  # resize only what is kept
        (x_train, y_train), (x_test, y_test), info = data_lib.load(
            dataset, data_dir=data_dir, download=download, bad_images=bad_images,
            image_size=None if cut_first else image_size,
            transform=transform if folder is not None else "small", crop_fraction=crop_fraction)
        if cut_first:
            (x_train, y_train), (x_test, y_test), info = data_lib.resized(
                (x_train[:train_size], y_train[:train_size]), (x_test[:test_size], y_test[:test_size]), info,
                image_size)
        info["cache"] = "memory"
    x_train, y_train = x_train[:train_size], y_train[:train_size]
    x_test, y_test = x_test[:test_size], y_test[:test_size]
    (x_train, y_train), (x_val, y_val) = data_lib.split_validation(
        x_train, y_train, recipe.val_fraction, seed=recipe.seed)
    return RunData(x_train, y_train, x_val, y_val, info, x_test, y_test)


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
        use_ema=recipe.ema > 0,
        ema_momentum=recipe.ema or 0.99,
    )
    # Decay kernels only: BatchNorm's scale and shift and the biases stay free.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    if recipe.label_smoothing:
        loss = SmoothedSparseCrossentropy(recipe.label_smoothing, model.output_shape[-1])
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def steps_per_epoch(recipe, images):
    """Whole batches per epoch; a clear error, with a batch size that fits, when there is not one."""
    data_lib.check_batch_size(recipe.batch_size, images)
    return images // recipe.batch_size


def _has_tensorflow():
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def _pipeline(pipeline):
    checks.check_choice("pipeline", pipeline, PIPELINES)
    return ("tf" if keras.backend.backend() == "tensorflow" else "numpy") if pipeline == "auto" else pipeline


def make_datasets(x_train, y_train, x_val, y_val, info, recipe, pipeline="auto"):
    """The training and validation inputs, with tf.data on TensorFlow and NumPy elsewhere."""
    make = data_lib.tf_dataset if _pipeline(pipeline) == "tf" else data_lib.numpy_dataset
    train = make(x_train, y_train, info, batch_size=recipe.batch_size, training=True,
                 seed=recipe.seed, erase=recipe.erase)
    val = make(x_val, y_val, info, batch_size=recipe.batch_size) if len(x_val) else None
    return train, val


def _verbosity(verbose):
    """Keras's progress bar within the epoch on a terminal, one line per epoch otherwise."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return checks.check_choice("verbose", verbose, (0, 1, 2))


def fit_run(model, recipe, data, run_dir, *, pipeline="auto", verbose="auto", config=None, chief=True,
            callbacks=()):
    """Trains `model` with `recipe` on `data` into `run_dir`, resumably; tests it once if `data` has a
    test split. The only training loop of the package.

    Args:
        model: a built, uncompiled model (inside the caller's precision and distribution scopes).
        recipe: a `Recipe`; data: a `RunData` (no validation images: no ``best.keras``).
        run_dir: the run folder; a folder with committed state continues from its last epoch.
        pipeline: "auto", "tf" or "numpy"; verbose: "auto", 0, 1 or 2.
        config: what describes the run, written to ``config.json`` and ``run.json``.
        chief: False in the processes of a multi-process job that train but do not write.
        callbacks: more Keras callbacks, called after the run's own (its state is committed first).

    Returns:
        The metrics written to ``run.json``, with ``run_dir``.

    Raises:
        io_utils.FolderInUseError: another process is writing `run_dir` (it holds the folder's lock).
    """
    run_dir = os.fspath(run_dir)
    # A process of a multi-process job that dies stops the others with one line naming it.
    with distributed.stop_if_a_process_is_lost(), contextlib.ExitStack() as held:
        # One writer per run folder, for the whole run: a second run is refused before it writes. In a
        # multi-process job process 0 holds the lock, and every process stops when it cannot.
        refused = None
        if chief:
            try:
                held.enter_context(io_utils.folder_lock(run_dir, "run folder", RUN_DIR_IN_USE))
            except io_utils.FolderInUseError as e:
                refused = e
        if not distributed.all_true(refused is None):
            raise refused or io_utils.FolderInUseError(
                f"the run folder {run_dir} is in use by another process (process 0 of this job could not "
                f"take it); {RUN_DIR_IN_USE}")
        return _fit_run(model, recipe, data, run_dir, pipeline, verbose, config, chief, callbacks)


RUN_DIR_IN_USE = "wait for it to end (the same command then resumes there), or choose another run folder"


def _fit_run(model, recipe, data, run_dir, pipeline, verbose, config, chief, callbacks):
    steps = steps_per_epoch(recipe, len(data.x_train))
    feed = _Feed(data, recipe, pipeline)
    config = {**(config or {}), "recipe": dataclasses.asdict(recipe), "backend": keras.backend.backend(),
              "train_images": int(len(data.x_train)), "val_images": int(len(data.x_val)),
              "normalization": {"mean": data.info["mean"], "std": data.info["std"]},
              "class_names": data.info["class_names"], "transforms": data.info.get("transforms"),
              "data_feed": feed.kind}
    if chief:
        os.makedirs(run_dir, exist_ok=True)
        io_utils.write_json(os.path.join(run_dir, "config.json"), config, indent=2)
    state = RunState(run_dir, monitor="val_accuracy" if feed.val is not None else None, chief=chief)
    guard = NaNGuard()
    # The guard first: an epoch whose loss or weights are not finite is never committed. Each process
    # reads its own copy of the weights, and process 0 writes alone.
    callbacks = [*feed.callbacks, distributed.ProcessLocal(guard), distributed.ProcessLocal(state), *callbacks]
    if chief and keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")))
    start, epoch, fitted, restored = time.perf_counter(), state.peek_epoch(), False, False
    for _, last, phase, head_only in phases(recipe):
        if epoch >= last and last < recipe.epochs:  # an earlier phase, finished before
            continue
        _train_head_only(model, head_only)
        compile_model(model, phase, steps)
        if not restored:  # the phase the run starts or resumes in: its state fits this optimizer
            epoch, restored = distributed.check_same("the epoch to resume from", state.restore(model)), True
        if epoch < last and not guard.message:
            model.fit(feed.train(epoch), validation_data=feed.val, epochs=last, initial_epoch=epoch,
                      steps_per_epoch=feed.steps, callbacks=callbacks, shuffle=False,
                      verbose=_verbosity(verbose))
            epoch, fitted = state.epoch, True
    if recipe.ema and not fitted:
        # A finished run restored from its state: swap in the averaged weights, as fit does at its end.
        model.optimizer.finalize_variable_values(model.trainable_variables)
    seconds = time.perf_counter() - start
    if guard.message:
        raise FloatingPointError(guard.message)
    metrics = {**config, "model": summarize(model), "epochs_run": state.epoch,
               "best_val_accuracy": None if state.best_epoch is None else state.best,
               "fit_seconds_this_process": round(seconds, 1)}
    with distributed.process_local():  # each process predicts by itself; process 0 writes alone
        probs = None
        if data.x_test is not None:
            test_metrics, probs = feed.test(model)
            metrics.update(test_metrics, test_images=len(data.y_test))
        if chief:
            if probs is not None:  # confusion.png, mistakes.png, per-class figures
                # a stream kept the labels and the worst mistakes' images alone (memory flat in N)
                y, images = (feed.test_labels, feed.mistake_images) if feed.streamed else (data.y_test, data.x_test)
                report = diagnostics.write_pictures(run_dir, probs, y, images, data.info["class_names"],
                                                    title=model.name)
                metrics["pictures"], metrics["per_class"] = report.pop("files"), report
            io_utils.save_model(model, os.path.join(run_dir, "model.keras"))
            io_utils.write_json(os.path.join(run_dir, "run.json"), metrics, indent=2)
            plot_history(read_history(state.history_path), os.path.join(run_dir, "curves.png"),
                         title=model.name)
    return {**metrics, "run_dir": run_dir}


class _Feed:
    """How a run's data reach ``fit``: arrays through `make_datasets` (each process's rows under a
    multi-process job), or a streamed folder through `keras_resnet.data.streams`."""

    def __init__(self, data, recipe, pipeline):
        self.data, self.recipe = data, recipe
        self.streamed = "stream" in data.info
        self.callbacks, self.steps = [], None
        if not self.streamed:
            self.kind = "memory"
            train, val = make_datasets(data.x_train, data.y_train, data.x_val, data.y_val, data.info, recipe,
                                       pipeline)
            self._train, self.val = distributed.process_datasets(train, val)  # each process's rows
            return
        from keras_resnet.data import streams

        self.kind = "stream"
        self.process, self.processes, _ = distributed.process_layout()
        self.bad = streams.BadFiles()
        self.check = streams.BadFileCheck(self.bad, data.info["stream"]["bad_images"],
                                          data.info["stream"]["folder"])
        self.callbacks, self.steps = [self.check], len(data.x_train) // recipe.batch_size
        self.val = self._eval(data.x_val, data.y_val, "train", recipe.batch_size,
                              self.process, self.processes) if len(data.x_val) else None

    def _eval(self, x, y, split, batch, process=0, processes=1):
        """The evaluation stream of a folder's files or a tensorflow-datasets split's examples."""
        from keras_resnet.data import streams

        return streams.eval_stream(x, y, self.data.info, batch, split=split, process=process,
                                   processes=processes, bad=self.bad)

    def train(self, epoch):
        """The training input of a fit that starts at `epoch`."""
        if not self.streamed:
            return self._train
        from keras_resnet.data import streams

        data, recipe = self.data, self.recipe
        return streams.train_stream(data.x_train, data.y_train, data.info, recipe.batch_size,
                                    seed=recipe.seed, start_epoch=epoch, erase=recipe.erase,
                                    process=self.process, processes=self.processes, bad=self.bad)

    def test(self, model):
        """``(the test metrics of `test_accuracies`, the test images' probabilities)``, in this process
        alone."""
        data = self.data
        if not self.streamed:
            x = data_lib.normalize(data.x_test, data.info)
            probs = predict_probs(model, x)
            return test_accuracies(model, x, data.y_test, data.info, probs=probs), probs
        batch = self.recipe.batch_size  # the training batch's activations fit; a larger one may not
        probs, flipped, self.test_labels, self.mistake_images = stream_predictions(
            model, self._eval(data.x_test, data.y_test, "test", batch), data.info, batch,
            mirror=bool(data.info.get("flip")))
        self.check.check()
        return _accuracies(probs, self.test_labels, flipped), probs


def stream_predictions(model, batches, info, batch_size, *, mirror=False, average=False):
    """Predicts a stream of ``(x, y, weight)`` batches (normalised images; weight 0 for a file that
    did not decode) keeping what is small: ``(probs, flipped or None, labels, images)``, the last the
    uint8 images of the worst mistakes alone (`diagnostics.WorstMistakes`), so memory stays flat in
    the number of images. `mirror`: also the mirrored images' probabilities; `average`: return
    the average of the two as ``probs`` (test-time augmentation), ranking the mistakes by it."""
    from keras_resnet.data.pipelines import scale_offset

    scale, offset = scale_offset(info)
    worst, seen, probs, flipped, labels = diagnostics.WorstMistakes(), 0, [], [], []
    for x, y, w in batches:
        kept = w.numpy() > 0
        x, y = x.numpy()[kept], y.numpy()[kept]
        p = predict_probs(model, x, batch_size=batch_size)
        f = predict_probs(model, _mirror(x), batch_size=batch_size) if mirror else None
        p = (p + f) / 2.0 if average else p

        def pixels(rows, x=x):  # the normalisation undone: the evaluation transform's pixels
            return np.clip(np.rint((x[rows] - offset) / scale), 0, 255).astype(np.uint8)

        worst.add(p, y, pixels, first=seen)
        seen += len(y)
        probs.append(p)
        labels.append(y)
        if mirror:
            flipped.append(f)
    if not probs:
        raise data_lib.DatasetError("no test images to evaluate.")
    return (np.concatenate(probs), np.concatenate(flipped) if mirror else None, np.concatenate(labels),
            worst.images)


def phases(recipe):
    """``(first epoch, end epoch, recipe, head only)`` of each phase: with ``freeze_epochs``, the
    classifier alone at the recipe's learning rate, then the whole network at ``fine_tune_lr_scale``
    times it, on a schedule of its own; otherwise one phase."""
    if not recipe.freeze_epochs:
        return [(0, recipe.epochs, recipe, False)]
    frozen, rest = recipe.freeze_epochs, recipe.epochs - recipe.freeze_epochs
    head = dataclasses.replace(recipe, epochs=frozen, warmup_epochs=0.0, freeze_epochs=0)
    whole = dataclasses.replace(recipe, epochs=rest, learning_rate=recipe.learning_rate * recipe.fine_tune_lr_scale,
                                warmup_epochs=min(recipe.warmup_epochs, rest / 5), freeze_epochs=0)
    return [(0, frozen, head, True), (frozen, recipe.epochs, whole, False)]


def _train_head_only(model, head_only):
    """Freezes every layer but the classifier (``logits``), or unfreezes all. A frozen BatchNorm
    layer runs in inference mode."""
    names = [layer.name for layer in model.layers]
    if head_only and "logits" not in names:
        raise ValueError("`freeze_epochs` trains the classifier alone, but this model has none "
                         "(include_top=False); pass freeze_epochs=0.")
    for layer in model.layers:
        layer.trainable = not head_only or layer.name == "logits"


def recorded_dataset(dataset):
    """What a run folder records of `dataset`: a folder's absolute path (so that `evaluate` and
    `export` find it from any working directory), else the dataset's name."""
    path = os.path.expanduser(os.fspath(dataset))
    return os.path.abspath(path) if os.path.isdir(path) else str(dataset)


def run_name(model_name, dataset):
    return f"{model_name}_{os.path.basename(os.path.normpath(str(dataset)))}"


def train(*, dataset="fashion_mnist", data_dir=None, download=False, recipe=None, run_dir=None,
          precision="auto", distribute="auto", pipeline="auto", train_size=None, test_size=None, verbose="auto",
          bad_images="error", weights=None, image_size=None, transform="auto", crop_fraction=CROP_FRACTION,
          cache="auto", **build_kwargs):
    """Trains a ResNet with the recipe, evaluates it on the test split, and writes the run folder.

    Args:
        dataset, data_dir, download: what `keras_resnet.data.load` takes ("fashion_mnist" by default,
            offline; download=True lets tensorflow-datasets or Keras fetch a missing dataset).
        recipe: a `Recipe` (defaults from the papers).
        run_dir: the run's folder; defaults to ``saved_models/<model>_<dataset>``. Running the same
            command again resumes an interrupted run in that folder.
        precision: "auto" (mixed on GPU, bfloat16 on CPUs that run it natively, else float32),
            "float32", "mixed_float16" or "mixed_bfloat16"; set for this call only.
        distribute: "auto" (mirrored over several GPUs), "none", "mirrored" (force it), or
            "data-parallel" (every device of a multi-process JAX job: `keras_resnet.training.distributed`).
        pipeline: "auto", "tf" or "numpy".
        train_size: use only the first N training images (quick experiments and tests).
        test_size: test on the first N test images only (quick experiments and tests).
        bad_images: "error" (a file of an image folder that does not decode stops the run, named) or
            "skip" (such files are left out, with one warning line).
        verbose: "auto" (a progress bar on a terminal, a line per epoch otherwise), 0, 1 or 2.
        weights: a checkpoint to start from (`keras_resnet.weights.pretrained.load_weights` takes it: a
            torchvision or timm file, a Hub name, or our own files); its mean and std then replace the
            dataset's statistics in training, the run folder, export and predict. With another class
            count the classifier starts fresh; see `Recipe.freeze_epochs` for training it first.
        image_size: resize the images to this side (or (height, width)); a pretrained ImageNet
            network needs at least 64 pixels, e.g. 224.
        transform: the transforms of an image folder or a streamed tensorflow-datasets set
            (`keras_resnet.data.images`): "photo" (training:
            random-resized-crop + flip; evaluation: shorter side to size / crop_fraction, centre
            crop), "small" (resize; pad-crop, flip and erasing in training), or "auto" (photo from
            64 pixels up). Arrays (IDX sets) use the small-image recipe.
        crop_fraction: the share of the resized image that the photo recipe's evaluation keeps.
        cache: an image folder or a tensorflow-datasets set is streamed from disk ("none"), or
            decoded once and held in memory ("memory", the small-image recipe only); "auto" holds it
            when its decoded images take at most 1 GiB and an eighth of the memory. One line says
            which.
        **build_kwargs: `keras_resnet.build` arguments (depth, width, variant, ...); the input shape
            and class count come from the dataset.

    Returns:
        The metrics dict also written to ``run.json``, with ``run_dir``.
    """
    recipe = recipe or Recipe()
    keras.utils.set_random_seed(recipe.seed)
    data = load_run_data(dataset, recipe, data_dir=data_dir, download=download, train_size=train_size,
                         test_size=test_size, bad_images=bad_images, image_size=image_size, transform=transform,
                         crop_fraction=crop_fraction, cache=cache, pipeline=pipeline)
    build_kwargs.setdefault("input_shape", tuple(data.info["input_shape"]))
    build_kwargs.setdefault("num_classes", data.info["num_classes"])
    steps_per_epoch(recipe, len(data.x_train))  # fail before building anything
    # The distribution first: a multi-process job must start before anything asks JAX for its devices.
    with distribution_scope(distribute) as replicas, precision_scope(precision) as policy:
        data, layout = distributed.plan(data, recipe)  # the global batch across processes and devices
        model = build(**build_kwargs)
        run_dir = run_dir or os.path.join("saved_models", run_name(model.name, dataset))
        config = {"dataset": recorded_dataset(dataset), "build": io_utils.jsonable(build_kwargs), "precision": policy,
                  "replicas": replicas, **layout}
        if weights is not None:
            config["weights"] = _start_from(model, weights, data.info)
        return fit_run(model, recipe, data, run_dir, pipeline=pipeline, verbose=verbose, config=config,
                       chief=distributed.is_chief())


def _start_from(model, weights, info):
    """Loads `weights` into `model` and puts the checkpoint's mean and std into `info` (one mean for a
    one-channel model: the average of the checkpoint's). Returns what the run folder records."""
    from keras_resnet.weights import pretrained

    loaded = pretrained.load_weights(model, weights)
    channels = len(info["mean"])
    if loaded.get("mean") is not None:
        mean, std = loaded["mean"], loaded["std"]
        if len(mean) != channels and channels == 1:
            mean, std = [float(np.mean(mean))], [float(np.mean(std))]
        info.update(mean=[float(m) for m in mean], std=[float(s) for s in std])
    return {k: loaded.get(k) for k in ("kind", "path", "architecture", "tensors", "head_loaded", "mean", "std")}


def _existing_folder(dataset):
    """The folder `dataset` names, or None (a name, or a path that is not there: the array path
    then says what is wrong)."""
    try:
        return data_lib.folder_of(dataset)
    except (ValueError, TypeError):
        return None


def _stream_folder_for(model, folder, defaults, dataset):
    """`keras_resnet.training.run_folder.load_data_for` for an image folder, listed and not decoded: the test
    split's files, to stream through the run's evaluation transform. Returns ``(dataset, (paths,
    labels), info)``."""
    from keras_resnet.data import folder_streams

    transforms = (defaults or {}).get("transforms") or {}
    _, test, info = folder_streams.open_folder(
        folder, image_size=tuple(model.input_shape[1:3]), transform=transforms.get("recipe") or "small",
        crop_fraction=transforms.get("crop_fraction") or CROP_FRACTION, cache="none")
    if defaults:
        info.update(defaults["normalization"] or {})
        info["class_names"] = defaults["class_names"] or info["class_names"]
    info["transforms"] = transforms or None
    return dataset, test, info


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


def test_accuracies(model, x, y, info, batch_size=256, probs=None):
    """``{"test_accuracy", "test_loss"}`` (plain cross-entropy) for normalised `x`, and
    ``"test_accuracy_flip_tta"`` (mirrored images averaged in) where the training used flips.
    `probs`: the model's probabilities of `x`, when the caller has them already."""
    probs = predict_probs(model, x, batch_size=batch_size) if probs is None else probs
    flipped = predict_probs(model, _mirror(x), batch_size=batch_size) if info.get("flip") else None
    return _accuracies(probs, y, flipped)


def _accuracies(probs, y, flipped=None):
    loss = -np.mean(np.log(np.clip(probs[np.arange(len(y)), np.asarray(y).astype(int)], 1e-12, None)))
    result = {"test_accuracy": _accuracy(probs, y), "test_loss": float(loss)}
    if flipped is not None:
        result["test_accuracy_flip_tta"] = _accuracy(probs + flipped, y)
    return result


def evaluate(model_path, dataset=None, data_dir=None, download=False, batch_size=256, tta=False, output=None,
             test_size=None):
    """Test-split accuracy of a saved `.keras` model, per-class figures and pictures of its mistakes.

    ``tta=True`` averages each image's prediction with its mirror image's (refused for data whose
    training does not flip, such as digits). Without `dataset`, the dataset and normalisation of the
    run folder next to the file (its ``config.json``) are used, or Fashion-MNIST when there is none (a
    line says which). ``test_size`` evaluates the first N test images only, as `train`'s does (a run
    trained with ``test_size=N`` reports the accuracy that ``evaluate(..., test_size=N)`` reproduces);
    only those are decoded or resized.

    Writes into `output` (default: the model's folder) ``confusion.png`` (normalised per true class),
    ``mistakes.png`` (the most confidently wrong test images) and ``evaluation.json`` (what this
    returns; see `keras_resnet.training.diagnostics`).

    Returns:
        ``{"model", "test_accuracy", "test_images", "tta", "per_class": {"classes": [{"class",
        "precision", "recall", "f1", "support"}, ...], "macro_avg", "weighted_avg", "accuracy"},
        "files"}``.
    """
    from keras_resnet.training import run_folder

    checks.check_int("test_size", test_size, 1, none_ok=True)
    model = io_utils.load_model(model_path, "model_path")
    resolved, defaults, note = run_folder.dataset_for(model_path, dataset)
    folder = _existing_folder(resolved)
    if folder is not None and _has_tensorflow():  # streamed: memory flat in the folder's size
        dataset, (x_test, y_test), info = _stream_folder_for(model, folder, defaults, resolved)
        x_test, y_test = x_test[:test_size], y_test[:test_size]
    else:
        dataset, _, (x_test, y_test), info, note = run_folder.load_data_for(
            model, model_path, dataset, data_dir, download, train_count=0, test_count=test_size)
    if note:
        print(note, flush=True)
    if tuple(model.input_shape[1:]) != tuple(info["input_shape"]):
        raise ValueError(f"The model takes inputs of shape {model.input_shape[1:]}, but {dataset!r} "
                         f"has images of shape {tuple(info['input_shape'])}.")
    if tta and not info["flip"]:
        raise ValueError(f"`tta`=True averages over mirrored images, but {dataset!r} is not trained with "
                         "flips (mirrored images are not valid samples of it); evaluate it with tta=False.")
    output = os.fspath(output) if output is not None else os.path.dirname(os.path.abspath(os.fspath(model_path)))
    os.makedirs(output, exist_ok=True)
    if "stream" in info:
        from keras_resnet.data import streams

        bad = streams.BadFiles()
        probs, _, y_test, images = stream_predictions(
            model, streams.eval_stream(x_test, y_test, info, batch_size, bad=bad), info, batch_size,
            mirror=tta, average=tta)
        found = bad.new()
        if found:
            raise data_lib.DatasetError(f"{found[0][0]}: {found[0][1]} ({len(found)} test file(s) do not "
                                        "decode). Delete or replace it.")
    else:
        probs = predict_probs(model, data_lib.normalize(x_test, info), flip=tta, batch_size=batch_size)
        images = x_test
    report = diagnostics.write_pictures(output, probs, y_test, images, info["class_names"], title=model.name)
    files = report.pop("files")
    result = {"model": os.fspath(model_path), "dataset": str(dataset), "test_accuracy": _accuracy(probs, y_test),
              "test_images": int(len(y_test)), "tta": "flip" if tta else None, "per_class": report}
    files["evaluation_json"] = os.path.join(output, "evaluation.json")
    result["files"] = files
    io_utils.write_json(files["evaluation_json"], result, indent=2)
    return result
