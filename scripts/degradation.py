"""The degradation experiment of He et al. 2015 (Figures 1 and 6) on Fashion-MNIST.

A plain network (the same layers, no shortcuts) gets a higher training error as it gets deeper; a
ResNet of the same depth does not. This trains plain and residual networks of each depth with one
recipe (`keras_resnet.training.train`, the same seed, data and schedule for all), then writes:

- ``degradation.png``: training error (1 - training accuracy, per epoch, solid) and validation error
  (dashed) of every network, plain networks on the left and ResNets on the right, as in the paper;
- ``degradation.json``: the settings, per-network figures and whether the paper's two findings hold;
- a printed table: final training error, best validation error, test accuracy, seconds per network.

Every network has its own run folder under ``--out-dir`` (``plain20``, ``resnet56``, ...). Running the
same command again resumes an interrupted network from its last finished epoch and reuses finished
ones, so after a crash or for a new figure it only does the missing work. Training accuracy is the
running mean over each epoch's augmented batches in training mode, which is what Keras logs; the
paper's training curves are measured the same way.

    python scripts/degradation.py --epochs 10 --train-size 20000 --precision mixed_bfloat16
    python scripts/degradation.py --epochs 1 --train-size 1024 --depths 8,14 --width 0.25  # smoke test
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from keras_resnet import training  # noqa: E402
from keras_resnet.training import devices as execution
from keras_resnet.utils import flags, io_utils
from keras_resnet.models import resolve_depth  # noqa: E402

VARIANTS = {"plain": "plain", "resnet": "v1.5"}  # run-name prefix -> `build(variant=...)`
LABELS = {"plain": "plain", "resnet": "ResNet"}
SETTINGS_FILE = "degradation_settings.json"


def depth_list(text):
    try:
        depths = sorted({int(d) for d in text.split(",") if d.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 20,56; got {text!r}")
    for d in depths:
        try:
            block, _ = resolve_depth(d)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))
        if block != "basic" or d < 8:
            raise argparse.ArgumentTypeError(
                f"depth {d} is not a CIFAR-family depth 6n+2 of basic blocks (8, 14, 20, 32, 44, 56, 110, ...)")
    if not depths:
        raise argparse.ArgumentTypeError(f"expected at least one depth; got {text!r}")
    return depths


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", type=depth_list, default=[20, 56],
                   help="comma-separated depths 6n+2 (default 20,56, as in the paper's Figure 1)")
    p.add_argument("--variants", default="plain,resnet",
                   help="comma-separated subset of plain,resnet (default both)")
    p.add_argument("--train-size", type=int, default=20000,
                   help="use the first N training images (a tenth of them is held out for validation); "
                        "0 for all 60000")
    flags.add_flags(p, training.Recipe, only=("epochs", "batch_size", "learning_rate", "warmup_epochs",
                                              "weight_decay", "seed"))
    p.set_defaults(epochs=10)
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (1.0: the paper's 16-32-64)")
    p.add_argument("--precision", default="auto", choices=execution.PRECISIONS)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out-dir", default="saved_models/degradation",
                   help="one run folder per network, plus degradation.png and degradation.json")
    p.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2), help="Keras fit verbosity")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        p.error(f"--variants must be a comma-separated subset of {','.join(VARIANTS)}; got {args.variants!r}")
    args.variants = [v for v in VARIANTS if v in variants]
    if args.train_size < 0:
        p.error(f"--train-size must be >= 0 (0 for the whole training set); got {args.train_size}")
    return args


def make_recipe(args):
    """The one recipe every network trains with (a ValueError names a bad value)."""
    return flags.from_args(training.Recipe, args)


def run_settings(args, recipe, variant, depth):
    return {"dataset": args.dataset, "train_size": args.train_size or None, "precision": args.precision,
            "depth": depth, "variant": VARIANTS[variant], "width": args.width,
            "recipe": dataclasses.asdict(recipe)}


def train_one(args, recipe, variant, depth):
    """Trains (or resumes, or reuses) one network; returns its row of the table."""
    name = f"{variant}{depth}"
    run_dir = Path(args.out_dir) / name
    settings = run_settings(args, recipe, variant, depth)
    settings_path = run_dir / SETTINGS_FILE
    if settings_path.exists():
        previous = json.loads(settings_path.read_text())
        if previous != settings:
            raise ValueError(
                f"{run_dir} holds a run with other settings ({_diff(previous, settings)}). Pass another "
                f"--out-dir, or delete {run_dir} to start that network again.")
    run_json, timing_json = run_dir / "run.json", run_dir / "timing.json"
    if run_json.exists():
        metrics = json.loads(run_json.read_text())
        if metrics.get("epochs_run", 0) >= recipe.epochs:
            print(f"{name}: finished earlier in {run_dir}, reusing it", flush=True)
            timing = (json.loads(timing_json.read_text()) if timing_json.exists()
                      else _timing(metrics, metrics["epochs_run"], None, False))
            return _row(name, variant, depth, run_dir, metrics, timing)
    run_dir.mkdir(parents=True, exist_ok=True)
    io_utils.write_json(settings_path, settings, indent=2)
    done_before = len(training.read_history(str(run_dir / "history.csv")).get("epoch", []))
    print(f"{name}: training {recipe.epochs} epochs in {run_dir}"
          + (f" (resuming after epoch {done_before})" if done_before else ""), flush=True)
    keras.backend.clear_session()
    start = time.perf_counter()
    metrics = training.train(
        dataset=args.dataset, data_dir=args.data_dir, recipe=recipe, run_dir=str(run_dir),
        precision=args.precision, train_size=args.train_size or None, verbose=args.verbose,
        depth=depth, variant=VARIANTS[variant], width=args.width)
    total = time.perf_counter() - start
    timing = _timing(metrics, metrics["epochs_run"] - done_before, round(total, 1), bool(done_before))
    io_utils.write_json(timing_json, timing, indent=2)
    return _row(name, variant, depth, run_dir, metrics, timing)


def _timing(metrics, epochs_fitted, total_seconds, resumed):
    """Seconds of the fit in the process that finished the run (an earlier, interrupted one not counted)."""
    fit = metrics["fit_seconds_this_process"]
    return {"fit_seconds": fit, "seconds_per_epoch": fit / max(epochs_fitted, 1), "epochs_timed": epochs_fitted,
            "total_seconds": total_seconds,  # load, build, fit, test evaluation and saving
            "resumed": resumed}


def _diff(old, new):
    old, new = ({**{k: v for k, v in d.items() if k != "recipe"},
                 **{f"recipe.{k}": v for k, v in d.get("recipe", {}).items()}} for d in (old, new))
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}={old.get(k)!r} there, {new.get(k)!r} now" for k in keys)


def _row(name, variant, depth, run_dir, metrics, timing):
    history = training.read_history(str(run_dir / "history.csv"))
    train_error = [1 - a for a in history["accuracy"]]
    val_error = [1 - a for a in history.get("val_accuracy", [])]
    return {
        "name": name, "label": f"{LABELS[variant]}-{depth}", "variant": variant, "depth": depth,
        "params": metrics["model"]["params"], "macs": metrics["model"]["macs"],
        "final_train_error": train_error[-1],
        "final_val_error": val_error[-1] if val_error else None,
        "best_val_error": min(val_error) if val_error else None,
        "test_accuracy": metrics["test_accuracy"],
        "test_error": 1 - metrics["test_accuracy"],
        **timing,
        "train_error": train_error, "val_error": val_error, "run_dir": str(run_dir),
    }


def findings(rows):
    """The paper's two claims, tested on final training error, shallowest against deepest."""
    result = {}
    for variant, deeper_is_worse in (("plain", True), ("resnet", False)):
        by_depth = {r["depth"]: r for r in rows if r["variant"] == variant}
        if len(by_depth) < 2:
            continue
        shallow, deep = by_depth[min(by_depth)], by_depth[max(by_depth)]
        if deeper_is_worse:
            claim = f"{deep['label']} trains worse than {shallow['label']} (degradation)"
            holds = deep["final_train_error"] > shallow["final_train_error"]
        else:
            claim = f"{deep['label']} trains at least as well as {shallow['label']} (no degradation)"
            holds = deep["final_train_error"] <= shallow["final_train_error"]
        result[variant] = {"claim": claim, "holds": holds,
                           "final_train_error": {shallow["label"]: shallow["final_train_error"],
                                                 deep["label"]: deep["final_train_error"]}}
    return result


