"""The whole job: load the data, search, write the results, retrain the best model and test it once."""

import contextlib
import dataclasses
import logging
import os
import shutil
import time

import keras

from keras_resnet.utils import checks, io_utils
from keras_resnet import training
from keras_resnet import data as data_lib
from keras_resnet.utils.flags import field
from keras_resnet.models.architectures import VARIANTS
from keras_resnet.training.devices import PRECISIONS, precision_scope
from keras_resnet.tuning import board
from keras_resnet.tuning.budget import Budget
from keras_resnet.tuning.deploy import deploy_best
from keras_resnet.tuning.latency import CALIBRATION_IMAGES, LatencyMeter
from keras_resnet.tuning.oracles import TUNERS
from keras_resnet.tuning.report import leaderboard, pareto_front, plot_pareto, print_summary, write_leaderboard
from keras_resnet.tuning.retrain import Retrain, finish_best
from keras_resnet.tuning.space import ResNetHyperModel, SearchSpace
from keras_resnet.tuning.tuner import CHIEF_TIMEOUT, OBJECTIVE, WORKER_TIMEOUT, make_tuner, role


@dataclasses.dataclass
class SearchData(data_lib.DataSource):
    """The images of a search: what `keras_resnet.data.load` takes, and how many training images."""

    train_size: int = field(None, "search on a seeded sample of N training images, every class in proportion "
                                  "(validation included)", type=int)
    test_size: int = field(None, "test the retrained best model on a seeded sample of N test images", type=int)

    def __post_init__(self):
        checks.check_int("train_size", self.train_size, 1, none_ok=True)
        checks.check_int("test_size", self.test_size, 1, none_ok=True)


@dataclasses.dataclass
class SearchSetup:
    """Where and how a search runs: the tuner, its folder, the models' variant and the run settings."""

    tuner: str = field("hyperband", "the search algorithm", choices=sorted(TUNERS))
    factor: int = field(3, "Hyperband's reduction factor")
    search_name: str = field(None, "the search folder's name (default <tuner>_<dataset>)", type=str)
    directory: str = field("saved_models", "where the search folder goes")
    overwrite: bool = field(False, "start afresh instead of resuming")
    variant: str = field("v1.5", "the build variant of every model", choices=VARIANTS)
    precision: str = field("auto", "as in keras-resnet train", choices=PRECISIONS)
    pipeline: str = field("auto", "tf.data or NumPy input pipeline", choices=training.PIPELINES)
    worker_timeout: float = field(WORKER_TIMEOUT, "distributed search, chief: seconds without word from a "
                                                  "worker before its trial is recorded as failed (lost) and "
                                                  "the worker no longer awaited; also how long the chief "
                                                  "waits when no worker is there", metavar="SECONDS")
    chief_timeout: float = field(CHIEF_TIMEOUT, "distributed search, worker: seconds a request may wait for "
                                                "the chief", metavar="SECONDS")

    def __post_init__(self):
        checks.check_number("worker_timeout", self.worker_timeout, 0, low_open=True)
        checks.check_number("chief_timeout", self.chief_timeout, 0, low_open=True)

    def name(self, dataset):
        return self.search_name or f"{self.tuner}_{os.path.basename(os.path.normpath(str(dataset)))}"


