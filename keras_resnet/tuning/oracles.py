"""KerasTuner's oracles under a `Budget`: proposals within the limits, none once time is up, and state
files written atomically (a ``kill -9`` never leaves half a JSON file)."""

import time

import keras_tuner

from keras_resnet.utils import io_utils
from keras_resnet.tuning import kt_compat

MAX_DRAWS = 200  # rounds of random draws before a (size-limited) space counts as exhausted


class _Budgeted(kt_compat.OracleHooks):
    """Mixed into a KerasTuner oracle; `make_tuner` sets `candidate_ok`, `clock` and `log`.

    On a distributed search's chief it also notes when each worker was last heard from (every request
    a worker sends: a new trial, a trial's metrics or end, and the word it sends while it trains), so
    that `give_up_lost_workers` can record the trial of a worker gone silent as failed.
    """

    candidate_ok = None  # values -> bool
    clock = None
    log = None

    # --- workers of a distributed search (chief) ------------------------------------------------------

    def _records(self):
        if not hasattr(self, "_last_word"):
            self._last_word, self._lost, self._any_word = {}, set(), None

    def _heard(self, tuner_id=None, trial_id=None):
        self._records()
        if tuner_id is None:
            tuner_id = next((t for t, trial in self.ongoing_trials.items() if trial.trial_id == trial_id), None)
        now = time.monotonic()
        if tuner_id is not None:
            self._last_word[tuner_id] = now
        self._any_word = now

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        self._heard(tuner_id)
        return super().create_trial(tuner_id)

    @keras_tuner.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        self._heard(trial_id=trial_id)
        return super().update_trial(trial_id, metrics, step=step)

    @keras_tuner.synchronized
    def get_trial(self, trial_id):
        self._heard(trial_id=trial_id)
        return super().get_trial(trial_id)

    @keras_tuner.synchronized
    def end_trial(self, trial):
        self._heard(trial_id=trial.trial_id)
        if trial.trial_id in self._lost:  # a worker given up for lost came back: its result is not counted
            if self.log:
                self.log(f"trial {trial.trial_id} ended after it was recorded as lost; its result is not counted")
            return
        return super().end_trial(trial)

    @keras_tuner.synchronized
    def give_up_lost_workers(self, timeout, started):
        """Records the running trial of every worker not heard from for `timeout` seconds as failed, and
        stops waiting for that worker. Raises TimeoutError when no worker at all has been heard from for
        `timeout` seconds (since `started`, a `time.monotonic()` value) while no trial runs."""
        self._records()
        now = time.monotonic()
        for tuner_id in list(self.tuner_ids):
            silent = now - self._last_word.get(tuner_id, started)
            if silent <= timeout:
                continue
            trial = self.ongoing_trials.get(tuner_id)
            self.tuner_ids.discard(tuner_id)
            if trial is None:
                continue
            trial.status = keras_tuner.engine.trial.TrialStatus.FAILED
            trial.message = (f"lost: worker {tuner_id} sent no word for {silent:.0f} s (killed, or its machine "
                             f"gone; --worker-timeout {timeout:g}); recorded as failed, not counted")
            self._lost.add(trial.trial_id)
            super().end_trial(trial)
            if self.log:
                self.log(f"trial {trial.trial_id} {trial.message}")
        if not self.ongoing_trials and now - max(started, self._any_word or started) > timeout:
            raise TimeoutError(
                f"no worker of the search has been heard from for {timeout:g} s (--worker-timeout): start "
                "workers with the same command, KERASTUNER_TUNER_ID=tuner0, tuner1, ..., and this chief's "
                "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT; the same command resumes the search")

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
            replacement = self.random_values()
            if replacement is None:
                return {"status": "STOPPED", "values": None}
            values.update(replacement)
        return response

    def draw_random_values(self, draw):
        for _ in range(MAX_DRAWS):
            values = draw()  # None after 20 draws of values already tried
            if values is not None and (self.candidate_ok is None or self.candidate_ok(values)):
                return values
            if values is not None:
                kt_compat.mark_tried(self, values)  # never drawn again
        return None

    def reload(self):
        super().reload()
        # A process killed between writing a trial's file and the oracle's own state: each trial's file
        # is the truth. A finished trial is not run again; a started one that the oracle missed is.
        queue, ended = kt_compat.retry_queue(self), kt_compat.end_order(self)
        for trial_id, trial in self.trials.items():
            if trial.status in ("COMPLETED", "FAILED") and trial_id in queue:
                queue.remove(trial_id)
                if trial_id not in ended:
                    ended.append(trial_id)
            elif trial.status == "RUNNING" and trial_id not in queue:
                queue.append(trial_id)

    def write_state(self, path, state):
        io_utils.write_json(path, state)


class HyperbandOracle(_Budgeted, keras_tuner.oracles.HyperbandOracle):
    """KerasTuner's Hyperband oracle under a size and time budget."""


class BayesianOracle(_Budgeted, keras_tuner.oracles.BayesianOptimizationOracle):
    """KerasTuner's Bayesian-optimisation oracle under a size and time budget."""


class RandomOracle(_Budgeted, keras_tuner.oracles.RandomSearchOracle):
    """KerasTuner's random-search oracle under a size and time budget."""


TUNERS = {"hyperband": HyperbandOracle, "bayesian": BayesianOracle, "random": RandomOracle}
