"""The search's last step: the best trial's model retrained on train+val through the one run path
(`keras_resnet.training.fit_run`), saved as ``best.keras`` and tested once."""

import dataclasses
import os
import shutil
import time

import keras
import numpy as np

from keras_resnet.utils import checks, io_utils
from keras_resnet import training
from keras_resnet import data as data_lib
from keras_resnet.training.callbacks import readable_keras_file
from keras_resnet.utils.flags import field
from keras_resnet.models.resnet import config_of
from keras_resnet.tuning.space import ARCHITECTURE_NAMES, build_kwargs, describe, recipe_kwargs

RETRAIN_CANDIDATES = 5  # architectures timed, best-ranked first, to find one that fits `retrain_min_epochs`


@dataclasses.dataclass
class Retrain:
    """How the best model is retrained on the training split, validation included.

    Args:
        retrain_epochs: epochs of the final training (None: the budget's ``max_epochs``; 0 restores the
            best trial's own weights instead).
        retrain_seconds: instead of epochs, a time budget: as many whole epochs as fit at the model's
            speed, measured on this machine just before, so that its learning-rate schedule runs to
            the end.
        retrain_min_epochs: with `retrain_seconds`, retrain the best-ranked trial whose model fits at
            least this many epochs in that time. Trials are ranked on short trainings, where wide models
            lead; one that gets only a few epochs of its final training ends below a smaller model that
            gets its full schedule. The speed of up to `RETRAIN_CANDIDATES` distinct architectures is
            measured, in rank order; if none fits, the one that gets the most epochs is retrained.
            None: the best-ranked trial, whatever its speed.
        retrain_size: retrain on a seeded sample of N training images, every class in proportion (None:
            all of them).
    """

    retrain_epochs: int = field(None, "epochs to retrain the best model on train+val (default --max-epochs; "
                                      "0 restores it)", type=int)
    retrain_seconds: float = field(None, "instead of --retrain-epochs: retrain for as many epochs as fit in "
                                         "this many seconds", type=float)
    retrain_min_epochs: int = field(None, "with --retrain-seconds: retrain the best-ranked trial that fits "
                                          "this many epochs", type=int)
    retrain_size: int = field(None, "retrain on a seeded sample of N training images", type=int)

    def __post_init__(self):
        checks.check_int("retrain_size", self.retrain_size, 1, none_ok=True)
        if self.retrain_epochs is not None and not (checks.is_int(self.retrain_epochs) and self.retrain_epochs >= 0):
            raise ValueError(f"`retrain_epochs` must be an integer >= 0 (0 restores the best trial). "
                             f"Received: retrain_epochs={self.retrain_epochs!r}")
        if self.retrain_seconds is not None:
            if not (checks.is_number(self.retrain_seconds) and self.retrain_seconds > 0):
                raise ValueError(f"`retrain_seconds` must be a number of seconds > 0, or None. "
                                 f"Received: retrain_seconds={self.retrain_seconds!r}")
            if self.retrain_epochs == 0:
                raise ValueError("`retrain_seconds` budgets a retraining; `retrain_epochs=0` asks for none. "
                                 "Pass one of them.")
        if self.retrain_min_epochs is not None:
            checks.check_int("retrain_min_epochs", self.retrain_min_epochs, 1, none_ok=True)
            if self.retrain_seconds is None:
                raise ValueError("`retrain_min_epochs` chooses the model to retrain within `retrain_seconds`; "
                                 "pass `retrain_seconds` too.")

    def request(self, trial_id, images, default_epochs):
        """What this retraining asks for: a changed request starts the retraining afresh."""
        if self.retrain_seconds is not None:
            request = {"trial_id": trial_id, "images": int(images), "seconds": self.retrain_seconds}
        else:
            epochs = default_epochs if self.retrain_epochs is None else self.retrain_epochs
            request = {"trial_id": trial_id, "images": int(images), "epochs": epochs}
        if self.retrain_min_epochs is not None:
            request["min_epochs"] = self.retrain_min_epochs
        return request


def epochs_within(seconds, step_seconds, steps_per_epoch, startup_seconds=0.0, margin=0.02):
    """Whole epochs (at least one) that fit in `seconds`: steps of `step_seconds` each, `margin` spare."""
    per_epoch = step_seconds * steps_per_epoch * (1 + margin)
    return max(1, int((seconds - startup_seconds) / per_epoch))


def measure_step(model, x, y, steps=10, warmup=3):
    """``(median seconds of a training step, seconds of the first one)`` of a compiled model on (x, y).

    The first step includes tracing, as the first step of `fit` does. The weights change: measure on a
    copy of the model that will be trained.
    """
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), first


