"""Search over depth and width with KerasTuner: the space, the budgets, the tuner, the results.

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
Pareto front, retrains the best model on train+val through `keras_resnet.training.fit_run` and saves
it as ``best.keras``.

Everything lives in ``saved_models/<search_name>/``, KerasTuner's project folder: running the same
command again after a crash or ``kill -9`` continues the search without re-running finished trials.
Several machines can share one search through KerasTuner's chief/worker mode (the environment
variables ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``).

Modules: `space` (SearchSpace, ResNetHyperModel), `budget`, `oracles`, `tuner`, `report`
(leaderboard, Pareto front, tables), `retrain`, `search` (run_search); ``kt_compat`` holds every
private KerasTuner name the package touches.
"""

from keras_resnet.tuning.budget import Budget
from keras_resnet.tuning.oracles import TUNERS, BayesianOracle, HyperbandOracle, RandomOracle
from keras_resnet.tuning.report import (
    COLUMNS,
    format_leaderboard,
    leaderboard,
    pareto_front,
    plot_pareto,
    print_summary,
    write_leaderboard,
)
from keras_resnet.tuning.retrain import RETRAIN_CANDIDATES, Retrain, epochs_within, measure_step
from keras_resnet.tuning.search import SearchData, SearchSetup, run_search
from keras_resnet.tuning.space import (
    ARCHITECTURE_NAMES,
    RECIPE_NAMES,
    ResNetHyperModel,
    SearchSpace,
    build_kwargs,
    describe,
    recipe_kwargs,
)
from keras_resnet.tuning.tuner import OBJECTIVE, ResNetTuner, check_size_limit, make_tuner

__all__ = [
    "ARCHITECTURE_NAMES", "BayesianOracle", "Budget", "COLUMNS", "HyperbandOracle", "OBJECTIVE",
    "RECIPE_NAMES", "RETRAIN_CANDIDATES", "RandomOracle", "ResNetHyperModel", "ResNetTuner", "Retrain",
    "SearchData", "SearchSetup", "SearchSpace", "TUNERS", "build_kwargs", "check_size_limit", "describe",
    "epochs_within", "format_leaderboard", "leaderboard", "make_tuner", "measure_step", "pareto_front",
    "plot_pareto", "print_summary", "recipe_kwargs", "run_search", "write_leaderboard",
]
