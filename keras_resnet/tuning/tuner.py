"""The tuner: a KerasTuner `Tuner` that keeps to a `Budget` and records what each trial cost."""

import math
import os
import threading
import time
import warnings

import grpc
import keras
import keras_tuner
import numpy as np

from keras_resnet import training
from keras_resnet.utils import checks, io_utils
from keras_resnet.models.summary import summarize
from keras_resnet.tuning import kt_compat, board
from keras_resnet.tuning.budget import Budget, Clock
from keras_resnet.tuning.latency import LatencyMeter
from keras_resnet.tuning.oracles import TUNERS, HyperbandOracle
from keras_resnet.tuning.space import ARCHITECTURE_NAMES, RECIPE_NAMES, build_kwargs, describe

OBJECTIVE = "val_accuracy"
WORKER_TIMEOUT = 600.0  # seconds the chief waits for word from a worker before its trial counts as lost
CHIEF_TIMEOUT = 900.0  # seconds a worker's request waits for the chief


class ResNetTuner(kt_compat.TunerHooks, keras_tuner.Tuner):
    """A KerasTuner `Tuner` that keeps to a `Budget` and records what each trial cost.

    Before a trial trains, its model is built and measured (and, under a latency or file-size limit,
    its deployed file, by the `LatencyMeter`); one over a limit fails at once (``FailedTrialError``),
    untrained. During training, a batch-end hook stops the trial when the time
    limit is reached or the loss stops being finite. Each finished trial reports, besides its metrics
    at the best epoch, ``params``, ``macs``, ``epochs`` (trained in all), ``seconds`` and
    ``stopped_by_time_limit``, and prints one line of progress. Hyperband trials train from
    ``tuner/initial_epoch`` to ``tuner/epochs``, continuing from the weights of ``tuner/trial_id``.

    Use `make_tuner` to create one.
    """

    # In a distributed search: the chief records the trial of a worker not heard from for
    # `worker_timeout` seconds as failed (a worker sends word every tenth of it while it trains), and
    # stops when no worker at all has been heard from for that long; a worker's request waits at most
    # `chief_timeout` seconds for the chief. `run_search` sets both from its `SearchSetup`.
    worker_timeout = WORKER_TIMEOUT
    chief_timeout = CHIEF_TIMEOUT

    def __init__(self, oracle, hypermodel, *, budget, clock, meter=None, seed=0, verbose=1, **kwargs):
        self.budget, self.clock, self.meter, self.seed, self.verbose = budget, clock, meter, seed, verbose
        self._stops = {}  # trial_id -> why training stopped early
        self.skipped = []  # architectures the size limit kept out, in this process
        self._running = None  # the id of the trial this process trains now
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)

    # --- distributed search ----------------------------------------------------------------------

    def search(self, *fit_args, **fit_kwargs):
        where = role()
        if where == "chief":  # KerasTuner's chief, with a wait that gives up lost workers
            self.oracle.verbose = fit_kwargs.get("verbose", self.oracle.verbose)
            self.save()
            started = time.monotonic()
            kt_compat.serve(self.oracle, lambda: self.oracle.give_up_lost_workers(self.worker_timeout, started))
            return None
        if where == "local":
            return super().search(*fit_args, **fit_kwargs)
        stop = threading.Event()
        word = threading.Thread(target=self._send_word, args=(stop,), daemon=True)
        word.start()
        try:
            with kt_compat.chief_timeout(self.chief_timeout):
                return super().search(*fit_args, **fit_kwargs)
        except grpc.RpcError as e:
            address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
            raise ConnectionError(
                f"worker {self.tuner_id} lost the search's chief at {address} ({e.code().name}: the chief "
                f"did not answer within --chief-timeout {self.chief_timeout:g} s); start the chief again "
                "with the same command, then this worker") from None
        finally:
            stop.set()

    def _send_word(self, stop):
        """A worker's word to the chief while it trains (a request for its trial), every tenth of
        `worker_timeout`, so that a long epoch does not look like a lost worker."""
        while not stop.wait(max(self.worker_timeout / 10, 0.5)):
            trial_id = self._running
            if trial_id is not None:
                try:
                    self.oracle.get_trial(trial_id)
                except Exception:  # noqa: BLE001 -- the search's own requests report a lost chief
                    pass

    def on_trial_begin(self, trial):
        self._running = trial.trial_id
        super().on_trial_begin(trial)

    # --- budgets ---------------------------------------------------------------------------------

    def candidate_ok(self, values):
        """True if the model of `values` is within the size and deployment limits; logs the ones that are
        not (each architecture once)."""
        problem = self.problem(values)
        architecture = {k: values[k] for k in ARCHITECTURE_NAMES if k in values}
        if problem and architecture not in self.skipped:
            self.skipped.append(architecture)
            self.log(f"skipped {describe(architecture)}: {problem}")
        return problem is None

    def problem(self, values):
        """Why the model of `values` is over the budget's limits, or None."""
        problem = None
        if self.budget.limits_size:
            problem = self.budget.size_problem(self.hypermodel.measure(values))
        if problem is None and self.meter is not None and self.budget.limits_deployment:
            problem = self.budget.deployment_problem(self.meter.measure(values))
        return problem

    def check_model(self, model, hp):
        problem = self.budget.size_problem(summarize(training.student_of(model))) or self.problem(hp.values)
        if problem:
            raise keras_tuner.errors.FailedTrialError(f"over the budget, not trained: {problem}")
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

    def prepare_model(self, model, hp):
        if "tuner/trial_id" in hp.values:  # Hyperband: continue from the earlier trial's best epoch
            with warnings.catch_warnings():  # the optimizer starts afresh, on purpose
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
                model.load_weights(kt_compat.checkpoint_path(self, hp.values["tuner/trial_id"]))
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
        size = summarize(training.student_of(history.model))
        result = {
            **{name: float(values[best]) for name, values in history.history.items()},
            "params": float(size["params"]),
            "macs": float(size["macs"]),
            "epochs": float(history.epoch[-1] + 1),
            "seconds": round(seconds, 2),
            "stopped_by_time_limit": float(bool(stop)),
        }
        board.log_trial(self.project_dir, trial.trial_id, result)  # next to its HParams session
        return result

    def on_trial_end(self, trial):
        self._running = None
        super().on_trial_end(trial)
        if self.verbose:
            self.log(self._progress_line(trial))

    def _progress_line(self, trial):
        ended = self.oracle.get_trial(trial.trial_id)
        values = ended.hyperparameters.values
        head = f"trial {trial.trial_id} {describe(values)}"
        if "tuner/trial_id" in values:
            head += f" (continues trial {values['tuner/trial_id']})"
        if ended.status != "COMPLETED":
            return f"{head}: {ended.status} ({last_line(ended.message)})"
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

    def log(self, line):
        """Prints a line of progress (prefixed with the tuner id in a distributed search)."""
        if self.verbose:
            tuner_id = os.environ.get("KERASTUNER_TUNER_ID") if role() != "local" else None
            print(f"[{tuner_id}] {line}" if tuner_id else line, flush=True)

    def save(self):
        if not kt_compat.is_worker(self):
            self.oracle.save()
        io_utils.write_json(kt_compat.tuner_state_path(self), self.get_state())


