"""Search over depth and width with KerasTuner: the HyperModel, the tuners, budgets and results.

KerasTuner's own ``HyperResNet`` searches the bottleneck version only, two stage depths, pooling,
optimizer and learning rate. This search varies what matters for a small ResNet: the depth (standard
depths, the CIFAR family 6n+2, or per-stage block counts) and the width multiplier, optionally the
learning rate and weight decay of the training recipe. Every hyperparameter is named after the
`keras_resnet.build` or `keras_resnet.training.Recipe` argument it sets, so a trial's values feed back
into them (`build_kwargs`, `recipe_kwargs`).

Three things describe a search: a `SearchSpace`, a `Budget` (trials, epochs per trial, a wall-clock
limit, and a size limit in parameters and/or MACs per image) and a `Recipe`. `run_search` does the
whole job: it holds out a validation split of the training images (the objective is ``val_accuracy``;
the test split is used once, at the end), searches with Hyperband, Bayesian optimisation or random
search, writes a leaderboard (CSV and JSON) and a plot of validation accuracy against MACs with the
Pareto front, retrains the best model on train+val and saves it as ``best.keras``.

Everything lives in ``saved_models/<search_name>/``, KerasTuner's project folder: running the same
command again after a crash or ``kill -9`` continues the search without re-running finished trials.
Several machines can share one search through KerasTuner's chief/worker mode (the environment
variables ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``).
"""

import csv
import dataclasses
import itertools
import json
import logging
import math
import os
import shutil
import threading
import time
import warnings

import keras
import keras_tuner
import numpy as np

from keras_resnet import data as data_lib
from keras_resnet import training
from keras_resnet.models import BLOCKS, block_depth, build, resolve_depth, supported_depths_message
from keras_resnet.summary import summarize

OBJECTIVE = "val_accuracy"
ARCHITECTURE_NAMES = ("depth", "blocks", "block", "width")  # arguments of build()
RECIPE_NAMES = ("learning_rate", "weight_decay")  # arguments of Recipe
DEFAULT_CIFAR_N = (1, 5)  # depths 8, 14, 20, 26, 32
MAX_DRAWS = 200  # rounds of random draws before a (size-limited) space counts as exhausted
RETRAIN_CANDIDATES = 5  # architectures timed, best-ranked first, to find one that fits `retrain_min_epochs`
COLUMNS = ("trial_id", "status", "depth", "width", "blocks", "block", "learning_rate", "weight_decay",
           "params", "macs", "val_accuracy", "epochs", "seconds", "from_trial", "note")


# ---------------------------------------------------------------------------------------------------
# The search space


@dataclasses.dataclass
class SearchSpace:
    """What the search varies. One value fixes a hyperparameter (``hp.Fixed``); a range searches it.

    The depth comes from exactly one of ``depths``, ``cifar_n`` or ``blocks`` (``cifar_n=(1, 5)``,
    depths 8 to 32, when none is given).

    Args:
        depths: depths to choose from, e.g. ``(20, 32, 44)`` or ``(18, 34)``; any depth `build` takes.
        cifar_n: ``(n_min, n_max)``: the CIFAR family's depths 6n+2 for n in that range.
        blocks: per-stage block counts to choose from, e.g. ``[(1, 1, 1), (2, 2, 2), (1, 2, 3)]``.
        block: with ``blocks``: ``"basic"`` (default), ``"bottleneck"``, or both to search it.
        width_min, width_max, width_step: the width multiplier's grid (equal ends fix it).
        learning_rate: None (the recipe's), one value (fixed), or ``(min, max)`` on a log scale.
        weight_decay: None (the recipe's), one value (fixed), or ``(min, max)`` on a log scale.
    """

    depths: tuple = None
    cifar_n: tuple = None
    blocks: tuple = None
    block: object = None
    width_min: float = 0.5
    width_max: float = 2.0
    width_step: float = 0.25
    learning_rate: object = None
    weight_decay: object = None

    def __post_init__(self):
        given = [name for name in ("depths", "cifar_n", "blocks") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"Pass one of `depths`, `cifar_n` or `blocks`, not {' and '.join(given)}. "
                             f"Received: {', '.join(f'{n}={getattr(self, n)!r}' for n in given)}")
        if not given:
            self.cifar_n = DEFAULT_CIFAR_N
        if self.depths is not None:
            self.depths = self._check_depths(self.depths)
        if self.cifar_n is not None:
            self.cifar_n = self._check_cifar_n(self.cifar_n)
        if self.blocks is None and self.block is not None:
            raise ValueError(f"`block` goes with `blocks`: a depth decides its own block. "
                             f"Received: block={self.block!r} without blocks")
        if self.blocks is not None:
            self.block = self._check_block(self.block)
            self.blocks = self._check_blocks(self.blocks, self.block)
        for name in ("width_min", "width_max", "width_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"`{name}` must be a number > 0. Received: {name}={value!r}")
        if self.width_min > self.width_max:
            raise ValueError(f"`width_min` must not exceed `width_max`. "
                             f"Received: width_min={self.width_min!r}, width_max={self.width_max!r}")
        self.learning_rate = _check_range("learning_rate", self.learning_rate)
        self.weight_decay = _check_range("weight_decay", self.weight_decay)

    @staticmethod
    def _check_depths(depths):
        if isinstance(depths, int) and not isinstance(depths, bool):
            depths = (depths,)
        if not isinstance(depths, (list, tuple)) or not depths:
            raise ValueError(f"`depths` must be a non-empty list of depths. Received: depths={depths!r}")
        for depth in depths:
            try:
                resolve_depth(depth)
            except ValueError:
                raise ValueError(f"`depths` holds an unsupported depth {depth!r}. "
                                 f"Received: depths={depths!r}. " + supported_depths_message()) from None
        return tuple(dict.fromkeys(depths))

    @staticmethod
    def _check_cifar_n(cifar_n):
        if (not isinstance(cifar_n, (list, tuple)) or len(cifar_n) != 2
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in cifar_n)
                or cifar_n[0] > cifar_n[1]):
            raise ValueError("`cifar_n` must be (n_min, n_max) with 1 <= n_min <= n_max (depths 6n+2). "
                             f"Received: cifar_n={cifar_n!r}")
        return tuple(cifar_n)

    @staticmethod
    def _check_block(block):
        choices = ("basic",) if block is None else (block,) if isinstance(block, str) else block
        if not isinstance(choices, (list, tuple)) or not choices or any(b not in BLOCKS for b in choices):
            raise ValueError(f"`block` must be one of {sorted(BLOCKS)} or a list of them. "
                             f"Received: block={block!r}")
        return tuple(dict.fromkeys(choices))

    @staticmethod
    def _check_blocks(blocks, block_choices):
        if not isinstance(blocks, (list, tuple)) or not blocks:
            raise ValueError(f"`blocks` must be a non-empty list of per-stage block counts, e.g. "
                             f"[(1, 1, 1), (2, 2, 2)]. Received: blocks={blocks!r}")
        if all(isinstance(b, int) for b in blocks):
            blocks = (blocks,)  # a single stage list
        for stages in blocks:
            for block in block_choices:
                try:
                    resolve_depth(blocks=stages, block=block)
                except ValueError as e:
                    raise ValueError(f"`blocks` holds an invalid entry {stages!r}: {e}") from None
        return tuple(dict.fromkeys(tuple(stages) for stages in blocks))

    def declare(self, hp):
        """Registers the space on a `keras_tuner.HyperParameters` and returns this trial's values."""
        values = {}
        if self.blocks is not None:
            values["blocks"] = _choice(hp, "blocks", [_blocks_text(b) for b in self.blocks])
            values["block"] = _choice(hp, "block", list(self.block))
        elif self.depths is not None:
            values["depth"] = _choice(hp, "depth", list(self.depths))
        else:
            lo, hi = (6 * n + 2 for n in self.cifar_n)
            values["depth"] = hp.Fixed("depth", lo) if lo == hi else hp.Int("depth", lo, hi, step=6)
        if self.width_min == self.width_max:
            values["width"] = hp.Fixed("width", self.width_min)
        else:
            values["width"] = hp.Float("width", self.width_min, self.width_max, step=self.width_step)
        for name in RECIPE_NAMES:
            spec = getattr(self, name)
            if isinstance(spec, tuple):
                values[name] = hp.Float(name, spec[0], spec[1], sampling="log")
            elif spec is not None:
                values[name] = hp.Fixed(name, spec)
        return values


