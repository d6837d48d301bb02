"""How well MACs predict the measured LiteRT latency of every architecture of a search space.

Converts every architecture of the space (each depth at each width of the grid; untrained weights,
int8 calibrated on real Fashion-MNIST training images, exactly as the latency-constrained search
does before training) with `keras_resnet.export.to_tflite`, times each file with the LiteRT
interpreter on this machine (`keras_resnet.tuning.latency`: median of single-image runs after
warm-up), and reports the Spearman rank correlation of MACs and latency and every pair of
architectures that MACs order the other way round. Prints a table; writes JSON. The default space is
`scripts/search.py`'s (depths 8, 14, 20 x widths 1 to 3 in steps of 0.5). Measurements are cached in
the output folder (``latency.json``), so a second run only reprints.

    python scripts/latency_vs_macs.py
    python scripts/latency_vs_macs.py --latency-mode float32 --latency-threads 2
"""

import argparse
import itertools
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from keras_resnet import data, tuning  # noqa: E402
from keras_resnet.utils import flags, io_utils
from keras_resnet.training.devices import cpu_info_field  # noqa: E402
from keras_resnet.tuning.latency import CALIBRATION_IMAGES, LatencyMeter  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from search import DEFAULTS  # noqa: E402  -- scripts/search.py: the space of the reproducible search

SPACE_FLAGS = ("cifar_n", "depths", "width_min", "width_max", "width_step")
MEASURE_FLAGS = ("latency_mode", "latency_threads", "latency_command")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    flags.add_flags(p, tuning.SearchSpace, only=SPACE_FLAGS)
    flags.add_flags(p, tuning.Budget, only=MEASURE_FLAGS)
    p.add_argument("--out-dir", default="saved_models/latency_vs_macs", help="cache, JSON")
    p.set_defaults(**{k: v for k, v in DEFAULTS.items() if k in SPACE_FLAGS})
    args = p.parse_args(argv)
    if args.depths is not None:
        args.cifar_n = None
    return args


def ranks(values):
    """Ranks from 1, ties sharing their average rank."""
    values = np.asarray(values, float)
    order = np.argsort(values, kind="stable")
    result = np.empty(len(values))
    result[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        result[tied] = result[tied].mean()
    return result


def spearman(x, y):
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def misordered_pairs(rows):
    """Pairs where one architecture has fewer MACs but a higher measured latency than the other."""
    pairs = []
    for a, b in itertools.combinations(rows, 2):
        if a["macs"] == b["macs"]:
            continue
        low, high = (a, b) if a["macs"] < b["macs"] else (b, a)
        if low["latency_ms"] > high["latency_ms"]:
            pairs.append({"fewer_macs": low["architecture"], "more_macs": high["architecture"],
                          "macs_ratio": round(high["macs"] / low["macs"], 3),
                          "latency_ratio": round(high["latency_ms"] / low["latency_ms"], 3)})
    return pairs


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # every conversion traces a new model
    space = flags.from_args(tuning.SearchSpace, args)
    budget = flags.from_args(tuning.Budget, args, only=MEASURE_FLAGS)
    (x_train, _), _, info = data.load("fashion_mnist")
    hypermodel = tuning.ResNetHyperModel(space, input_shape=info["input_shape"], num_classes=info["num_classes"])
    meter = LatencyMeter(hypermodel, budget, args.out_dir,
                         data.calibration_images(x_train, info, count=CALIBRATION_IMAGES),
                         {"mean": info["mean"], "std": info["std"], "class_names": info["class_names"]})
    rows = []
    print(f"{'architecture':>22} {'params':>9} {'MMACs':>8} {'ms':>8} {'p90 ms':>8} {'KiB':>8}", flush=True)
    for values in hypermodel.architectures(widths="all"):
        size, measured = hypermodel.measure(values), meter.measure(values)
        rows.append({"architecture": tuning.describe(values), **values, **size, **measured})
        r = rows[-1]
        print(f"{r['architecture']:>22} {r['params']:>9,} {r['macs'] / 1e6:>8.2f} {r['latency_ms']:>8.4f} "
              f"{r.get('p90_ms', float('nan')):>8.4f} {r['file_kb']:>8.1f}", flush=True)
    pairs = misordered_pairs(rows)
    flags_line = (cpu_info_field("flags") or "").split()
    result = {
        "space": {k: getattr(space, k) for k in SPACE_FLAGS}, "measurement": meter.describe(),
        "avx512_vnni": "avx512_vnni" in flags_line, "architectures": rows,
        "spearman_macs_latency": spearman([r["macs"] for r in rows], [r["latency_ms"] for r in rows]),
        "spearman_params_latency": spearman([r["params"] for r in rows], [r["latency_ms"] for r in rows]),
        "misordered_pairs": pairs, "pairs": len(rows) * (len(rows) - 1) // 2,
    }
    path = io_utils.write_json(os.path.join(args.out_dir, "latency_vs_macs.json"), result)
    print(f"\n{len(rows)} architectures, {budget.latency_mode}, {budget.latency_threads} thread(s), "
          f"{meter.measurer}; CPU {result['measurement']['cpu']} (avx512_vnni: {result['avx512_vnni']})")
    print(f"Spearman rank correlation of MACs and latency: {result['spearman_macs_latency']:.3f} "
          f"(parameters and latency: {result['spearman_params_latency']:.3f})")
    print(f"pairs that MACs order wrongly: {len(pairs)} of {result['pairs']}")
    for p in pairs:
        print(f"  {p['fewer_macs']} has fewer MACs than {p['more_macs']} (x{p['macs_ratio']:g}) but is slower "
              f"(x{1 / p['latency_ratio']:.3g} the latency)")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
