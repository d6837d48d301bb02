"""Fashion-MNIST accuracy against training compute: a recipe and a model, measured in PFLOP.

Training compute is counted as 6 x MACs per image x training images seen (forward and backward; whole
batches only, as the training pipeline drops the last partial batch). Evaluation is not counted.

Each seed trains through `keras_resnet.training.fit_run` into its own run folder
(``<out-dir>/seed<N>``), so an interrupted run continues from its last finished epoch when the same
command runs again. Every ``--eval-every`` epochs (and at the end) a callback measures, with the
averaged weights when ``--ema`` is on:

- ``val_accuracy``: the held-out validation split, the only figure to choose recipes by;
- ``test_accuracy`` and ``test_accuracy_flip_tta``: the test split, for reporting only.

Its records live in ``<run folder>/speedrun_evals.json``; an evaluation lost to a kill between the
epoch's commit and its record is made up on resume from the committed weights. The command writes
``<out-dir>/speedrun.json`` (settings, records per seed, mean per evaluation point) and
``<out-dir>/speedrun.png`` (test accuracy against cumulative PFLOP, with the 0.94 and 0.95 lines, the
0.18 and 0.40 PFLOP budgets and the README's ResNet-20 run). ``--compare`` plots and tabulates the
validation accuracy of several finished output folders side by side.

    python scripts/speedrun.py --depth 20 --epochs 16 --label-smoothing 0.1 --erase 0.3 --ema 0.999
    python scripts/speedrun.py --depth 8 --width 0.5 --epochs 2 --train-size 600 --out-dir /tmp/sr  # smoke
    python scripts/speedrun.py --compare saved_models/speedrun/a saved_models/speedrun/b
"""

import argparse
import contextlib
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_resnet import data as data_lib  # noqa: E402
from keras_resnet import training  # noqa: E402
from keras_resnet.training import devices as execution
from keras_resnet.utils import flags, io_utils
from keras_resnet.models import build  # noqa: E402
from keras_resnet.models.summary import count_macs  # noqa: E402

TARGETS = (0.94, 0.95)            # test accuracy to reach
BUDGETS = (0.18, 0.40)            # PFLOP: half of today's run, and the 0.95 budget
# The README's headline run (docs/results.md): ResNet-20 at width 1, 32 epochs, 57000 training images
# (val_fraction 0.05), batch 128; its compute is counted below with the same rule as every other run.
REFERENCE = {"accuracy": 0.9405, "depth": 20, "width": 1.0, "epochs": 32, "train_images": 57000,
             "batch_size": 128}
EVALS_FILE = "speedrun_evals.json"
SETTINGS_FILE = "speedrun_settings.json"


def training_pflop(macs, images):
    """Training compute in PFLOP: 6 x MACs per image x images seen (2 FLOPs a MAC, backward twice forward)."""
    return 6.0 * macs * images / 1e15


def images_per_epoch(recipe, train_images):
    """Images one epoch trains on: whole batches only."""
    return training.steps_per_epoch(recipe, train_images) * recipe.batch_size


def eval_epochs(epochs, every):
    """The epochs (counted from 1) after which the run is evaluated: every `every`-th and the last."""
    return sorted({e for e in range(every, epochs + 1, every)} | {epochs})


class Evaluator(keras.callbacks.Callback):
    """Evaluates validation and test accuracy after the chosen epochs; keeps its records in a JSON file.

    Records are keyed by epochs finished. With an optimizer that keeps a moving average of the weights,
    the average is swapped in for the evaluation and the raw weights put back afterwards.
    """

    def __init__(self, path, epochs, data, macs, images_per_epoch):
        super().__init__()
        self.path, self.epochs, self.data = path, set(epochs), data
        self.macs, self.images_per_epoch = macs, images_per_epoch
        self.records = {int(r["epoch"]): r for r in (io_utils.read_json(path) or [])}
        self._first = True

    def on_epoch_begin(self, epoch, logs=None):
        # A resumed run starts from the committed weights of `epoch` finished epochs.
        if self._first and epoch in self.epochs and epoch not in self.records:
            self.evaluate(epoch)
        self._first = False

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.epochs:
            self.evaluate(epoch + 1)

    def evaluate(self, epochs_done):
        images = epochs_done * self.images_per_epoch
        d = self.data
        with averaged_weights(self.model):
            val = training.predict_probs(self.model, data_lib.normalize(d.x_val, d.info))
            test = training.test_accuracies(self.model, data_lib.normalize(d.x_test, d.info), d.y_test,
                                            d.info)
        self.records[epochs_done] = {
            "epoch": epochs_done, "images_seen": images, "pflop": training_pflop(self.macs, images),
            "val_accuracy": float(np.mean(np.argmax(val, -1) == d.y_val)), **test}
        io_utils.write_json(self.path, [self.records[e] for e in sorted(self.records)])
        return self.records[epochs_done]