def _check_range(name, spec):
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)) and len(spec) == 1:
        spec = spec[0]
    if isinstance(spec, (list, tuple)):
        numbers = all(not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0 for v in spec)
        if len(spec) != 2 or not numbers or spec[0] > spec[1]:
            raise ValueError(f"`{name}` must be one number or (min, max) with 0 < min <= max (searched on a "
                             f"log scale). Received: {name}={spec!r}")
        return (float(spec[0]), float(spec[1])) if spec[0] < spec[1] else float(spec[0])
    if isinstance(spec, bool) or not isinstance(spec, (int, float)) or spec < 0 or (
            name == "learning_rate" and spec == 0):
        raise ValueError(f"`{name}` must be a number {'> 0' if name == 'learning_rate' else '>= 0'} or a "
                         f"(min, max) range. Received: {name}={spec!r}")
    return float(spec)


def _choice(hp, name, values):
    return hp.Fixed(name, values[0]) if len(values) == 1 else hp.Choice(name, values)


def _blocks_text(blocks):
    return ",".join(str(b) for b in blocks)


def build_kwargs(values):
    """The `keras_resnet.build` arguments among a trial's values.

    ``depth``, ``block`` and ``width`` pass through; ``blocks`` is stored as text (KerasTuner values
    are scalars), ``"1,2,3"``, and comes back as the tuple ``(1, 2, 3)``. KerasTuner's own
    ``tuner/...`` entries are left out.
    """
    kwargs = {name: values[name] for name in ("depth", "block", "width") if name in values}
    if "blocks" in values:
        kwargs["blocks"] = tuple(int(b) for b in str(values["blocks"]).split(","))
    return kwargs


def recipe_kwargs(values):
    """The `keras_resnet.training.Recipe` arguments among a trial's values."""
    return {name: values[name] for name in RECIPE_NAMES if name in values}


def describe(values):
    """``depth=20 width=0.75 learning_rate=0.05``: a trial's values, KerasTuner's entries left out."""
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in values.items() if not k.startswith("tuner/"))


# ---------------------------------------------------------------------------------------------------
# The HyperModel


