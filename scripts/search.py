"""The reproducible Fashion-MNIST depth x width search: Hyperband on a subset, the best retrained on all.

Defaults, planned for about 1 h 40 min on a 2-core CPU: the CIFAR family's depths 8, 14 and 20
(6n+2, n = 1..3) times width 1 to 3 in steps of 0.5, models up to 130M MACs per image (the ones over
it are never trained); Hyperband (up to 6 epochs a trial, factor 3, at most 40 trials) on the first
20,000 training images, 10% of them held out to rank the trials, with a 40-minute limit on the
search; then the best-ranked model that fits 30 epochs in 3,400 seconds (speeds measured here, best
ranked first) retrained on all 60,000 training images for as many epochs as fit, and tested once on the
10,000 test images.
Every run uses label smoothing 0.1, random erasing 0.2 and ``--precision auto`` (bfloat16 on CPUs
with AVX512-BF16 or AMX and on recent GPUs, float32 on other CPUs, where bfloat16 is emulated). Prints the
leaderboard's top rows and the Pareto front; writes ``leaderboard.csv``, ``leaderboard.json``,
``pareto.png``, ``best.keras``, ``retrain/`` and ``results.json`` in ``saved_models/<search-name>/``.
Interrupted, the same command resumes the search, or the retraining from its last finished epoch.

    python scripts/search.py
    nice -n 19 python scripts/search.py --search-name fmnist_tiny --train-size 600 --max-epochs 3 \\
        --max-trials 4 --retrain-epochs 1 --retrain-size 600   # a few-minute end-to-end check
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_resnet import training, tuning  # noqa: E402
from keras_resnet.utils import flags

RECIPE_FLAGS = ("batch_size", "label_smoothing", "erase", "seed")
# This experiment's settings, where they differ from the library's defaults.
DEFAULTS = dict(search_name="fmnist_search", cifar_n=(1, 3), width_min=1.0, width_max=3.0, width_step=0.5,
                max_macs=130e6, max_epochs=6, max_trials=40, time_limit=2400, train_size=20000,
                retrain_seconds=3400, retrain_min_epochs=30, label_smoothing=0.1, erase=0.2)


def parse_args(argv=None):
    epilog = "This experiment's defaults, in place of the library's shown above: " + ", ".join(
        f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in DEFAULTS.items())
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=epilog)
    flags.add_flags(p, tuning.SearchData, only=("data_dir", "train_size"))
    flags.add_flags(p, tuning.SearchSpace, only=("cifar_n", "width_min", "width_max", "width_step"))
    flags.add_flags(p, tuning.Budget)
    flags.add_flags(p, tuning.SearchSetup, only=("tuner", "search_name", "directory", "overwrite", "precision"))
    flags.add_flags(p, training.Recipe, only=RECIPE_FLAGS)
    flags.add_flags(p, tuning.Retrain)
    p.add_argument("--top", type=int, default=10, help="leaderboard rows to print")
    p.set_defaults(**DEFAULTS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # 0 means "no limit" for the limits, and --retrain-epochs replaces the time-budgeted retraining.
    no_limit = {name: getattr(args, name) or None for name in ("max_trials", "time_limit", "max_params",
                                                               "max_macs")}
    timed = args.retrain_epochs is None
    retrain = flags.from_args(tuning.Retrain, args, retrain_seconds=args.retrain_seconds if timed else None,
                              retrain_min_epochs=(args.retrain_min_epochs or None) if timed else None)
    results = tuning.run_search(
        flags.from_args(tuning.SearchSpace, args), flags.from_args(tuning.Budget, args, **no_limit),
        flags.from_args(training.Recipe, args, only=RECIPE_FLAGS),
        data=flags.from_args(tuning.SearchData, args), retrain=retrain,
        setup=flags.from_args(tuning.SearchSetup, args), verbose=1)
    print(f"\nsearch time this run: {results['search_seconds_this_run']:.0f} s; trials: {results['trials']}; "
          f"architectures skipped for size this run: {results['skipped_for_size_this_run']}")
    print("results:", results["files"])
    return results


if __name__ == "__main__":
    main()