def plan_retrain(tuner, rows, seconds, min_epochs, x, y, info, log):
    """Times the best-ranked trials' models and picks the one to retrain within `seconds`.

    Returns the plan: the chosen ``trial_id``, its ``epochs``, its measured step times, and the
    ``candidates`` timed (trial, epochs that fit), best-ranked first.
    """
    hypermodel = tuner.hypermodel
    candidates, timed = [], {}
    for row in rows:
        hp = tuner.oracle.get_trial(row["trial_id"]).hyperparameters
        architecture = tuple(str(hp.values.get(name)) for name in ARCHITECTURE_NAMES)
        if architecture in timed:  # the same model at another learning rate: as fast, and ranked lower
            continue
        if len(timed) == RETRAIN_CANDIDATES:
            break
        recipe = hypermodel.build_recipe(hp, epochs=2)
        probe = training.distilled(hypermodel.build_architecture(hp), hypermodel.teacher, recipe)  # its cost too
        training.compile_model(probe, recipe, 100)
        batch = min(recipe.batch_size, len(x))
        step, first = measure_step(probe, data_lib.normalize(x[:batch], info), y[:batch])
        del probe
        epochs = epochs_within(seconds, step, len(x) // recipe.batch_size, startup_seconds=first)
        timed[architecture] = epochs
        candidates.append({"trial_id": row["trial_id"], "epochs": epochs, "measured_step_seconds": round(step, 5),
                           "measured_first_step_seconds": round(first, 2)})
        if log:
            log(f"retraining plan: trial {row['trial_id']} ({describe(hp.values)}) fits {epochs} epochs "
                f"in {seconds:g} s ({step:.3f} s a step)")
        if min_epochs is None or epochs >= min_epochs:
            break
    fits = [c for c in candidates if min_epochs is None or c["epochs"] >= min_epochs]
    chosen = fits[0] if fits else max(candidates, key=lambda c: c["epochs"])
    if log and not fits:
        log(f"none of the {len(candidates)} best-ranked architectures fits {min_epochs} epochs: retraining "
            f"trial {chosen['trial_id']}, which fits the most")
    return {**chosen, "candidates": candidates}


def finish_best(tuner, rows, folder, retrain, request, data, pipeline="auto", verbose=1):
    """Retrains (or restores) the best trial's model, saves it as ``best.keras`` and tests it once.

    `rows` are the completed trials, best first; `data` a `training.RunData` of the retraining images
    (no validation) and the test split. With ``retrain_seconds`` the epochs (and, with
    ``retrain_min_epochs``, the trial) are planned once from the measured speed of the models on this
    machine (``retrain/plan.json``), so that an interrupted retraining resumes the same plan; the
    retraining itself is a `training.fit_run` into ``retrain/``, which resumes from its last
    finished epoch.
    """
    path = os.path.join(folder, "best.keras")
    previous = (io_utils.read_json(os.path.join(folder, "results.json")) or {}).get("best") or {}
    if (previous.get("retrain_request") == request and previous.get("test_accuracy") is not None
            and readable_keras_file(path)):
        return previous  # this search already ended, and its best model was retrained and tested
    if request.get("epochs") == 0:
        trial = tuner.oracle.get_trial(rows[0]["trial_id"])
        model = training.student_of(tuner.load_model(trial))
        x_test = data_lib.normalize(data.x_test, data.info)
        metrics = {**training.test_accuracies(model, x_test, data.y_test, data.info),
                   "test_images": int(len(data.y_test))}
        io_utils.save_model(model, path)
        plan, seconds = None, None
        trained_on = "the search's training split (restored weights of the best epoch)"
    else:
        plan = _plan(tuner, rows, folder, retrain, request, data, verbose)
        trial = tuner.oracle.get_trial(plan["trial_id"])
        model, metrics = _fit(tuner, trial, plan["epochs"], folder, data, pipeline, verbose)
        io_utils.save_model(model, path)
        seconds = metrics["fit_seconds_this_process"]
        trained_on = f"{len(data.x_train)} training images (validation split included)"
    best_row = next(r for r in rows if r["trial_id"] == trial.trial_id)
    hp = trial.hyperparameters
    return {
        **best_row,
        "rank": rows.index(best_row) + 1,
        "hyperparameters": {k: v for k, v in hp.values.items() if not k.startswith("tuner/")},
        "build_kwargs": build_kwargs(hp.values),
        "architecture": io_utils.jsonable(config_of(model)),
        "recipe_kwargs": recipe_kwargs(hp.values),
        "retrain_request": request,
        "retrain_epochs": 0 if plan is None else plan["epochs"],
        "retrain_plan": plan,
        "retrain_fit_seconds_this_run": seconds,
        "trained_on": trained_on,
        **{k: metrics[k] for k in metrics if k.startswith("test_")},
        "model": path,
    }


def _plan(tuner, rows, folder, retrain, request, data, verbose):
    """The retraining plan of `request`, read back from ``retrain/plan.json`` or made (and written)."""
    run_dir = os.path.join(folder, "retrain")
    plan = io_utils.read_json(os.path.join(run_dir, "plan.json"))
    if plan and plan.get("request") == request:
        return plan
    shutil.rmtree(run_dir, ignore_errors=True)  # a new plan starts afresh
    os.makedirs(run_dir)
    plan = {"trial_id": request["trial_id"], "epochs": request.get("epochs")}
    if retrain.retrain_seconds is not None:
        plan = plan_retrain(tuner, rows, retrain.retrain_seconds, retrain.retrain_min_epochs, data.x_train,
                            data.y_train, data.info, tuner.log if verbose else None)
    plan = {"request": request, **plan}
    io_utils.write_json(os.path.join(run_dir, "plan.json"), plan)
    return plan


def _fit(tuner, trial, epochs, folder, data, pipeline, verbose):
    """`training.fit_run` of `trial`'s model for `epochs` epochs into ``retrain/``: (model, metrics)."""
    hypermodel = tuner.hypermodel
    recipe = hypermodel.build_recipe(trial.hyperparameters, epochs=epochs)
    training.steps_per_epoch(recipe, len(data.x_train))
    keras.utils.set_random_seed(hypermodel.recipe.seed)
    model = hypermodel.build_architecture(trial.hyperparameters)
    if verbose:
        print(f"retraining trial {trial.trial_id} ({describe(trial.hyperparameters.values)}) on "
              f"{len(data.x_train)} images for {epochs} epochs", flush=True)
    config = {"search_trial": trial.trial_id, "build": build_kwargs(trial.hyperparameters.values)}
    metrics = training.fit_run(model, recipe, data, os.path.join(folder, "retrain"), pipeline=pipeline,
                               verbose=2 if verbose else 0, config=config)
    return model, metrics