class ResNetHyperModel(keras_tuner.HyperModel):
    """A ResNet of the search space, compiled with the training recipe.

    ``build(hp)`` is `build_architecture` (the model, from `keras_resnet.build`) followed by
    `training.compile_model` with `build_recipe` (the `Recipe` of this trial). A trial trains for
    ``epochs`` epochs, or to Hyperband's ``tuner/epochs``, and its learning-rate schedule spans them; a
    Hyperband trial that continues an earlier one picks the schedule up at ``tuner/initial_epoch``.

    Args:
        space: a `SearchSpace` (default: depths 8 to 32, width 0.5 to 2).
        input_shape: (height, width, channels) of the images.
        num_classes: classes of the classifier.
        steps_per_epoch: training batches per epoch (for the schedule).
        epochs: epochs of a trial when the tuner does not decide them.
        recipe: the `Recipe` whose other settings every trial uses (batch size, momentum, ...).
        variant: the `build` variant of every model.

    Example:

    >>> hypermodel = ResNetHyperModel(SearchSpace(depths=(8, 14), width_min=0.25, width_max=0.5))
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    >>> model.name
    'resnet8_w0.25'
    """

    def __init__(self, space=None, *, input_shape=(28, 28, 1), num_classes=10, steps_per_epoch=100, epochs=10,
                 recipe=None, variant="v1.5"):
        super().__init__(name="resnet")
        for name, value in (("steps_per_epoch", steps_per_epoch), ("epochs", epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        self.space = space or SearchSpace()
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.recipe = recipe or training.Recipe()
        self.variant = variant
        self._sizes = {}
        self._lock = threading.Lock()

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def build_architecture(self, hp):
        """The uncompiled model of this trial's depth and width."""
        self.space.declare(hp)
        return self._model(build_kwargs(hp.values))

    def build_recipe(self, hp, epochs=None):
        """This trial's `Recipe`: the base recipe with its learning rate, weight decay and epochs."""
        self.space.declare(hp)
        epochs = epochs or hp.values.get("tuner/epochs", self.epochs)
        warmup = min(self.recipe.warmup_epochs, epochs / 5)
        return dataclasses.replace(self.recipe, epochs=epochs, warmup_epochs=warmup,
                                   **recipe_kwargs(hp.values))

    def build(self, hp):
        model = self.build_architecture(hp)
        training.compile_model(model, self.build_recipe(hp), self.steps_per_epoch)
        # A Hyperband trial continuing an earlier one starts its schedule where that one stopped.
        model.optimizer.iterations.assign(hp.values.get("tuner/initial_epoch", 0) * self.steps_per_epoch)
        return model

    def measure(self, values):
        """``{"params", "macs"}`` of the model of `values`, from `summarize` (cached per architecture)."""
        kwargs = build_kwargs(values)
        key = tuple(sorted(kwargs.items()))
        with self._lock:
            if key not in self._sizes:
                info = summarize(self._model(kwargs))
                self._sizes[key] = {"params": info["params"], "macs": info["macs"]}
            return self._sizes[key]

    def _model(self, kwargs):
        return build(**kwargs, variant=self.variant, input_shape=self.input_shape,
                     num_classes=self.num_classes)

    def architectures(self, hyperparameters=None):
        """Every architecture choice of the space at its smallest width, as `build_kwargs` values."""
        hp = hyperparameters.copy() if hyperparameters is not None else keras_tuner.HyperParameters()
        self.space.declare(hp)
        options = {p.name: _smallest_options(p) for p in hp.space if p.name in ARCHITECTURE_NAMES}
        for combination in itertools.product(*options.values()):
            yield dict(zip(options, combination))


def _smallest_options(p):
    """The values of a hyperparameter worth measuring for the smallest model: all, or the least width."""
    kinds = keras_tuner.engine.hyperparameters
    if isinstance(p, kinds.Fixed):
        return [p.value]
    if isinstance(p, kinds.Choice):
        return list(p.values)
    if isinstance(p, kinds.Int):
        return list(range(p.min_value, p.max_value + 1, p.step or 1))
    if isinstance(p, kinds.Float):
        return [p.min_value]
    raise ValueError(f"`{p.name}` must be a Fixed, Choice, Int or Float hyperparameter. Received: {p!r}")


# ---------------------------------------------------------------------------------------------------
# Budgets


@dataclasses.dataclass
class Budget:
    """What a search may spend.

    Args:
        max_trials: trials in all (None: Hyperband's full iteration; required by the others).
        max_epochs: epochs per trial (Hyperband's largest, its rungs train fewer).
        time_limit: seconds of wall-clock time, counted from the tuner's creation in each process (a
            resumed search gets it afresh): then no new trial starts and the running one stops at its
            next batch, keeping what it measured so far.
        max_params: the most parameters a model may have; larger candidates are never trained.
        max_macs: the most multiply-accumulates per image; larger candidates are never trained.
    """

    max_trials: int = 20
    max_epochs: int = 10
    time_limit: float = None
    max_params: float = None
    max_macs: float = None

    def __post_init__(self):
        for name in ("max_trials", "max_epochs"):
            value = getattr(self, name)
            if (value is not None or name == "max_epochs") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        for name in ("time_limit", "max_params", "max_macs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value > 0):
                raise ValueError(f"`{name}` must be a number > 0, or None for no limit. "
                                 f"Received: {name}={value!r}")

    def size_problem(self, size):
        """Why a model of ``{"params", "macs"}`` is over the size limit, or None if it is within it."""
        if self.max_params is not None and size["params"] > self.max_params:
            return f"{size['params']:,} parameters > max_params={self.max_params:g}"
        if self.max_macs is not None and size["macs"] > self.max_macs:
            return f"{size['macs']:,} MACs > max_macs={self.max_macs:g}"
        return None


class _Clock:
    """The wall-clock limit, shared by the tuner (stops the running trial) and the oracle (no new one)."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds
        self.announced = False

    def expired(self):
        return self.end is not None and time.monotonic() >= self.end


class _Budgeted:
    """Mixed into a KerasTuner oracle: it proposes only models within the size limit, none once the time
    is up, and writes its state files atomically (a ``kill -9`` never leaves half a JSON file)."""

    candidate_ok = None  # values -> bool, set by `make_tuner`
    clock = None
    log = None

    def populate_space(self, trial_id):
        if self.clock is not None and self.clock.expired():
            if self.log and not self.clock.announced:
                self.log(f"time limit of {self.clock.seconds:g} s reached: no new trials")
            self.clock.announced = True
            return {"status": "STOPPED", "values": None}
        response = super().populate_space(trial_id)
        values = response.get("values")
        if values and self.candidate_ok is not None and not self.candidate_ok(values):
            # A model-based proposal (Bayesian optimisation) over the limit: a random one within it instead.
            replacement = self._random_values()
            if replacement is None:
                return {"status": "STOPPED", "values": None}
            values.update(replacement)
        return response

    def _random_values(self):
        for _ in range(MAX_DRAWS):
            values = super()._random_values()  # None after 20 draws of values already tried
            if values is not None and (self.candidate_ok is None or self.candidate_ok(values)):
                return values
            if values is not None:
                self._tried_so_far.add(self._compute_values_hash(values))  # never drawn again
        return None

    def reload(self):
        super().reload()
        # A process killed between writing a trial's file and the oracle's own state: each trial's file
        # is the truth. A finished trial is not run again; a started one that the oracle missed is.
        for trial_id, trial in self.trials.items():
            if trial.status in ("COMPLETED", "FAILED") and trial_id in self._retry_queue:
                self._retry_queue.remove(trial_id)
                if trial_id not in self.end_order:
                    self.end_order.append(trial_id)
            elif trial.status == "RUNNING" and trial_id not in self._retry_queue:
                self._retry_queue.append(trial_id)

    def save(self):
        _write_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        _write_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state())


class HyperbandOracle(_Budgeted, keras_tuner.oracles.HyperbandOracle):
    """KerasTuner's Hyperband oracle under a size and time budget."""


class BayesianOracle(_Budgeted, keras_tuner.oracles.BayesianOptimizationOracle):
    """KerasTuner's Bayesian-optimisation oracle under a size and time budget."""


class RandomOracle(_Budgeted, keras_tuner.oracles.RandomSearchOracle):
    """KerasTuner's random-search oracle under a size and time budget."""


TUNERS = {"hyperband": HyperbandOracle, "bayesian": BayesianOracle, "random": RandomOracle}


# ---------------------------------------------------------------------------------------------------
# The tuner


class ResNetTuner(keras_tuner.Tuner):
    """A KerasTuner `Tuner` that keeps to a `Budget` and records what each trial cost.

    Before a trial trains, its model is built and measured; one over the size limit fails at once
    (``FailedTrialError``), untrained. During training, a batch-end hook stops the trial when the time
    limit is reached or the loss stops being finite. Each finished trial reports, besides its metrics
    at the best epoch, ``params``, ``macs``, ``epochs`` (trained in all), ``seconds`` and
    ``stopped_by_time_limit``, and prints one line of progress. Hyperband trials train from
    ``tuner/initial_epoch`` to ``tuner/epochs``, continuing from the weights of ``tuner/trial_id``.

    Use `make_tuner` to create one.
    """

    def __init__(self, oracle, hypermodel, *, budget, clock, seed=0, verbose=1, **kwargs):
        self.budget, self.clock, self.seed, self.verbose = budget, clock, seed, verbose
        self._stops = {}  # trial_id -> why training stopped early
        self.skipped = []  # architectures the size limit kept out, in this process
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)

    # --- budgets ---------------------------------------------------------------------------------

    def candidate_ok(self, values):
        """True if the model of `values` is within the size limit; logs the ones that are not."""
        if self.budget.max_params is None and self.budget.max_macs is None:
            return True
        size = self.hypermodel.measure(values)
        problem = self.budget.size_problem(size)
        architecture = {k: values[k] for k in ARCHITECTURE_NAMES if k in values}
        if problem and architecture not in self.skipped:
            self.skipped.append(architecture)
            self._log(f"skipped {describe(architecture)}: {problem}")
        return problem is None

    def _try_build(self, hp):
        model = super()._try_build(hp)
        problem = self.budget.size_problem(summarize(model))
        if problem:
            raise keras_tuner.errors.FailedTrialError(f"over the size limit, not trained: {problem}")
        return model

    def on_batch_end(self, trial, model, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stops[trial.trial_id] = f"the training loss became {float(loss)}; lower the learning rate"
            model.stop_training = True
        elif self.clock.expired():
            self._stops[trial.trial_id] = "stopped by the time limit"
            model.stop_training = True

    # --- trials ----------------------------------------------------------------------------------

    def _build_hypermodel(self, hp):
        model = super()._build_hypermodel(hp)
        if "tuner/trial_id" in hp.values:  # Hyperband: continue from the earlier trial's best epoch
            with warnings.catch_warnings():  # the optimizer starts afresh, on purpose
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
                model.load_weights(self._get_checkpoint_fname(hp.values["tuner/trial_id"]))
        return model

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        if "tuner/epochs" in hp.values:
            kwargs.update(epochs=hp.values["tuner/epochs"], initial_epoch=hp.values["tuner/initial_epoch"])
        keras.utils.set_random_seed(self.seed + int(trial.trial_id))
        self._stops.pop(trial.trial_id, None)
        start = time.perf_counter()
        (history,) = super().run_trial(trial, *args, **kwargs)
        seconds = time.perf_counter() - start
        stop = self._stops.get(trial.trial_id)
        if stop and stop.startswith("the training loss"):
            raise keras_tuner.errors.FailedTrialError(stop)
        if not history.history.get(OBJECTIVE):
            raise keras_tuner.errors.FailedTrialError(f"training ended without a {OBJECTIVE} value")
        best = int(np.argmax(history.history[OBJECTIVE]))
        size = summarize(history.model)
        return {
            **{name: float(values[best]) for name, values in history.history.items()},
            "params": float(size["params"]),
            "macs": float(size["macs"]),
            "epochs": float(history.epoch[-1] + 1),
            "seconds": round(seconds, 2),
            "stopped_by_time_limit": float(bool(stop)),
        }

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.verbose:
            self._log(self._progress_line(trial))

    def _progress_line(self, trial):
        ended = self.oracle.get_trial(trial.trial_id)
        values = ended.hyperparameters.values
        head = f"trial {trial.trial_id} {describe(values)}"
        if "tuner/trial_id" in values:
            head += f" (continues trial {values['tuner/trial_id']})"
        if ended.status != "COMPLETED":
            return f"{head}: {ended.status} ({_last_line(ended.message)})"
        m = {name: ended.metrics.get_last_value(name) for name in ("params", "macs", "epochs", "seconds",
                                                                    "stopped_by_time_limit")}
        best = self.oracle.get_best_trials(1)
        line = (f"{head}: {OBJECTIVE} {ended.score:.4f} after {m['epochs']:.0f} epochs, "
                f"{m['seconds']:.1f} s, {m['params'] / 1e6:.3g}M params, {m['macs'] / 1e6:.3g}M MACs")
        if m["stopped_by_time_limit"]:
            line += ", stopped by the time limit"
        if best and best[0].score is not None:
            line += f" | best {best[0].score:.4f} (trial {best[0].trial_id})"
        return line

    def _log(self, line):
        if self.verbose:
            role = os.environ.get("KERASTUNER_TUNER_ID") if _role() != "local" else None
            print(f"[{role}] {line}" if role else line, flush=True)

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        _write_json(self._get_tuner_fname(), self.get_state())


def _last_line(message):
    lines = (message or "").strip().splitlines()
    return lines[-1] if lines else "no message"


def _role():
    """"local", "chief" or "worker", from KerasTuner's distributed-search environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(v)]
    if missing:
        raise ValueError(f"A distributed search needs KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT and "
                         f"KERASTUNER_TUNER_ID; {', '.join(missing)} not set.")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def make_tuner(hypermodel, budget=None, *, tuner="hyperband", search_name="search", directory="saved_models",
               factor=3, hyperparameters=None, overwrite=False, seed=0, verbose=1):
    """A `ResNetTuner` with the oracle of `tuner`, its project in ``directory/search_name``.

    Checks up front that the smallest model of the space meets the size limit. An existing project of
    the same name is continued (finished trials are not run again) unless ``overwrite``.

    Args:
        hypermodel: a `ResNetHyperModel`.
        budget: a `Budget`.
        tuner: "hyperband" (default), "bayesian" or "random".
        search_name, directory: the project folder is ``directory/search_name``.
        factor: Hyperband's reduction factor (>= 2).
        hyperparameters: a `keras_tuner.HyperParameters` of entries that override the space, e.g.
            ``hp.Fixed("depth", 20)``.
        overwrite: start afresh, deleting the project folder (ignored by distributed workers).
        seed: seed of the oracle and, plus the trial number, of every trial.
        verbose: 1 prints a line per trial, 0 nothing.

    Returns:
        The tuner; call ``tuner.search(train, validation_data=val, epochs=budget.max_epochs)``.
    """
    budget = budget or Budget()
    if tuner not in TUNERS:
        raise ValueError(f"`tuner` must be one of {sorted(TUNERS)}. Received: tuner={tuner!r}")
    if tuner != "hyperband" and budget.max_trials is None:
        raise ValueError(f"`max_trials` must be set for the {tuner} tuner. Received: max_trials=None")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(f"`factor` must be an integer >= 2. Received: factor={factor!r}")
    if not isinstance(search_name, str) or not search_name or os.sep in search_name:
        raise ValueError(f"`search_name` must be a folder name. Received: search_name={search_name!r}")
    if hyperparameters is not None:
        unknown = [p.name for p in hyperparameters.space if p.name not in ARCHITECTURE_NAMES + RECIPE_NAMES]
        if unknown:
            raise ValueError(f"`hyperparameters` may hold {ARCHITECTURE_NAMES + RECIPE_NAMES}. "
                             f"Received: unknown names {unknown}")
    role = _role()
    check_size_limit(hypermodel, budget, hyperparameters)

    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    common = dict(objective=objective, seed=seed + 1,  # KerasTuner takes seed 0 for "no seed"
                  hyperparameters=hyperparameters)
    if tuner == "hyperband":
        oracle = HyperbandOracle(max_epochs=budget.max_epochs, factor=factor, **common)
        oracle.max_trials = budget.max_trials
    else:
        oracle = TUNERS[tuner](max_trials=budget.max_trials, **common)
    clock = _Clock(budget.time_limit)
    result = ResNetTuner(oracle, hypermodel, budget=budget, clock=clock, seed=seed, verbose=verbose,
                         directory=directory, project_name=search_name,
                         overwrite=overwrite and role != "worker")
    oracle.candidate_ok, oracle.clock, oracle.log = result.candidate_ok, clock, result._log
    return result


def check_size_limit(hypermodel, budget, hyperparameters=None):
    """Raises ValueError if no model of the space meets the budget's size limit.

    Measures every architecture choice at the smallest width; returns the smallest one's
    ``{"params", "macs"}`` (None without a limit).
    """
    if budget.max_params is None and budget.max_macs is None:
        return None
    sizes = [(hypermodel.measure(values), values) for values in hypermodel.architectures(hyperparameters)]
    fitting = [size for size, _ in sizes if budget.size_problem(size) is None]
    if fitting:
        return min(fitting, key=lambda s: (s["params"], s["macs"]))
    size, values = min(sizes, key=lambda s: (s[0]["params"], s[0]["macs"]))
    raise ValueError(
        f"No model of the search space meets the size limit (max_params={budget.max_params}, "
        f"max_macs={budget.max_macs}): the smallest, {describe(build_kwargs(values))}, has "
        f"{size['params']:,} parameters and {size['macs']:,} MACs per image. Raise the limit or search "
        "smaller depths or widths.")


# ---------------------------------------------------------------------------------------------------
# Results


def leaderboard(tuner):
    """One row per trial (the columns of `COLUMNS`), best validation accuracy first."""
    rows = []
    for trial in tuner.oracle.trials.values():
        values = trial.hyperparameters.values
        kwargs = build_kwargs(values)
        block, blocks = resolve_depth(kwargs.get("depth"), kwargs.get("blocks"), kwargs.get("block"))
        metric = {name: trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None
                  for name in ("params", "macs", "epochs", "seconds", "stopped_by_time_limit")}
        if metric["params"] is None:
            metric.update(tuner.hypermodel.measure(values))
        note = ""
        if trial.status not in ("COMPLETED", "RUNNING"):
            note = _last_line(trial.message)
        elif metric["stopped_by_time_limit"]:
            note = "stopped by the time limit"
        rows.append({
            "trial_id": trial.trial_id,
            "status": trial.status,
            "depth": block_depth(block, blocks),
            "width": values.get("width"),
            "blocks": _blocks_text(blocks),
            "block": block,
            "learning_rate": values.get("learning_rate"),
            "weight_decay": values.get("weight_decay"),
            "params": _int(metric["params"]),
            "macs": _int(metric["macs"]),
            "val_accuracy": trial.score if trial.status == "COMPLETED" else None,
            "epochs": _int(metric["epochs"]),
            "seconds": metric["seconds"],
            "from_trial": values.get("tuner/trial_id"),
            "note": note,
        })
    rows.sort(key=lambda r: (r["val_accuracy"] is None, -(r["val_accuracy"] or 0.0), r["trial_id"]))
    return rows


def _int(value):
    return None if value is None else int(value)


def pareto_front(rows):
    """The trial ids of completed rows that no other beats on both MACs (fewer) and accuracy (higher)."""
    done = sorted((r for r in rows if r["val_accuracy"] is not None and r["macs"] is not None),
                  key=lambda r: (r["macs"], -r["val_accuracy"]))
    front, best = [], -math.inf
    for row in done:
        if row["val_accuracy"] > best:
            front.append(row["trial_id"])
            best = row["val_accuracy"]
    return front


def write_leaderboard(rows, folder, extra=None):
    """Writes ``leaderboard.csv`` and ``leaderboard.json`` (rows, Pareto front, `extra`) into `folder`."""
    csv_path, json_path = os.path.join(folder, "leaderboard.csv"), os.path.join(folder, "leaderboard.json")
    tmp = f"{csv_path}.partial-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, csv_path)
    _write_json(json_path, {"objective": OBJECTIVE, "pareto_front": pareto_front(rows), **(extra or {}),
                            "trials": rows})
    return csv_path, json_path


def plot_pareto(rows, path, title=""):
    """Validation accuracy against MACs per image for every completed trial, the Pareto front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    done = [r for r in rows if r["val_accuracy"] is not None and r["macs"]]
    front = set(pareto_front(rows))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if done:
        points = ax.scatter([r["macs"] / 1e6 for r in done], [r["val_accuracy"] for r in done],
                            c=[r["depth"] for r in done], s=[20 + 40 * r["width"] for r in done],
                            cmap="viridis", alpha=0.7, label="trial (size: width)")
        fig.colorbar(points, ax=ax, label="depth")
        on_front = sorted((r for r in done if r["trial_id"] in front), key=lambda r: r["macs"])
        ax.step([r["macs"] / 1e6 for r in on_front], [r["val_accuracy"] for r in on_front], "r-",
                where="post", lw=1.2, label="Pareto front")
        ax.scatter([r["macs"] / 1e6 for r in on_front], [r["val_accuracy"] for r in on_front],
                   facecolors="none", edgecolors="r", s=120, lw=1.5)
        for r in on_front:
            ax.annotate(f"d{r['depth']} w{r['width']:g}", (r["macs"] / 1e6, r["val_accuracy"]),
                        textcoords="offset points", xytext=(4, -12), fontsize=8, color="r")
        macs = [r["macs"] for r in done]
        if max(macs) > 4 * min(macs):
            ax.set_xscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
        ax.margins(x=0.15, y=0.1)
        ax.legend(loc="lower right")
    ax.set_xlabel("MACs per image (millions)")
    ax.set_ylabel(OBJECTIVE)
    ax.set_title(title or f"{OBJECTIVE} against MACs")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = f"{path}.partial.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _write_json(path, obj):
    training.write_json_atomic(path, obj, indent=1)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------
# The whole job


def run_search(
    *,
    dataset="fashion_mnist",
    data_dir=None,
    download=False,
    space=None,
    budget=None,
    recipe=None,
    tuner="hyperband",
    search_name=None,
    directory="saved_models",
    factor=3,
    train_size=None,
    retrain_epochs=None,
    retrain_seconds=None,
    retrain_min_epochs=None,
    retrain_size=None,
    hyperparameters=None,
    variant="v1.5",
    precision="auto",
    pipeline="auto",
    overwrite=False,
    verbose=1,
):
    """Searches depth and width on a dataset, then retrains the best model and tests it once.

    The search trains on the training split minus a stratified validation split
    (``recipe.val_fraction``) and ranks trials by ``val_accuracy``. Then, in
    ``directory/search_name/``: ``leaderboard.csv`` and ``leaderboard.json`` (every trial: depth,
    width, blocks, parameters, MACs, validation accuracy, epochs, seconds), ``pareto.png``
    (validation accuracy against MACs, Pareto front marked), ``best.keras`` (the best trial's
    model retrained on the training split, validation included, for ``retrain_epochs`` epochs, or
    with ``retrain_epochs=0`` its own weights restored), ``retrain/`` (its history and curves), and
    ``results.json`` with its test accuracy, measured once. Running the same call again continues an
    interrupted search, and an interrupted retraining from its last finished epoch. In a distributed
    search, workers only run trials; the chief writes the results.

    Args:
        dataset, data_dir, download: what `keras_resnet.data.load` takes.
        space: a `SearchSpace`; budget: a `Budget`; recipe: the base `Recipe` of every trial.
        tuner: "hyperband" (default), "bayesian" or "random".
        search_name: the project folder's name (default ``<tuner>_<dataset>``).
        directory: where project folders go.
        factor: Hyperband's reduction factor.
        train_size: search on the first N training images only (validation included).
        retrain_epochs: epochs of the final training (default ``budget.max_epochs``; 0 restores).
        retrain_seconds: instead of `retrain_epochs`, a time budget for the final training: it gets
            as many whole epochs as fit at the model's speed, measured on this machine just before,
            so that its learning-rate schedule runs to the end.
        retrain_min_epochs: with `retrain_seconds`, retrain the best-ranked trial whose model fits at
            least this many epochs in that time. Trials are ranked on short trainings, where wide models
            lead; one that gets only a few epochs of its final training ends below a smaller model that
            gets its full schedule. The speed of up to `RETRAIN_CANDIDATES` distinct architectures is
            measured, in rank order; if none fits, the one that gets the most epochs is retrained.
            None (default): the best-ranked trial, whatever its speed.
        retrain_size: retrain on the first N training images (default all of them).
        hyperparameters: a `keras_tuner.HyperParameters` overriding entries of the space.
        variant: the `build` variant.
        precision, pipeline: as in `keras_resnet.training.train`.
        overwrite: start the search afresh.
        verbose: 1 prints a line per trial and a summary, 0 nothing.

    Returns:
        The dict written to ``results.json`` (``{"role": "worker", ...}`` on a worker).
    """
    space, budget = space or SearchSpace(), budget or Budget()
    recipe = recipe or training.Recipe()
    search_name = search_name or f"{tuner}_{os.path.basename(os.path.normpath(str(dataset)))}"
    retrain_epochs = budget.max_epochs if retrain_epochs is None else retrain_epochs
    for name, value in (("train_size", train_size), ("retrain_size", retrain_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` must be a positive integer or None. Received: {name}={value!r}")
    if isinstance(retrain_epochs, bool) or not isinstance(retrain_epochs, int) or retrain_epochs < 0:
        raise ValueError(f"`retrain_epochs` must be an integer >= 0 (0 restores the best trial). "
                         f"Received: retrain_epochs={retrain_epochs!r}")
    if retrain_seconds is not None:
        if isinstance(retrain_seconds, bool) or not isinstance(retrain_seconds, (int, float)) \
                or not retrain_seconds > 0:
            raise ValueError(f"`retrain_seconds` must be a number of seconds > 0, or None. "
                             f"Received: retrain_seconds={retrain_seconds!r}")
        if retrain_epochs == 0:
            raise ValueError("`retrain_seconds` budgets a retraining; `retrain_epochs=0` asks for none. "
                             "Pass one of them.")
    if retrain_min_epochs is not None:
        if isinstance(retrain_min_epochs, bool) or not isinstance(retrain_min_epochs, int) \
                or retrain_min_epochs < 1:
            raise ValueError(f"`retrain_min_epochs` must be a positive integer or None. "
                             f"Received: retrain_min_epochs={retrain_min_epochs!r}")
        if retrain_seconds is None:
            raise ValueError("`retrain_min_epochs` chooses the model to retrain within `retrain_seconds`; "
                             "pass `retrain_seconds` too.")
    if not recipe.val_fraction > 0:
        raise ValueError("The search ranks trials on a validation split: `val_fraction` must be > 0. "
                         f"Received: val_fraction={recipe.val_fraction!r}")

    keras.utils.set_random_seed(recipe.seed)
    (x_train, y_train), (x_test, y_test), info = data_lib.load(dataset, data_dir=data_dir, download=download)
    x_search, y_search = x_train[:train_size], y_train[:train_size]
    (x_tr, y_tr), (x_val, y_val) = data_lib.split_validation(x_search, y_search, recipe.val_fraction,
                                                             seed=recipe.seed)
    steps = len(x_tr) // recipe.batch_size
    if steps < 1:
        raise ValueError(f"`batch_size`={recipe.batch_size} is larger than the {len(x_tr)} training images "
                         "left after the validation split.")
    precision = training.set_precision(precision)
    hypermodel = ResNetHyperModel(space, input_shape=info["input_shape"], num_classes=info["num_classes"],
                                  steps_per_epoch=steps, epochs=budget.max_epochs, recipe=recipe,
                                  variant=variant)
    tuner_obj = make_tuner(hypermodel, budget, tuner=tuner, search_name=search_name, directory=directory,
                           factor=factor, hyperparameters=hyperparameters, overwrite=overwrite,
                           seed=recipe.seed, verbose=verbose)
    folder = tuner_obj.project_dir
    role = _role()
    if verbose:
        print(f"search {search_name} ({tuner}, {role}): {len(x_tr)} training and {len(x_val)} validation "
              f"images of {dataset}; results in {folder}", flush=True)
    train_ds, val_ds = training.make_datasets(x_tr, y_tr, x_val, y_val, info, recipe, pipeline)
    start = time.perf_counter()
    # Every trial traces a new model, so TensorFlow's warning about retracing is expected: keep it out of
    # the one line per trial.
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        tuner_obj.search(train_ds, validation_data=val_ds, epochs=budget.max_epochs, shuffle=False, verbose=0)
    finally:
        tf_logger.setLevel(level)
    search_seconds = round(time.perf_counter() - start, 1)
    if role == "worker":
        return {"role": "worker", "tuner_id": tuner_obj.tuner_id, "search_seconds": search_seconds}

    rows = leaderboard(tuner_obj)
    config = {
        "dataset": str(dataset), "tuner": tuner, "space": dataclasses.asdict(space),
        "budget": dataclasses.asdict(budget), "recipe": dataclasses.asdict(recipe), "variant": variant,
        "precision": precision, "search_images": {"train": int(len(x_tr)), "val": int(len(x_val))},
    }
    csv_path, json_path = write_leaderboard(rows, folder, {"config": config})
    plot_path = plot_pareto(rows, os.path.join(folder, "pareto.png"),
                            title=f"{search_name}: {OBJECTIVE} vs MACs")
    completed = [r for r in rows if r["val_accuracy"] is not None]
    results = {
        **config,
        "search_name": search_name,
        "trials": {status: sum(r["status"] == status for r in rows)
                   for status in sorted({r["status"] for r in rows})},
        "skipped_for_size_this_run": len(tuner_obj.skipped),
        "search_seconds_this_run": search_seconds,
        "pareto_front": pareto_front(rows),
        "files": {"leaderboard_csv": csv_path, "leaderboard_json": json_path, "pareto_png": plot_path},
        "best": None,
    }
    if completed:
        results["best"] = _finish_best(
            tuner_obj, hypermodel, completed, folder, retrain_epochs, retrain_seconds, retrain_min_epochs,
            recipe, x_train[:retrain_size], y_train[:retrain_size], x_test, y_test, info, pipeline, verbose)
        results["files"]["best_model"] = results["best"]["model"]
    _write_json(os.path.join(folder, "results.json"), results)
    if verbose:
        print_summary(results, rows)
    return results


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


def _plan_retrain(tuner, hypermodel, rows, seconds, min_epochs, x, y, info, log):
    """Times the best-ranked trials' models and picks the one to retrain within `seconds`.

    Returns the plan: the chosen ``trial_id``, its ``epochs``, its measured step times, and the
    ``candidates`` timed (trial, epochs that fit), best-ranked first.
    """
    candidates, timed = [], {}
    for row in rows:
        hp = tuner.oracle.get_trial(row["trial_id"]).hyperparameters
        architecture = tuple(str(hp.values.get(name)) for name in ARCHITECTURE_NAMES)
        if architecture in timed:  # the same model at another learning rate: as fast, and ranked lower
            continue
        if len(timed) == RETRAIN_CANDIDATES:
            break
        probe = hypermodel.build_architecture(hp)
        recipe = hypermodel.build_recipe(hp, epochs=2)
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


def _finish_best(tuner, hypermodel, rows, folder, retrain_epochs, retrain_seconds, retrain_min_epochs, recipe,
                 x, y, x_test, y_test, info, pipeline, verbose):
    """Retrains (or restores) the best trial's model, saves it atomically and tests it once.

    `rows` are the completed trials, best first. With `retrain_seconds`, the epochs (and, with
    `retrain_min_epochs`, the trial) are planned once from the measured speed of the models on this
    machine (``retrain/plan.json``), so that an interrupted retraining resumes the same plan. The
    retraining resumes from its last finished epoch (``retrain/backup``) and writes
    ``retrain/history.csv`` and ``retrain/curves.png``.
    """
    path = os.path.join(folder, "best.keras")
    request = {"trial_id": rows[0]["trial_id"], "images": int(len(x)),
               **({"seconds": retrain_seconds} if retrain_seconds is not None else {"epochs": retrain_epochs})}
    if retrain_min_epochs is not None:
        request["min_epochs"] = retrain_min_epochs
    previous = (_read_json(os.path.join(folder, "results.json")) or {}).get("best") or {}
    if (previous.get("retrain_request") == request and previous.get("test_accuracy") is not None
            and os.path.exists(path)):
        return previous  # this search already ended, and its best model was retrained and tested
    seconds, plan, best_row = None, None, rows[0]
    if retrain_epochs == 0:
        trial = tuner.oracle.get_trial(best_row["trial_id"])
        model = tuner.load_model(trial)
        trained_on = "the search's training split (restored weights of the best epoch)"
    else:
        run_dir = os.path.join(folder, "retrain")
        plan = _read_json(os.path.join(run_dir, "plan.json"))
        if not plan or plan.get("request") != request:  # a new plan: start it afresh
            shutil.rmtree(run_dir, ignore_errors=True)
            os.makedirs(run_dir)
            plan = {"trial_id": best_row["trial_id"], "epochs": retrain_epochs}
            if retrain_seconds is not None:
                plan = _plan_retrain(tuner, hypermodel, rows, retrain_seconds, retrain_min_epochs, x, y, info,
                                     tuner._log if verbose else None)
            plan = {"request": request, **plan}
            _write_json(os.path.join(run_dir, "plan.json"), plan)
        chosen = plan.get("trial_id", request["trial_id"])
        best_row = next(r for r in rows if r["trial_id"] == chosen)
        trial = tuner.oracle.get_trial(best_row["trial_id"])
        retrain_epochs = plan["epochs"]
        final = hypermodel.build_recipe(trial.hyperparameters, epochs=retrain_epochs)
        steps = len(x) // final.batch_size
        if steps < 1:
            raise ValueError(f"`batch_size`={final.batch_size} is larger than the {len(x)} "
                             "retraining images.")
        keras.utils.set_random_seed(recipe.seed)
        model = hypermodel.build_architecture(trial.hyperparameters)
        training.compile_model(model, final, steps)
        train_ds, _ = training.make_datasets(x, y, x[:0], y[:0], info, final, pipeline)
        if verbose:
            print(f"retraining trial {trial.trial_id} ({describe(trial.hyperparameters.values)}) on {len(x)} "
                  f"images for {retrain_epochs} epochs", flush=True)
        history_csv = os.path.join(run_dir, "history.csv")
        callbacks = [
            keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"), double_checkpoint=True),
            keras.callbacks.CSVLogger(history_csv, append=True),
        ]
        start = time.perf_counter()
        model.fit(train_ds, epochs=retrain_epochs, shuffle=False, callbacks=callbacks,
                  verbose=2 if verbose else 0)
        seconds = round(time.perf_counter() - start, 1)
        training.plot_history(training.read_history(history_csv), os.path.join(run_dir, "curves.png"),
                              title=f"trial {trial.trial_id} retrained")
        trained_on = f"{len(x)} training images (validation split included)"
    training.save_model_atomic(model, path)
    accuracies = training.test_accuracies(model, data_lib.normalize(x_test, info), y_test, info)
    hp = trial.hyperparameters
    return {
        **best_row,
        "rank": rows.index(best_row) + 1,
        "hyperparameters": {k: v for k, v in hp.values.items() if not k.startswith("tuner/")},
        "build_kwargs": build_kwargs(hp.values),
        "recipe_kwargs": recipe_kwargs(hp.values),
        "retrain_request": request,
        "retrain_epochs": retrain_epochs,
        "retrain_plan": plan,
        "retrain_fit_seconds_this_run": seconds,
        "trained_on": trained_on,
        **accuracies,
        "test_images": int(len(y_test)),
        "model": path,
    }


def print_summary(results, rows, top=10):
    """Prints the leaderboard's top rows and the best model's test accuracy."""
    print(format_leaderboard(rows, top))
    best = results.get("best")
    if best:
        rank = best.get("rank", 1)
        print(f"best: trial {best['trial_id']} ({describe(best['hyperparameters'])}), {OBJECTIVE} "
              f"{best['val_accuracy']:.4f}" + (f" (rank {rank}: the best that fits the retraining budget)"
                                                if rank > 1 else "") + f"; retrained on {best['trained_on']}: test accuracy "
              f"{best['test_accuracy']:.4f} on {best['test_images']} images"
              + (f" ({best['test_accuracy_flip_tta']:.4f} with flip test-time augmentation)"
                 if "test_accuracy_flip_tta" in best else "") + f" -> {best['model']}")
    else:
        print("no trial completed: no best model")
    print(f"Pareto front (trials): {', '.join(results['pareto_front']) or '-'}; files in "
          f"{os.path.dirname(results['files']['leaderboard_csv'])}", flush=True)


def format_leaderboard(rows, top=10):
    """The first `top` rows as a fixed-width text table."""
    head = f"{'trial':>6} {'status':>9} {'depth':>5} {'width':>5} {'blocks':>8} {'params':>9} {'MMACs':>8} " \
           f"{'val_acc':>7} {'epochs':>6} {'seconds':>8}  note"
    lines = [head]
    for r in rows[:top]:
        acc = "-" if r["val_accuracy"] is None else f"{r['val_accuracy']:.4f}"
        lines.append(
            f"{r['trial_id']:>6} {r['status']:>9} {r['depth']:>5} {r['width'] or 0:>5g} {r['blocks']:>8} "
            f"{r['params'] or 0:>9,} {(r['macs'] or 0) / 1e6:>8.2f} {acc:>7} {r['epochs'] or 0:>6} "
            f"{r['seconds'] or 0:>8.1f}  {r['note']}")
    return "\n".join(lines)