@contextlib.contextmanager
def averaged_weights(model):
    """Inside the block, `model` holds its optimizer's moving average of the weights (if it keeps one)."""
    optimizer = model.optimizer
    if optimizer is None or not getattr(optimizer, "use_ema", False):
        yield
        return
    raw = [v.numpy() for v in model.trainable_variables]
    optimizer.finalize_variable_values(model.trainable_variables)
    try:
        yield
    finally:
        for v, value in zip(model.trainable_variables, raw):
            v.assign(value)


def settings_of(args, recipe):
    return {"dataset": "fashion_mnist", "depth": args.depth, "width": args.width,
            "train_size": args.train_size, "test_size": args.test_size, "precision": args.precision,
            "eval_every": args.eval_every, "recipe": dataclasses.asdict(recipe)}


def run_seed(args, recipe, seed):
    """Trains (or resumes, or reuses) one seed; returns its evaluation records."""
    recipe = dataclasses.replace(recipe, seed=seed)
    run_dir = os.path.join(args.out_dir, f"seed{seed}")
    settings = settings_of(args, recipe)
    previous = io_utils.read_json(os.path.join(run_dir, SETTINGS_FILE))
    if previous is not None and previous != settings:
        raise ValueError(f"{run_dir} holds a run with other settings; pass another --out-dir or delete it.")
    os.makedirs(run_dir, exist_ok=True)
    io_utils.write_json(os.path.join(run_dir, SETTINGS_FILE), settings)
    keras.utils.set_random_seed(seed)
    data = training.load_run_data("fashion_mnist", recipe, train_size=args.train_size)
    data = dataclasses.replace(data, x_test=data.x_test[:args.test_size], y_test=data.y_test[:args.test_size])
    per_epoch = images_per_epoch(recipe, len(data.x_train))
    with execution.precision_scope(args.precision):
        model = build(args.depth, width=args.width, input_shape=tuple(data.info["input_shape"]),
                      num_classes=data.info["num_classes"])
        macs = count_macs(model)
        evaluator = Evaluator(os.path.join(run_dir, EVALS_FILE), eval_epochs(recipe.epochs, args.eval_every),
                              data, macs, per_epoch)
        data_for_fit = dataclasses.replace(data, x_test=None, y_test=None)  # the evaluator tests
        training.fit_run(model, recipe, data_for_fit, run_dir, verbose=args.verbose, callbacks=[evaluator],
                         config={"speedrun": settings})
        evaluator.set_model(model)
        if recipe.epochs not in evaluator.records:  # finished before its last record was written
            evaluator.evaluate(recipe.epochs)
    records = [evaluator.records[e] for e in sorted(evaluator.records)]
    return {"macs": macs, "images_per_epoch": per_epoch, "train_images": len(data.x_train),
            "val_images": len(data.x_val), "records": records}


METRICS = ("val_accuracy", "test_accuracy", "test_accuracy_flip_tta")


def mean_curve(seeds):
    """Per evaluation point: PFLOP and the mean and spread (min, max) of each metric over the seeds."""
    by_epoch = {}
    for result in seeds.values():
        for r in result["records"]:
            by_epoch.setdefault(r["epoch"], []).append(r)
    curve = []
    for epoch in sorted(by_epoch):
        rows = by_epoch[epoch]
        point = {"epoch": epoch, "pflop": rows[0]["pflop"], "seeds": len(rows)}
        for m in METRICS:
            values = [r[m] for r in rows if m in r]
            if values:
                point[m] = float(np.mean(values))
                point[m + "_min"], point[m + "_max"] = float(min(values)), float(max(values))
        curve.append(point)
    return curve


def reference_pflop():
    model = build(REFERENCE["depth"], width=REFERENCE["width"], input_shape=(28, 28, 1), num_classes=10)
    per_epoch = REFERENCE["train_images"] // REFERENCE["batch_size"] * REFERENCE["batch_size"]
    return training_pflop(count_macs(model), REFERENCE["epochs"] * per_epoch)


