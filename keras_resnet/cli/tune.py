"""`tune` (keras_resnet.tuning): its flags are the fields of the tuning dataclasses and the Recipe."""

from keras_resnet.utils import flags


def _tune(args):
    from keras_resnet import tuning
    from keras_resnet import training

    tuned = ("learning_rate", "weight_decay", "epochs")  # searched (the space) or set by the budget
    result = tuning.run_search(
        flags.from_args(tuning.SearchSpace, args),
        flags.from_args(tuning.Budget, args, max_trials=args.max_trials or None),
        flags.from_args(training.Recipe, args, skip=tuned),
        data=flags.from_args(tuning.SearchData, args), retrain=flags.from_args(tuning.Retrain, args),
        setup=flags.from_args(tuning.SearchSetup, args), verbose=0 if args.quiet else 1)
    if result.get("role") == "worker":
        print(f"worker {result['tuner_id']}: no trials left after {result['search_seconds']:.0f} s")
    elif not result["trials"].get("COMPLETED"):
        counts = ", ".join(f"{n} {status.lower()}" for status, n in result["trials"].items()) or "none ran"
        raise RuntimeError(f"no trial of the search completed ({counts}; each trial's line above says why), "
                           f"so there is no result: see {result['files']['leaderboard_csv']}")


def add_parsers(sub):
    """The `tune` subcommand."""
    from keras_resnet import tuning
    from keras_resnet import training

    p = sub.add_parser("tune", help="search depth and width with KerasTuner (the same command resumes it)",
                       description="Search depth and width with KerasTuner, then retrain the best model. "
                                   "Results in DIRECTORY/SEARCH_NAME: leaderboard.csv/.json, pareto.png, "
                                   "best.keras, results.json.")
    flags.add_flags(p, tuning.SearchData, title="data (keras_resnet.tuning.SearchData)")
    flags.add_flags(p, tuning.SearchSpace, title="search space (keras_resnet.tuning.SearchSpace); one value "
                                                  "fixes an entry")
    flags.add_flags(p, tuning.Budget, title="budget (keras_resnet.tuning.Budget)")
    flags.add_flags(p, tuning.SearchSetup, title="tuner and folder (keras_resnet.tuning.SearchSetup)")
    flags.add_flags(p, training.Recipe, skip=("learning_rate", "weight_decay", "epochs"),
                    title="recipe of every trial (keras_resnet.training.Recipe)")
    flags.add_flags(p, tuning.Retrain, title="retraining of the best model (keras_resnet.tuning.Retrain)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_tune)