def run_search(space=None, budget=None, recipe=None, *, data=None, retrain=None, setup=None,
               hyperparameters=None, verbose=1):
    """Searches depth and width on a dataset, then retrains the best model and tests it once.

    The search trains on the training split minus a stratified validation split
    (``recipe.val_fraction``) and ranks trials by ``val_accuracy``. Then, in
    ``directory/search_name/``: ``leaderboard.csv`` and ``leaderboard.json`` (every trial: depth,
    width, blocks, parameters, MACs, validation accuracy, epochs, seconds), ``pareto.png``
    (validation accuracy against MACs, Pareto front marked), ``best.keras`` (the best trial's
    model retrained on the training split, validation included, see `Retrain`), ``retrain/`` (the
    run folder of that training) and ``results.json`` with its test accuracy, measured once. Running
    the same call again continues an interrupted search, and an interrupted retraining from its last
    finished epoch. On the TensorFlow backend, ``tensorboard/`` holds every trial's hyperparameters,
    curves and results in TensorBoard's HParams format (`keras_resnet.tuning.board`). In a distributed search, workers only run trials; the chief writes the results.

    Args:
        space: a `SearchSpace`; budget: a `Budget`; recipe: the base `Recipe` of every trial.
        data: a `SearchData` (the dataset and how many of its training images the search uses).
        retrain: a `Retrain` (how long, and on how many images, the best model is retrained).
        setup: a `SearchSetup` (tuner, folder, variant, precision, pipeline, overwrite).
        hyperparameters: a `keras_tuner.HyperParameters` overriding entries of the space.
        verbose: 1 prints a line per trial and a summary, 0 nothing.

    Returns:
        The dict written to ``results.json`` (``{"role": "worker", ...}`` on a worker).

    Raises:
        io_utils.FolderInUseError: another search (not a worker of this one) is writing the folder.
    """
    space, budget, recipe = space or SearchSpace(), budget or Budget(), recipe or training.Recipe()
    data, retrain, setup = data or SearchData(), retrain or Retrain(), setup or SearchSetup()
    if role() == "worker":  # a worker writes into its chief's folder, which the chief holds
        return _run_search(space, budget, recipe, data, retrain, setup, hyperparameters, verbose)
    folder = os.path.join(setup.directory, setup.name(data.dataset))
    with io_utils.folder_lock(folder, "search folder", SEARCH_IN_USE):  # one chief or local search a folder
        if setup.overwrite:
            _clear(folder)
        return _run_search(space, budget, recipe, data, retrain, dataclasses.replace(setup, overwrite=False),
                           hyperparameters, verbose)


SEARCH_IN_USE = ("wait for it to end (the same command then resumes it), choose another --search-name, or "
                 "join it as a worker (KERASTUNER_TUNER_ID)")