def plot(curves, path, metric="test_accuracy", title=""):
    """Accuracy against cumulative training PFLOP, one line per curve, with the targets marked."""
    fig = io_utils.new_figure(figsize=(8, 5))
    ax = fig.subplots()
    for label, curve in curves.items():
        x = [p["pflop"] for p in curve]
        ax.plot(x, [p[metric] for p in curve], "o-", label=label)
        if metric + "_min" in curve[0] and curve[0]["seeds"] > 1:
            ax.fill_between(x, [p[metric + "_min"] for p in curve], [p[metric + "_max"] for p in curve],
                            alpha=0.2)
    for target in TARGETS:
        ax.axhline(target, color="gray", ls="--", lw=1)
        ax.annotate(f"{target}", (0, target), xycoords=("axes fraction", "data"), va="bottom", fontsize=8)
    for budget in BUDGETS:
        ax.axvline(budget, color="gray", ls=":", lw=1)
        ax.annotate(f"{budget} PFLOP", (budget, 0), xycoords=("data", "axes fraction"), rotation=90,
                    ha="right", va="bottom", fontsize=8)
    ax.plot([reference_pflop()], [REFERENCE["accuracy"]], "k*", ms=12,
            label=f"README ResNet-20, 32 epochs: test {REFERENCE['accuracy']}")
    ax.set_xscale("log")
    ax.set_xlabel("training compute (PFLOP = 6 x MACs x images seen / 1e15)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return io_utils.save_figure(fig, path)


def print_table(curves, metrics=METRICS):
    print(f"{'run':<28} {'epoch':>5} {'PFLOP':>10} " + " ".join(f"{m:>22}" for m in metrics))
    for label, curve in curves.items():
        for p in curve:
            cells = " ".join(f"{p.get(m, float('nan')):>22.4f}" for m in metrics)
            print(f"{label:<28} {p['epoch']:>5} {p['pflop']:>10.4g} {cells}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=20, help="CIFAR-family depth 6n+2 (default 20)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1.0)")
    p.add_argument("--seeds", type=flags.int_list, default=(0,), help="comma-separated seeds (default 0)")
    p.add_argument("--train-size", type=int, default=None,
                   help="use the first N training images (the validation fraction is held out of them)")
    p.add_argument("--test-size", type=int, default=None,
                   help="evaluate on the first N test images (smoke runs; default all 10000)")
    p.add_argument("--eval-every", type=int, default=2, help="evaluate every k epochs, and at the end")
    p.add_argument("--precision", default="auto", choices=execution.PRECISIONS)
    p.add_argument("--out-dir", default="saved_models/speedrun")
    p.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2), help="Keras fit verbosity")
    p.add_argument("--compare", nargs="+", metavar="OUT_DIR",
                   help="plot and tabulate finished output folders side by side (no training)")
    flags.add_flags(p, training.Recipe, skip=("seed",))
    args = p.parse_args(argv)
    if args.eval_every < 1:
        p.error(f"--eval-every must be >= 1; got {args.eval_every}")
    return args


def compare(out_dirs, path):
    curves = {}
    for d in out_dirs:
        result = io_utils.read_json(os.path.join(d, "speedrun.json"))
        if result is None:
            raise ValueError(f"no readable speedrun.json in {d!r}; run the speedrun there first")
        curves[os.path.basename(os.path.normpath(d))] = result["curve"]
    print_table(curves)
    return plot(curves, path, metric="val_accuracy", title="validation accuracy against training compute")


def main(argv=None):
    args = parse_args(argv)
    if args.compare:
        path = os.path.join(os.path.commonpath([os.path.abspath(d) for d in args.compare]), "compare.png")
        print("wrote", compare(args.compare, path))
        return 0
    recipe = flags.from_args(training.Recipe, args, skip=("seed",))
    seeds = {seed: run_seed(args, recipe, seed) for seed in args.seeds}
    curve = mean_curve(seeds)
    result = {"settings": settings_of(args, recipe), "seeds": {str(s): r for s, r in seeds.items()},
              "curve": curve, "reference": {**REFERENCE, "pflop": reference_pflop()},
              "targets": TARGETS, "budgets_pflop": BUDGETS,
              "cpu": execution.cpu_info_field("model name"), "backend": keras.backend.backend()}
    io_utils.write_json(os.path.join(args.out_dir, "speedrun.json"), result, indent=2)
    label = f"ResNet-{args.depth} x{args.width:g}"
    plot({label: curve}, os.path.join(args.out_dir, "speedrun.png"),
         title=f"{label}, seeds {list(args.seeds)}")
    print_table({label: curve})
    return 0


if __name__ == "__main__":
    sys.exit(main())
