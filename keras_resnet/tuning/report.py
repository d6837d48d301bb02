"""The results of a search: the leaderboard (rows, CSV, JSON, text), the Pareto front and its plot."""

import csv
import io
import math
import os

from keras_resnet.utils import io_utils
from keras_resnet.models.architectures import block_depth, resolve_depth
from keras_resnet.tuning.space import blocks_text, build_kwargs, describe
from keras_resnet.tuning.tuner import OBJECTIVE, last_line

COLUMNS = ("trial_id", "status", "depth", "width", "blocks", "block", "learning_rate", "weight_decay",
           "params", "macs", "latency_ms", "file_kb", "val_accuracy", "epochs", "seconds", "from_trial", "note")
_TRIAL_METRICS = ("params", "macs", "epochs", "seconds", "stopped_by_time_limit")


def leaderboard(tuner):
    """One row per trial (the columns of `COLUMNS`), best validation accuracy first. ``latency_ms`` and
    ``file_kb`` are the measured deployed file's (None when the search measures none)."""
    rows = [_row(trial, tuner.hypermodel, tuner.meter) for trial in tuner.oracle.trials.values()]
    rows.sort(key=lambda r: (r["val_accuracy"] is None, -(r["val_accuracy"] or 0.0), r["trial_id"]))
    return rows


def _row(trial, hypermodel, meter):
    values = trial.hyperparameters.values
    kwargs = build_kwargs(values)
    block, blocks = resolve_depth(kwargs.get("depth"), kwargs.get("blocks"), kwargs.get("block"))
    metric = {name: trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None
              for name in _TRIAL_METRICS}
    if metric["params"] is None:
        metric.update(hypermodel.measure(values))
    deployed = meter.measure(values) if meter is not None else {}
    note = ""
    if trial.status not in ("COMPLETED", "RUNNING"):
        note = last_line(trial.message)
    elif metric["stopped_by_time_limit"]:
        note = "stopped by the time limit"
    return {
        "trial_id": trial.trial_id,
        "status": trial.status,
        "depth": block_depth(block, blocks),
        "width": values.get("width"),
        "blocks": blocks_text(blocks),
        "block": block,
        "learning_rate": values.get("learning_rate"),
        "weight_decay": values.get("weight_decay"),
        "params": _int(metric["params"]),
        "macs": _int(metric["macs"]),
        "latency_ms": deployed.get("latency_ms"),
        "file_kb": deployed.get("file_kb"),
        "val_accuracy": trial.score if trial.status == "COMPLETED" else None,
        "epochs": _int(metric["epochs"]),
        "seconds": metric["seconds"],
        "from_trial": values.get("tuner/trial_id"),
        "note": note,
    }


def _int(value):
    return None if value is None else int(value)


def pareto_front(rows, cost="macs"):
    """The trial ids of completed rows that no other beats on both `cost` (lower) and accuracy (higher)."""
    done = sorted((r for r in rows if r["val_accuracy"] is not None and r.get(cost) is not None),
                  key=lambda r: (r[cost], -r["val_accuracy"]))
    front, best = [], -math.inf
    for row in done:
        if row["val_accuracy"] > best:
            front.append(row["trial_id"])
            best = row["val_accuracy"]
    return front