def plot(rows, path, title):
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    depths = sorted({r["depth"] for r in rows})
    colors = dict(zip(depths, matplotlib.colormaps["plasma_r"]([0.25 + 0.6 * i / max(len(depths) - 1, 1)
                                                        for i in range(len(depths))])))
    fig = io_utils.new_figure(figsize=(5.5 * len(variants), 4.2))
    axes = fig.subplots(1, len(variants), sharey=True, squeeze=False)
    top = max(max(r["train_error"] + r["val_error"]) for r in rows)
    for ax, variant in zip(axes[0], variants):
        for r in (r for r in rows if r["variant"] == variant):
            epochs = range(1, len(r["train_error"]) + 1)
            ax.plot(epochs, [100 * e for e in r["train_error"]], "-", color=colors[r["depth"]], lw=2,
                    label=f"{r['label']} train")
            if r["val_error"]:
                ax.plot(epochs, [100 * e for e in r["val_error"]], "--", color=colors[r["depth"]], lw=1.2,
                        label=f"{r['label']} val")
        ax.set_title(f"{LABELS[variant]} networks")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, min(100, 100 * top * 1.05))
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0][0].set_ylabel("error (%)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    io_utils.save_figure(fig, path, dpi=120)


def print_table(rows):
    print(f"\n{'network':11} {'params':>8} {'MMACs':>7} {'train err':>9} {'best val err':>12} "
          f"{'test acc':>8} {'s/epoch':>8} {'fit s':>7}")
    for r in rows:
        best_val = "-" if r["best_val_error"] is None else f"{100 * r['best_val_error']:.2f}%"
        print(f"{r['label']:11} {r['params']:8,d} {r['macs'] / 1e6:7.1f} {100 * r['final_train_error']:8.2f}% "
              f"{best_val:>12} {100 * r['test_accuracy']:7.2f}% {r['seconds_per_epoch']:8.1f} "
              f"{r['fit_seconds']:7.0f}" + ("  (resumed)" if r["resumed"] else ""))


def main(argv=None):
    args = parse_args(argv)
    recipe = make_recipe(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [train_one(args, recipe, variant, depth) for variant in args.variants for depth in args.depths]

    images = args.train_size or "all"
    title = (f"{args.dataset}, {images} training images (10% held out for validation), {recipe.epochs} epochs, "
             f"width {args.width:g}, batch {recipe.batch_size}, lr {recipe.learning_rate:g}, "
             f"{recipe.warmup_epochs:g} warm-up epochs, {args.precision}")
    png = out / "degradation.png"
    plot(rows, str(png), title)
    result = {
        "settings": {**{k: v for k, v in vars(args).items() if k != "verbose"},
                     "recipe": dataclasses.asdict(recipe)},
        "cpu_count": os.cpu_count(),
        "backend": keras.backend.backend(),
        "networks": rows,
        "findings": findings(rows),
    }
    json_path = out / "degradation.json"
    io_utils.write_json(json_path, result, indent=2)

    print_table(rows)
    for variant, f in result["findings"].items():
        errors = ", ".join(f"{k} {100 * v:.2f}%" for k, v in f["final_train_error"].items())
        print(f"{f['claim']}: {'holds' if f['holds'] else 'does NOT hold'} (final train error {errors})")
    print(f"wrote {png} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
