"""The one run path: `train` builds and fits a model on a dataset; `fit_run` compiles, fits, resumes
and tests it once into its run folder (the recipe: `keras_resnet.training.recipe`; the data:
`keras_resnet.training.feed`).

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

from keras_resnet import data as data_lib
from keras_resnet.utils import checks, io_utils
from keras_resnet.training import diagnostics, distill
from keras_resnet.training import distributed, process_data
from keras_resnet.training.callbacks import NaNGuard, RunState
from keras_resnet.training.history import plot_history, read_history
from keras_resnet.data.images import CROP_FRACTION
from keras_resnet.models.resnet import build
from keras_resnet.training.devices import distribution_scope, precision_scope
from keras_resnet.training.feed import Feed, load_run_data
from keras_resnet.training.recipe import Recipe, compile_model, phases, steps_per_epoch, train_head_only
from keras_resnet.training.run_folder import RUN_FACTS
from keras_resnet.models.summary import summarize


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
        if not process_data.all_true(refused is None):
            raise refused or io_utils.FolderInUseError(
                f"the run folder {run_dir} is in use by another process (process 0 of this job could not "
                f"take it); {RUN_DIR_IN_USE}")
        return _fit_run(model, recipe, data, run_dir, pipeline, verbose, config, chief, callbacks)


RUN_DIR_IN_USE = "wait for it to end (the same command then resumes there), or choose another run folder"


def _fit_run(model, recipe, data, run_dir, pipeline, verbose, config, chief, callbacks):
    steps = steps_per_epoch(recipe, len(data.x_train))
    feed = Feed(data, recipe, pipeline)
    teacher = None if recipe.teacher is None else distill.load_teacher(recipe.teacher, data.info, model.input_shape)
    config = {**(config or {}), "recipe": dataclasses.asdict(recipe), "backend": keras.backend.backend(),
              "train_images": int(len(data.x_train)), "val_images": int(len(data.x_val)),
              "normalization": {"mean": data.info["mean"], "std": data.info["std"]},
              "class_names": data.info["class_names"], "transforms": data.info.get("transforms"),
              "data_feed": feed.kind}
    if teacher is not None:  # which teacher, and its file's fingerprint: a resume must use the same
        config["teacher"] = teacher.described
    state = RunState(run_dir, monitor="val_accuracy" if feed.val is not None else None, chief=chief,
                     facts=model_facts(config))
    distill.check_same_teacher(run_dir, teacher, resuming=state.peek_epoch() > 0)
    if chief:
        os.makedirs(run_dir, exist_ok=True)
        io_utils.write_json(os.path.join(run_dir, "config.json"), config, indent=2)
    trained = distill.distilled(model, teacher, recipe)  # what fit trains: the student, or it and its teacher
    guard = NaNGuard()
    # The guard first: an epoch whose loss or weights are not finite is never committed. Each process
    # reads its own copy of the weights, and process 0 writes alone.
    callbacks = [*feed.callbacks, process_data.ProcessLocal(guard), process_data.ProcessLocal(state), *callbacks]
    if chief and keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")))
    start, epoch, fitted, restored = time.perf_counter(), state.peek_epoch(), False, False
    for _, last, phase, head_only in phases(recipe):
        if epoch >= last and last < recipe.epochs:  # an earlier phase, finished before
            continue
        train_head_only(model, head_only)
        compile_model(trained, phase, steps)
        if not restored:  # the phase the run starts or resumes in: its state fits this optimizer
            epoch, restored = process_data.check_same("the epoch to resume from", state.restore(trained)), True
        if epoch < last and not guard.message:
            trained.fit(feed.train(epoch), validation_data=feed.val, epochs=last, initial_epoch=epoch,
                        steps_per_epoch=feed.steps, callbacks=callbacks, shuffle=False,
                        verbose=_verbosity(verbose))
            epoch, fitted = state.epoch, True
    if recipe.ema and not fitted:
        # A finished run restored from its state: swap in the averaged weights, as fit does at its end.
        trained.optimizer.finalize_variable_values(trained.trainable_variables)
    seconds = time.perf_counter() - start
    if guard.message:
        raise FloatingPointError(guard.message)
    metrics = {**config, "model": summarize(model), "epochs_run": state.epoch,
               "best_val_accuracy": None if state.best_epoch is None else state.best,
               "fit_seconds_this_process": round(seconds, 1)}
    with process_data.process_local():  # each process predicts by itself; process 0 writes alone
        probs = None
        if data.x_test is not None:
            test_metrics, probs = feed.test(model)
            metrics.update(test_metrics, test_images=len(data.y_test))
        metrics["data"] = data_record(data, feed)
        if chief:
            if probs is not None:  # confusion.png, mistakes.png, per-class figures
                # a stream kept the labels and the worst mistakes' images alone (memory flat in N)
                y, images = (feed.test_labels, feed.mistake_images) if feed.streamed else (data.y_test, data.x_test)
                report = diagnostics.write_pictures(run_dir, probs, y, images, data.info["class_names"],
                                                    title=model.name)
                metrics["pictures"], metrics["per_class"] = report.pop("files"), report
            io_utils.save_model(model, os.path.join(run_dir, "model.keras"), facts=state.facts)
            io_utils.write_json(os.path.join(run_dir, "run.json"), metrics, indent=2)
            plot_history(read_history(state.history_path), os.path.join(run_dir, "curves.png"),
                         title=model.name)
    return {**metrics, "run_dir": run_dir}


def model_facts(config):
    """What a run's ``.keras`` files carry of it (`keras_resnet.utils.io_utils.save_model`): the data
    they were trained on, its normalisation, class names and transforms, the entries of ``config.json``
    that `keras_resnet.training.run_folder.run_defaults` reads, so that a model copied away from its
    run folder is still evaluated and exported as it was trained. None for a run without a dataset."""
    return {key: config.get(key) for key in RUN_FACTS} if config.get("dataset") else None


def data_record(data, feed):
    """What a run's figures were measured on: each split's name (`keras_resnet.data.split_name`) and
    number of examples, and for the test split the fingerprint of the images measured
    (`keras_resnet.data.ExampleDigest`; ``evaluate`` records the same one for the same images)."""
    record = {split: {"split": data_lib.split_name(data.info, split), "examples": int(len(y))}
              for split, y in (("train", data.y_train), ("validation", data.y_val))}
    if data.x_test is not None:
        record["test"] = feed.test_digest.record(data_lib.split_name(data.info, "test"))
    return record


def recorded_dataset(dataset):
    """What a run folder records of `dataset`: a folder's absolute path (so that `evaluate` and
    `export` find it from any working directory), else the dataset's name."""
    path = os.path.expanduser(os.fspath(dataset))
    return os.path.abspath(path) if os.path.isdir(path) else str(dataset)


def recorded_data_dir(data_dir):
    """What a run folder records of `data_dir` (the IDX or tensorflow-datasets folder): its absolute
    path, so that `evaluate` and `export` read the data where the run did, or None."""
    return None if data_dir is None else os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


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
        train_size: use only N training images: a seeded sample, every class in proportion (except
            for a tensorflow-datasets set, whose labels are not read before training), the same N
            the same images every time (quick experiments and tests).
        test_size: test on N test images only, sampled by the same rule.
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
        data, layout = process_data.plan(data, recipe)  # the global batch across processes and devices
        model = build(**build_kwargs)
        run_dir = run_dir or os.path.join("saved_models", run_name(model.name, dataset))
        config = {"dataset": recorded_dataset(dataset), "data_dir": recorded_data_dir(data_dir),
                  "build": io_utils.jsonable(build_kwargs), "precision": policy,
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

