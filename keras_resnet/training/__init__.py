"""The recipe and the one run path: compile, fit, callbacks, resume, the run folder, evaluation,
devices and precision, multi-process jobs.

``keras_resnet.training.Recipe``, ``train``, ``evaluate``, ``fit_run`` and the rest of the recipe's
public names are importable from here (they live in `keras_resnet.training.run`).
"""

from keras_resnet.training.run import (  # noqa: F401
    CACHE, PIPELINES, SCHEDULES, Recipe, RunData, compile_model, evaluate, fit_run, learning_rate_schedule,
    load_run_data, make_datasets, phases, predict_probs, recorded_dataset, run_name, steps_per_epoch,
    stream_predictions, test_accuracies, train)
from keras_resnet.training.history import plot_history, read_history  # noqa: F401