def write_leaderboard(rows, folder, extra=None, columns=COLUMNS, cost="macs"):
    """Writes ``leaderboard.csv`` and ``leaderboard.json`` (rows, the Pareto front of accuracy against
    `cost`, `extra`) into `folder`."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = io_utils.write_text(os.path.join(folder, "leaderboard.csv"), text.getvalue())
    json_path = io_utils.write_json(os.path.join(folder, "leaderboard.json"), {
        "objective": OBJECTIVE, "pareto_front": pareto_front(rows, cost), **(extra or {}), "trials": rows})
    return csv_path, json_path


_AXES = {"macs": ("MACs per image (millions)", 1e-6), "latency_ms": ("measured latency (ms)", 1.0)}


def plot_pareto(rows, path, title="", cost="macs"):
    """Validation accuracy against `cost` ("macs" or "latency_ms") for every completed trial, the Pareto
    front marked."""
    import matplotlib.ticker

    label, scale = _AXES[cost]
    done = [r for r in rows if r["val_accuracy"] is not None and r.get(cost)]
    front = set(pareto_front(rows, cost))
    fig = io_utils.new_figure(figsize=(7, 4.5))
    ax = fig.subplots()
    if done:
        points = ax.scatter([r[cost] * scale for r in done], [r["val_accuracy"] for r in done],
                            c=[r["depth"] for r in done], s=[20 + 40 * r["width"] for r in done],
                            cmap="viridis", alpha=0.7, label="trial (size: width)")
        fig.colorbar(points, ax=ax, label="depth")
        on_front = sorted((r for r in done if r["trial_id"] in front), key=lambda r: r[cost])
        xs, ys = [r[cost] * scale for r in on_front], [r["val_accuracy"] for r in on_front]
        ax.step(xs, ys, "r-", where="post", lw=1.2, label="Pareto front")
        ax.scatter(xs, ys, facecolors="none", edgecolors="r", s=120, lw=1.5)
        for r, x, y in zip(on_front, xs, ys):
            ax.annotate(f"d{r['depth']} w{r['width']:g}", (x, y), textcoords="offset points", xytext=(4, -12),
                        fontsize=8, color="r")
        costs = [r[cost] for r in done]
        if max(costs) > 4 * min(costs):
            ax.set_xscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
        ax.margins(x=0.15, y=0.1)
        ax.legend(loc="lower right")
    ax.set_xlabel(label)
    ax.set_ylabel(OBJECTIVE)
    ax.set_title(title or f"{OBJECTIVE} against {label}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return io_utils.save_figure(fig, path)


def print_summary(results, rows, top=10):
    """Prints the leaderboard's top rows and the best model's test accuracy."""
    print(format_leaderboard(rows, top))
    best = results.get("best")
    if best:
        rank = best.get("rank", 1)
        line = (f"best: trial {best['trial_id']} ({describe(best['hyperparameters'])}), {OBJECTIVE} "
                f"{best['val_accuracy']:.4f}")
        if rank > 1:
            line += f" (rank {rank}: the best that fits the retraining budget)"
        line += (f"; retrained on {best['trained_on']}: test accuracy {best['test_accuracy']:.4f} on "
                 f"{best['test_images']} images")
        if "test_accuracy_flip_tta" in best:
            line += f" ({best['test_accuracy_flip_tta']:.4f} with flip test-time augmentation)"
        print(f"{line} -> {best['model']}")
        deployed = best.get("deployed")
        if deployed and "error" not in deployed:
            print(f"deployed: {deployed['file']} ({deployed['mode']}, {deployed['file_kb']:.1f} KiB, "
                  f"{deployed['latency_ms']:.3g} ms per image): test accuracy {deployed['test_accuracy']:.4f}")
        elif deployed:
            print(f"no deployed file: {deployed['error']}")
    else:
        print("no trial completed: no best model")
    print(f"Pareto front (trials): {', '.join(results['pareto_front']) or '-'}; files in "
          f"{os.path.dirname(results['files']['leaderboard_csv'])}", flush=True)


def format_leaderboard(rows, top=10):
    """The first `top` rows as a fixed-width text table."""
    head = f"{'trial':>6} {'status':>9} {'depth':>5} {'width':>5} {'blocks':>8} {'params':>9} {'MMACs':>8} " \
           f"{'ms':>7} {'KiB':>7} {'val_acc':>7} {'epochs':>6} {'seconds':>8}  note"
    lines = [head]
    for r in rows[:top]:
        acc = "-" if r["val_accuracy"] is None else f"{r['val_accuracy']:.4f}"
        lines.append(
            f"{r['trial_id']:>6} {r['status']:>9} {r['depth']:>5} {r['width'] or 0:>5g} {r['blocks']:>8} "
            f"{r['params'] or 0:>9,} {(r['macs'] or 0) / 1e6:>8.2f} {_fig(r.get('latency_ms'), '.3g'):>7} "
            f"{_fig(r.get('file_kb'), '.1f'):>7} {acc:>7} {r['epochs'] or 0:>6} "
            f"{r['seconds'] or 0:>8.1f}  {r['note']}")
    return "\n".join(lines)


def _fig(value, spec):
    return "-" if value is None else format(value, spec)
