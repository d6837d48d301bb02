"""The callbacks of a run: its resumable state (checkpoints, best model, history) and a NaN guard.

`RunState` keeps everything a run needs to continue in ``<run_dir>/state/``: after every epoch it
writes the weights with the optimizer's variables and ``state.json`` (the next epoch, the best
validation value and the history so far) into a new folder under a temporary name and renames it to
``epoch-NNNN`` in one step, so a committed state is always complete. The previous committed state is
deleted only after the new one is in place. On start, a state that fails to read (a truncated file
after a full disk or a kill) is set aside, renamed ``*.unreadable-<time>`` and never deleted, with a
one-line warning, and the run resumes from the previous good state, or afresh when none is left.
``best.keras`` (the model of the best validation epoch) and ``history.csv`` are written atomically;
the best value survives a resume, so a resumed run never replaces a better model with a worse one.
"""

import glob
import json
import math
import os
import shutil
import time
import warnings
import zipfile

import keras
import numpy as np

from keras_resnet.utils import io_utils
from keras_resnet.training.distill import student_of
from keras_resnet.training.history import write_history

STATE_FILE = "state.json"
WEIGHTS_FILE = "model.weights.h5"


def readable_keras_file(path):
    """True if `path` is a complete ``.keras`` archive (a zip whose every member passes its CRC)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None and "config.json" in archive.namelist()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def set_aside(path, why):
    """Renames an unreadable file or folder out of the way (never deletes it) and warns in one line."""
    target = f"{path}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, target)
    warnings.warn(f"{path} could not be read ({why}); set aside as {target}", stacklevel=3)
    return target


class RunState(keras.callbacks.Callback):
    """Commits the run's state after every epoch and restores the last readable one before `fit`.

    Args:
        run_dir: the run folder.
        monitor: the metric whose best value selects ``best.keras`` (None: no best model).
        chief: False in the processes of a multi-process job that must not write (they restore only).
        keep: committed states kept (the newest and its predecessors).
        facts: what ``best.keras`` carries of the run (`keras_resnet.utils.io_utils.save_model`).
    """

    def __init__(self, run_dir, monitor="val_accuracy", chief=True, keep=2, facts=None):
        super().__init__()
        self.run_dir, self.monitor, self.chief, self.keep = os.fspath(run_dir), monitor, chief, keep
        self.facts = facts
        self.state_dir = os.path.join(self.run_dir, "state")
        self.best_path = os.path.join(self.run_dir, "best.keras")
        self.history_path = os.path.join(self.run_dir, "history.csv")
        self.epoch, self.best, self.best_epoch, self.rows = 0, -math.inf, None, []

    def committed(self):
        """The committed state folders, newest first."""
        folders = glob.glob(os.path.join(self.state_dir, "epoch-[0-9][0-9][0-9][0-9]"))
        return sorted(folders, reverse=True)

    def peek_epoch(self):
        """The epoch the newest committed state continues from (0 if none), without loading it."""
        for folder in self.committed():
            try:
                with open(os.path.join(folder, STATE_FILE)) as f:
                    return int(json.load(f)["epoch"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return 0

    def restore(self, model):
        """Loads the newest readable state into `model` (compiled); returns the epoch to continue from."""
        optimizer = model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(model.trainable_variables)
        variables = list(model.variables) + (list(optimizer.variables) if optimizer is not None else [])
        initial = [v.numpy() for v in variables]
        if self.chief:  # what a process killed while committing left behind
            for partial in glob.glob(os.path.join(self.state_dir, ".epoch-*.partial-*")):
                shutil.rmtree(partial, ignore_errors=True)
        for folder in self.committed():
            try:
                with open(os.path.join(folder, STATE_FILE)) as f:
                    state = json.load(f)
                model.load_weights(os.path.join(folder, WEIGHTS_FILE))
            except Exception as e:  # noqa: BLE001 -- any unreadable state is set aside, whatever broke it
                for v, value in zip(variables, initial):
                    v.assign(value)
                if self.chief:
                    set_aside(folder, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            self.epoch, self.rows = state["epoch"], state["history"]
            self.best = -math.inf if state["best"] is None else state["best"]
            self.best_epoch = state.get("best_epoch")
            break
        if self.chief and os.path.exists(self.best_path) and not readable_keras_file(self.best_path):
            set_aside(self.best_path, "not a complete .keras archive")
            self.best, self.best_epoch = -math.inf, None
        return self.epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [{"epoch": epoch, **logs}]
        value = logs.get(self.monitor) if self.monitor else None
        if value is not None and value > self.best:
            if self.chief:  # the student alone, when the run distils
                io_utils.save_model(student_of(self.model), self.best_path, facts=self.facts)
            self.best, self.best_epoch = value, epoch
        self.epoch = epoch + 1
        if self.chief:
            self._commit()
            write_history(self.history_path, self.rows)

    def _commit(self):
        final = os.path.join(self.state_dir, f"epoch-{self.epoch:04d}")
        tmp = os.path.join(self.state_dir, f".epoch-{self.epoch:04d}.partial-{os.getpid()}")
        os.makedirs(self.state_dir, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.makedirs(tmp)
            io_utils.save_weights(self.model, os.path.join(tmp, WEIGHTS_FILE))
            state = {"epoch": self.epoch, "best": None if self.best == -math.inf else self.best,
                     "best_epoch": self.best_epoch, "monitor": self.monitor, "history": self.rows}
            io_utils.write_json(os.path.join(tmp, STATE_FILE), state)
            if os.path.exists(final):  # the same epoch again after a resume: replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in self.committed()[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)


class NaNGuard(keras.callbacks.Callback):
    """Stops training the moment the loss is not finite, and at the end of an epoch whose weights are
    not all finite; says so plainly. Placed before `RunState`: such an epoch is never committed, so the
    run folder keeps the last finite state.

    Raises (from ``on_epoch_end``, out of ``fit``):
        FloatingPointError: the loss or a weight stopped being finite in this epoch.
    """

    ADVICE = "Lower --learning-rate, raise --warmup-epochs, or use float32 precision."

    def __init__(self):
        super().__init__()
        self.message = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.message is None:
            self.message = f"the training loss became {float(loss)} at batch {batch}"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        bad = [w.path for w in self.model.weights if not np.all(np.isfinite(keras.ops.convert_to_numpy(w.value)))]
        if bad and self.message is None:
            self.message = (f"{len(bad)} of the {len(self.model.weights)} weight arrays became non-finite "
                            f"(nan or inf; the first: {bad[0]})")
        if self.message is not None:
            self.message = (f"{self.message} in epoch {epoch + 1}; training stopped and this epoch was not "
                            f"saved: the run folder keeps the last state whose weights are finite. {self.ADVICE}")
            raise FloatingPointError(self.message)
