"""Every private KerasTuner name the search touches, in one place, each with the reason.

KerasTuner (1.4) has no public hook for what the search needs: proposals filtered by a budget, atomic
state files, a model refused before it trains, Hyperband's continuation weights. The mixins below
override the private methods that are those hooks and hand over to methods with public names of
our own; the functions read the private attributes. `PRIVATE_NAMES` lists them all, and
``tests/test_tuning_compat.py`` checks each one on the installed KerasTuner, so an upgrade that
removes one fails there, loudly, instead of deep inside a search.
"""

import contextlib
import os
import time

import keras_tuner

# (where, name, why). "Oracle" and "Tuner" are checked on instances, since some are set in __init__.
PRIVATE_NAMES = (
    ("Oracle", "_random_values", "every oracle draws its random candidates here: the budget filters them"),
    ("Oracle", "_tried_so_far", "a candidate over budget is marked as tried, so it is never drawn again"),
    ("Oracle", "_compute_values_hash", "the key of `_tried_so_far`"),
    ("Oracle", "_retry_queue", "a trial killed mid-run is queued again on reload; a finished one is not"),
    ("Oracle", "end_order", "the order of ended trials, repaired on reload with the retry queue"),
    ("Oracle", "_get_oracle_fname", "the oracle's state file, written atomically instead"),
    ("Oracle", "_get_trial_dir", "the folder of a trial's trial.json"),
    ("Oracle", "_save_trial", "where every oracle writes trial.json: written atomically instead"),
    ("Tuner", "_try_build", "builds a trial's model before it trains: a model over budget fails there"),
    ("Tuner", "_build_hypermodel", "builds the model: a Hyperband continuation loads its weights there"),
    ("Tuner", "_get_checkpoint_fname", "the weights of an earlier trial that Hyperband continues"),
    ("Tuner", "_is_worker", "a worker of a distributed search leaves the oracle's state to the chief"),
    ("Tuner", "_get_tuner_fname", "the tuner's state file, written atomically instead"),
    ("keras_tuner.engine", "hyperparameters", "the hyperparameter classes (Fixed, Choice, Int, Float)"),
    ("oracle_chief", "OracleServicer", "the chief's gRPC service, served by `serve` with a loop that gives "
                                       "up lost workers (KerasTuner's own loop waits for them forever)"),
    ("oracle_chief", "exit_chief", "when the chief's work is done: no trial runs and no worker waits"),
    ("oracle_client", "TIMEOUT", "seconds a worker's request waits for the chief (an hour in KerasTuner): "
                                 "set from --chief-timeout"),
    ("protos", "get_service_grpc", "registers the service on the chief's gRPC server"),
)


class OracleHooks:
    """Mixed in before a KerasTuner oracle: its private hooks call `draw_random_values` and
    `write_state` (atomic writes), which a subclass overrides."""

    def _random_values(self):
        return self.draw_random_values(super()._random_values)

    def _save_trial(self, trial):
        self.write_state(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state())

    def save(self):
        self.write_state(self._get_oracle_fname(), self.get_state())

    def random_values(self):
        """A random candidate, through `draw_random_values`; None once the space seems exhausted."""
        return self._random_values()

    def draw_random_values(self, draw):
        """KerasTuner's random draw (`draw()`: values, or None once the space seems exhausted)."""
        return draw()

    def write_state(self, path, state):
        raise NotImplementedError


class TunerHooks:
    """Mixed in before `keras_tuner.Tuner`: its private hooks call `check_model` (a built model and its
    hyperparameters, before it trains) and `prepare_model` (likewise, just built)."""

    def _try_build(self, hp):
        return self.check_model(super()._try_build(hp), hp)

    def _build_hypermodel(self, hp):
        return self.prepare_model(super()._build_hypermodel(hp), hp)

    def check_model(self, model, hp):
        return model

    def prepare_model(self, model, hp):
        return model


def mark_tried(oracle, values):
    """Never propose `values` again."""
    oracle._tried_so_far.add(oracle._compute_values_hash(values))


def retry_queue(oracle):
    """The ids of the trials the oracle hands out again (a list KerasTuner mutates)."""
    return oracle._retry_queue


def end_order(oracle):
    return oracle.end_order


def checkpoint_path(tuner, trial_id):
    """The weights file of `trial_id`'s best epoch."""
    return tuner._get_checkpoint_fname(trial_id)


def is_worker(tuner):
    return tuner._is_worker()


def tuner_state_path(tuner):
    return tuner._get_tuner_fname()


def hyperparameter_kinds():
    """KerasTuner's hyperparameter classes: ``{"Fixed": Fixed, "Choice": ..., "Int": ..., "Float": ...}``."""
    kinds = keras_tuner.engine.hyperparameters
    return {name: getattr(kinds, name) for name in ("Fixed", "Choice", "Int", "Float")}


def _distribute_modules():
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief, oracle_client

    return {"oracle_chief": oracle_chief, "oracle_client": oracle_client, "protos": protos}


def serve(oracle, watch, poll=1.0):
    """Serves `oracle` to the workers, as KerasTuner's ``oracle_chief.start_server`` does, until the
    search is done (a worker was told to stop, no trial runs, no worker waits); calls ``watch()``
    every `poll` seconds in between, which may end trials of lost workers or raise to stop waiting."""
    import concurrent.futures

    import grpc

    modules = _distribute_modules()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    servicer = modules["oracle_chief"].OracleServicer(oracle)
    modules["protos"].get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}")
    server.start()
    try:
        while not (servicer.stop_triggered and modules["oracle_chief"].exit_chief(oracle)):
            time.sleep(poll)
            watch()
    finally:
        server.stop(grace=None)


@contextlib.contextmanager
def chief_timeout(seconds):
    """Inside the block, a worker's request waits at most `seconds` for the chief."""
    client = _distribute_modules()["oracle_client"]
    saved, client.TIMEOUT = client.TIMEOUT, seconds
    try:
        yield
    finally:
        client.TIMEOUT = saved


def missing_names(oracle, tuner):
    """The `PRIVATE_NAMES` absent from the installed KerasTuner, as ``"where.name"`` strings."""
    owners = {"Oracle": oracle, "Tuner": tuner, "keras_tuner.engine": keras_tuner.engine, **_distribute_modules()}
    return [f"{where}.{name}" for where, name, _ in PRIVATE_NAMES if not hasattr(owners[where], name)]