def last_line(message):
    lines = (message or "").strip().splitlines()
    return lines[-1] if lines else "no message"


def role():
    """"local", "chief" or "worker", from KerasTuner's distributed-search environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(v)]
    if missing:
        raise ValueError(f"A distributed search needs KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT and "
                         f"KERASTUNER_TUNER_ID; {', '.join(missing)} not set.")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def make_tuner(hypermodel, budget=None, *, tuner="hyperband", search_name="search", directory="saved_models",
               factor=3, hyperparameters=None, overwrite=False, seed=0, verbose=1, meter=None):
    """A `ResNetTuner` with the oracle of `tuner`, its project in ``directory/search_name``.

    Checks up front that the smallest model of the space meets the size limit, and that some
    architecture of the space meets the latency and file-size limits. An existing project of
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
        meter: the `LatencyMeter` of a latency or file-size limit (default: one measuring here, its
            int8 calibration on random images; `run_search` gives it real training images).

    Returns:
        The tuner; call ``tuner.search(train, validation_data=val, epochs=budget.max_epochs)``.
    """
    budget = budget or Budget()
    check_tuner_args(budget, tuner, search_name, factor, hyperparameters)
    where = role()
    check_size_limit(hypermodel, budget, hyperparameters)
    if budget.measures_deployment and meter is None:
        meter = LatencyMeter(hypermodel, budget, os.path.join(directory, search_name))
    if budget.limits_deployment:
        check_deployment_limit(meter, hypermodel, budget, hyperparameters)
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    common = dict(objective=objective, seed=seed + 1,  # KerasTuner takes seed 0 for "no seed"
                  hyperparameters=hyperparameters)
    if tuner == "hyperband":
        oracle = HyperbandOracle(max_epochs=budget.max_epochs, factor=factor, **common)
        oracle.max_trials = budget.max_trials
    else:
        oracle = TUNERS[tuner](max_trials=budget.max_trials, **common)
    clock = Clock(budget.time_limit)
    result = ResNetTuner(oracle, hypermodel, budget=budget, clock=clock, meter=meter, seed=seed, verbose=verbose,
                         directory=directory, project_name=search_name,
                         overwrite=overwrite and where != "worker")
    oracle.candidate_ok, oracle.clock, oracle.log = result.candidate_ok, clock, result.log
    if meter is not None and where != "worker":
        meter.save()  # again: an overwritten project folder lost what the check above measured
    return result


def check_tuner_args(budget, tuner, search_name, factor, hyperparameters):
    """Raises ValueError for a tuner, search name, factor or fixed entries that `make_tuner` refuses."""
    checks.check_choice("tuner", tuner, sorted(TUNERS))
    if tuner != "hyperband" and budget.max_trials is None:
        raise ValueError(f"`max_trials` must be set for the {tuner} tuner. Received: max_trials=None")
    checks.check_int("factor", factor, 2)
    if not isinstance(search_name, str) or not search_name or os.sep in search_name:
        raise ValueError(f"`search_name` must be a folder name. Received: search_name={search_name!r}")
    if hyperparameters is not None:
        unknown = [p.name for p in hyperparameters.space if p.name not in ARCHITECTURE_NAMES + RECIPE_NAMES]
        if unknown:
            raise ValueError(f"`hyperparameters` may hold {ARCHITECTURE_NAMES + RECIPE_NAMES}. "
                             f"Received: unknown names {unknown}")


def check_size_limit(hypermodel, budget, hyperparameters=None):
    """Raises ValueError if no model of the space meets the budget's size limit.

    Measures every architecture choice at the smallest width; returns the smallest one's
    ``{"params", "macs"}`` (None without a limit).
    """
    if not budget.limits_size:
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


def check_deployment_limit(meter, hypermodel, budget, hyperparameters=None):
    """Raises ValueError if no architecture of the space (each at its smallest width) meets the latency
    and file-size limits, naming the fastest one and its figures; returns the measurements."""
    measured = [(meter.measure(values), values) for values in hypermodel.architectures(hyperparameters)]
    if any(budget.deployment_problem(m) is None for m, _ in measured):
        return measured
    fastest, values = min(measured, key=lambda mv: (mv[0]["latency_ms"], mv[0]["file_kb"]))
    smallest, small_values = min(measured, key=lambda mv: mv[0]["file_kb"])
    raise ValueError(
        f"No architecture of the search space meets the budget (max_latency_ms={budget.max_latency_ms}, "
        f"max_file_kb={budget.max_file_kb}; {budget.latency_mode}, {budget.latency_threads} thread(s), "
        f"{meter.measurer}): the fastest, {describe(build_kwargs(values))}, takes {fastest['latency_ms']:.3g} "
        f"ms per image ({fastest['file_kb']:.1f} KiB); the smallest file, {describe(build_kwargs(small_values))}"
        f", is {smallest['file_kb']:.1f} KiB. Raise the limit or search smaller depths or widths.")
