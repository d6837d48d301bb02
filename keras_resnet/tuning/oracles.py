"""KerasTuner's oracles under a `Budget`: proposals within the limits, none once time is up, and state
files written atomically (a ``kill -9`` never leaves half a JSON file)."""

import keras_tuner

from keras_resnet import io_utils
from keras_resnet.tuning import _kt_compat

MAX_DRAWS = 200  # rounds of random draws before a (size-limited) space counts as exhausted


class _Budgeted(_kt_compat.OracleHooks):
    """Mixed into a KerasTuner oracle; `make_tuner` sets `candidate_ok`, `clock` and `log`."""

    candidate_ok = None  # values -> bool
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
                _kt_compat.mark_tried(self, values)  # never drawn again
        return None

    def reload(self):
        super().reload()
        # A process killed between writing a trial's file and the oracle's own state: each trial's file
        # is the truth. A finished trial is not run again; a started one that the oracle missed is.
        queue, ended = _kt_compat.retry_queue(self), _kt_compat.end_order(self)
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
