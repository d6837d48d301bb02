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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--search-name", default="fmnist_search")
    p.add_argument("--directory", default="saved_models")
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files (default: found)")
    p.add_argument("--tuner", choices=sorted(tuning.TUNERS), default="hyperband")
    p.add_argument("--cifar-n", type=int, nargs=2, default=(1, 3), metavar=("N_MIN", "N_MAX"),
                   help="depths 6n+2 (default 1 3: depths 8, 14, 20)")
    p.add_argument("--width-min", type=float, default=1.0)
    p.add_argument("--width-max", type=float, default=3.0)
    p.add_argument("--width-step", type=float, default=0.5)
    p.add_argument("--max-macs", type=float, default=130e6, help="MACs per image; 0 for no limit")
    p.add_argument("--max-params", type=float, default=0, help="parameters; 0 for no limit")
    p.add_argument("--max-epochs", type=int, default=6, help="epochs of Hyperband's longest trials")
    p.add_argument("--max-trials", type=int, default=40)
    p.add_argument("--time-limit", type=float, default=2400, help="seconds of search; 0 for no limit")
    p.add_argument("--train-size", type=int, default=20000, help="training images the search uses")
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help="epochs of the final training, instead of --retrain-seconds (0 keeps the best "
                        "trial's own weights)")
    p.add_argument("--retrain-seconds", type=float, default=3400,
                   help="time budget of the final training: as many epochs as fit (default 3400)")
    p.add_argument("--retrain-min-epochs", type=int, default=30,
                   help="retrain the best-ranked trial whose model fits this many epochs in --retrain-seconds "
                        "(default 30; 0 retrains the best-ranked one whatever its speed)")
    p.add_argument("--retrain-size", type=int, default=None, help="default: all 60,000 training images")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--erase", type=float, default=0.2, help="random-erasing probability")
    p.add_argument("--precision", choices=training.PRECISIONS, default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    p.add_argument("--top", type=int, default=10, help="leaderboard rows to print")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    space = tuning.SearchSpace(cifar_n=tuple(args.cifar_n), width_min=args.width_min,
                               width_max=args.width_max, width_step=args.width_step)
    budget = tuning.Budget(max_trials=args.max_trials, max_epochs=args.max_epochs,
                           time_limit=args.time_limit or None, max_params=args.max_params or None,
                           max_macs=args.max_macs or None)
    recipe = training.Recipe(batch_size=args.batch_size, label_smoothing=args.label_smoothing, erase=args.erase,
                             seed=args.seed)
    results = tuning.run_search(
        dataset="fashion_mnist", data_dir=args.data_dir, space=space, budget=budget, recipe=recipe,
        tuner=args.tuner, search_name=args.search_name, directory=args.directory, train_size=args.train_size,
        retrain_epochs=args.retrain_epochs,
        retrain_seconds=None if args.retrain_epochs is not None else args.retrain_seconds,
        retrain_min_epochs=args.retrain_min_epochs or None if args.retrain_epochs is None else None,
        retrain_size=args.retrain_size, precision=args.precision, overwrite=args.overwrite,
        verbose=1)
    print(f"\nsearch time this run: {results['search_seconds_this_run']:.0f} s; trials: {results['trials']}; "
          f"architectures skipped for size this run: {results['skipped_for_size_this_run']}")
    print("results:", results["files"])
    return results


if __name__ == "__main__":
    main()