def _clear(folder):
    """Starts a search folder afresh: everything in it goes, except the lock this process holds."""
    for name in os.listdir(folder):
        if name != io_utils.LOCK_FILE:
            path = os.path.join(folder, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def _run_search(space, budget, recipe, data, retrain, setup, hyperparameters, verbose):
    if not recipe.val_fraction > 0:
        raise ValueError("The search ranks trials on a validation split: `val_fraction` must be > 0. "
                         f"Received: val_fraction={recipe.val_fraction!r}")
    keras.utils.set_random_seed(recipe.seed)
    (x_train, y_train), (x_test, y_test), info = data_lib.load(data.dataset, data_dir=data.data_dir,
                                                               download=data.download)
    (x_tr, y_tr), (x_val, y_val) = data_lib.split_validation(
        *data_lib.subset(x_train, y_train, data.train_size, data.dataset), recipe.val_fraction, seed=recipe.seed)
    search = training.RunData(x_tr, y_tr, x_val, y_val, info)
    final = training.RunData(*data_lib.subset(x_train, y_train, retrain.retrain_size, data.dataset), x_train[:0],
                             y_train[:0], info, *data_lib.subset(x_test, y_test, data.test_size, data.dataset))
    teacher = None if recipe.teacher is None else training.load_teacher(recipe.teacher, info, info["input_shape"])
    with precision_scope(setup.precision) as policy:
        hypermodel = ResNetHyperModel(space, input_shape=info["input_shape"], num_classes=info["num_classes"],
                                      steps_per_epoch=training.steps_per_epoch(recipe, len(x_tr)),
                                      epochs=budget.max_epochs, recipe=recipe, variant=setup.variant,
                                      teacher=teacher)
        meter = _meter(hypermodel, budget, os.path.join(setup.directory, setup.name(data.dataset)), search)
        tuner = make_tuner(hypermodel, budget, tuner=setup.tuner, search_name=setup.name(data.dataset),
                           directory=setup.directory, factor=setup.factor, hyperparameters=hyperparameters,
                           overwrite=setup.overwrite, seed=recipe.seed, verbose=verbose, meter=meter)
        tuner.worker_timeout, tuner.chief_timeout = setup.worker_timeout, setup.chief_timeout
        seconds = _search(tuner, search, recipe, budget, setup, data.dataset, verbose)
        if role() == "worker":
            return {"role": "worker", "tuner_id": tuner.tuner_id, "search_seconds": seconds}
        config = {
            "dataset": training.recorded_dataset(data.dataset), "tuner": setup.tuner, "space": dataclasses.asdict(space),
            "budget": dataclasses.asdict(budget), "recipe": dataclasses.asdict(recipe),
            "variant": setup.variant, "precision": policy,
            "search_images": {"train": int(len(x_tr)), "val": int(len(x_val))},
        }
        if teacher is not None:  # every trial and the retraining distil from it
            config["teacher"] = teacher.described
        results, rows = _write_results(tuner, config, setup.name(data.dataset), seconds)
        completed = [r for r in rows if r["val_accuracy"] is not None]
        if completed:
            request = retrain.request(completed[0]["trial_id"], len(final.x_train), budget.max_epochs)
            best = finish_best(tuner, completed, tuner.project_dir, retrain, request, final, setup.pipeline,
                               verbose)
            if meter is not None and not os.path.exists((best.get("deployed") or {}).get("file") or ""):
                best["deployed"] = deploy_best(meter, best, tuner.project_dir, final, tuner.log)
            results["best"] = best
            results["files"]["best_model"] = best["model"]
            if "file" in best.get("deployed", {}):
                results["files"]["deployed"] = best["deployed"]["file"]
    io_utils.write_json(os.path.join(tuner.project_dir, "results.json"), results)
    if verbose:
        print_summary(results, rows)
    return results


def _meter(hypermodel, budget, folder, search):
    """The `LatencyMeter` of a budget that measures deployed files (None otherwise): int8 calibration on
    real training images, and the normalisation and class names the deployed file will carry."""
    if not budget.measures_deployment:
        return None
    info = search.info
    calibration = data_lib.calibration_images(search.x_train, info, count=CALIBRATION_IMAGES)
    return LatencyMeter(hypermodel, budget, folder, calibration,
                        {"mean": info["mean"], "std": info["std"], "class_names": info["class_names"]})


def _search(tuner, search, recipe, budget, setup, dataset, verbose):
    """Runs the trials; returns the seconds it took."""
    if verbose:
        print(f"search {setup.name(dataset)} ({setup.tuner}, {role()}): {len(search.x_train)} training and "
              f"{len(search.x_val)} validation images of {dataset}; results in {tuner.project_dir}", flush=True)
    train_ds, val_ds = training.make_datasets(search.x_train, search.y_train, search.x_val, search.y_val,
                                              search.info, recipe, setup.pipeline)
    start = time.perf_counter()
    # Every trial traces a new model, so TensorFlow's warning about retracing is expected: keep it out of
    # the one line per trial.
    with _quiet_logger("tensorflow"):
        tuner.search(train_ds, validation_data=val_ds, epochs=budget.max_epochs, shuffle=False, verbose=0,
                     callbacks=board.callbacks(tuner.project_dir))  # HParams logs: tensorboard --logdir
    return round(time.perf_counter() - start, 1)


@contextlib.contextmanager
def _quiet_logger(name):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _write_results(tuner, config, search_name, seconds):
    """Writes the leaderboard and the Pareto plot; returns the results so far and the rows."""
    folder = tuner.project_dir
    rows = leaderboard(tuner)
    cost = "macs" if tuner.meter is None else "latency_ms"
    csv_path, json_path = write_leaderboard(rows, folder, {"config": config}, cost=cost)
    files = {"leaderboard_csv": csv_path, "leaderboard_json": json_path}
    if tuner.meter is not None:  # accuracy against measured latency; against MACs next to it
        files["pareto_macs_png"] = plot_pareto(rows, os.path.join(folder, "pareto_macs.png"),
                                               title=f"{search_name}: {OBJECTIVE} vs MACs")
    files["pareto_png"] = plot_pareto(rows, os.path.join(folder, "pareto.png"), cost=cost,
                                      title=f"{search_name}: {OBJECTIVE} vs {cost.replace('_', ' ')}")
    results = {
        **config,
        "search_name": search_name,
        "trials": {status: sum(r["status"] == status for r in rows)
                   for status in sorted({r["status"] for r in rows})},
        "skipped_for_size_this_run": len(tuner.skipped),
        "search_seconds_this_run": seconds,
        "pareto_front": pareto_front(rows, cost),
        "pareto_front_macs": pareto_front(rows),
        "latency": None if tuner.meter is None else tuner.meter.describe(),
        "files": files,
        "best": None,
    }
    return results, rows
