"""The recipe and the one run path: compile, fit, callbacks, resume, the run folder, evaluation,
devices and precision, multi-process jobs.

- `recipe`: the settings of a run (`Recipe`), the schedule, the optimizer and loss, the phases.
- `feed`: the run's splits (`load_run_data`) and how they reach ``fit``.
- `run`: `train` and `fit_run`, the only training loop; `callbacks` (resumable state, NaN guard),
  `history`, `diagnostics` (confusion matrix, per-class figures, worst mistakes), `run_folder` (what
  a run folder says about its model).
- `distill`: knowledge distillation (a frozen `Teacher`, the `Distiller` that trains a student with it).
- `evaluation`: test accuracy, predictions and `evaluate` of a saved model.
- `devices` (precision and distribution scopes) and `distributed` (multi-process JAX jobs).

The public names of the recipe and the run path are importable from here.
"""

from keras_resnet.training.distill import Distiller, Teacher, distilled, load_teacher, student_of  # noqa: F401
from keras_resnet.training.evaluation import (  # noqa: F401
    evaluate, predict_probs, stream_predictions, test_accuracies)
from keras_resnet.training.feed import CACHE, PIPELINES, RunData, load_run_data, make_datasets  # noqa: F401
from keras_resnet.training.history import plot_history, read_history  # noqa: F401
from keras_resnet.training.recipe import (  # noqa: F401
    SCHEDULES, Recipe, compile_model, learning_rate_schedule, phases, steps_per_epoch)
from keras_resnet.training.run import RUN_DIR_IN_USE, fit_run, recorded_dataset, run_name, train  # noqa: F401
