"""A search in TensorBoard: every trial's hyperparameters, curves and results in the HParams format.

KerasTuner's documented route: a `keras.callbacks.TensorBoard` given to ``tuner.search`` becomes, for
each trial, a callback logging into ``<search>/tensorboard/<trial_id>/execution<n>/`` with the trial's
hyperparameters as an HParams session (TensorBoard's ``hparams_api.KerasCallback``) and its
per-epoch loss and accuracy (``train/`` and ``validation/``). When the trial ends, `log_trial` adds
what the search ranks and measures: the objective (``val_accuracy`` at the trial's best epoch),
``params``, ``macs``, ``epochs`` and ``seconds``. So ``tensorboard --logdir <search>`` shows the
HParams table, parallel coordinates and scatter plots of the trials. KerasTuner writes HParams on
the TensorFlow backend only, and so does the search.
"""

import glob
import os

import keras

LOG_DIR = "tensorboard"
METRICS = ("val_accuracy", "params", "macs", "epochs", "seconds")


def enabled():
    return keras.backend.backend() == "tensorflow"


def callbacks(project_dir):
    """The callbacks to give ``tuner.search``: a `keras.callbacks.TensorBoard` into the search folder
    (none on another backend)."""
    if not enabled():
        return []
    return [keras.callbacks.TensorBoard(os.path.join(project_dir, LOG_DIR), write_graph=False)]


def trial_dirs(project_dir, trial_id):
    """The HParams session folders KerasTuner made for a trial (one per execution)."""
    return sorted(glob.glob(os.path.join(glob.escape(os.path.join(project_dir, LOG_DIR, str(trial_id))),
                                         "execution*")))


def log_trial(project_dir, trial_id, metrics):
    """Writes the trial's `METRICS` (from `metrics`) as scalars into its HParams session folders."""
    if not enabled():
        return []
    import tensorflow as tf

    folders = trial_dirs(project_dir, trial_id)
    for folder in folders:
        writer = tf.summary.create_file_writer(folder)
        with writer.as_default():
            for name in METRICS:
                if metrics.get(name) is not None:
                    tf.summary.scalar(name, float(metrics[name]), step=0)
        writer.close()
    return folders
