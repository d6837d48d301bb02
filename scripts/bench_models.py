"""Benchmark of the named architectures: parameters, MACs, LiteRT int8 latency and file size at 224.

For each name of `keras_resnet.list_models()` (or those given), at 224x224x3 with 1000 classes: the
trainable parameters, the multiply-accumulates per image (`keras_resnet.count_macs`), and (until the
time limit) the size of the int8 LiteRT file that `keras_resnet.export.to_tflite` writes (built-in
operators only, checked) and its latency with 1 thread (median of single-image runs after warm-up).
The networks are untrained: calibration and verification use seeded random images, so the figures
are the costs, not accuracies. Names run from the fewest MACs up. Prints a Markdown table and writes
JSON after every name.

    python scripts/bench_models.py --time-limit 1800
    python scripts/bench_models.py --names resnet18 resnet18d seresnet50
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from bench_export import litert_latency_ms  # noqa: E402

import keras_resnet  # noqa: E402
from keras_resnet import export  # noqa: E402
from keras_resnet.utils import io_utils
from keras_resnet.models.summary import summarize  # noqa: E402

COLUMNS = ("name", "params", "gmacs", "int8_ms_1_thread", "int8_file_mb", "convert_s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", nargs="+", default=None, help="names to measure (default: every name)")
    p.add_argument("--size", type=int, default=224, help="input side")
    p.add_argument("--time-limit", type=float, default=3600.0,
                   help="seconds after which no further name is converted (sizes and MACs still are)")
    p.add_argument("--calibration-count", type=int, default=8)
    p.add_argument("--runs", type=int, default=20, help="timed single-image runs per name")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out-dir", default="saved_models/bench_models", help="where the files and JSON go")
    p.add_argument("--keep-files", action="store_true", help="keep the .tflite files")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    names = args.names or keras_resnet.list_models()
    unknown = sorted(set(names) - set(keras_resnet.list_models()))
    if unknown:
        sys.exit(f"--names: unknown {unknown}; names: {keras_resnet.list_models()}")
    out = Path(args.out_dir)
    shape = (args.size, args.size, 3)
    rows = []
    for name in names:  # sizes first: cheap, and they order the conversions
        info = summarize(keras_resnet.build(name, input_shape=shape))
        rows.append({"name": name, "params": info["trainable_params"], "gmacs": info["macs"] / 1e9,
                     "int8_ms_1_thread": None, "int8_file_mb": None, "convert_s": None})
    rows.sort(key=lambda r: r["gmacs"])
    rng = np.random.default_rng(args.seed)
    images = rng.normal(size=(args.calibration_count, *shape)).astype(np.float32)
    start = time.perf_counter()
    for row in rows:
        if time.perf_counter() - start > args.time_limit:
            print(f"{row['name']}: not converted, past --time-limit {args.time_limit:g} s", flush=True)
            continue
        model = keras_resnet.build(row["name"], input_shape=shape)
        path = out / f"{row['name']}_int8.tflite"
        t0 = time.perf_counter()
        options = export.ExportOptions(quantize="int8", min_agreement=0.0, calibration_count=args.calibration_count)
        info = export.to_tflite(model, path, options, images, verify_data=images[:4])
        row["convert_s"] = round(time.perf_counter() - t0, 1)
        row["int8_file_mb"] = info["file_size"] / 2**20
        row["int8_ms_1_thread"] = litert_latency_ms(path, 1, args.runs, args.warmup)
        row["ops"] = info["ops"]
        if not args.keep_files:
            path.unlink()
            path.with_suffix(".json").unlink()
        print(f"{row['name']}: {row['int8_ms_1_thread']:.1f} ms, {row['int8_file_mb']:.1f} MB "
              f"(converted in {row['convert_s']} s)", flush=True)
        io_utils.write_json(out / "bench_models.json", {"args": vars(args), "rows": rows}, indent=2)
    io_utils.write_json(out / "bench_models.json", {"args": vars(args), "rows": rows}, indent=2)
    print(table(rows))


def table(rows):
    def cell(v, fmt):
        return "" if v is None else format(v, fmt)

    lines = ["| name | parameters | GMACs at 224 | LiteRT int8 ms (1 thread) | int8 file MB |",
             "|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["name"]):
        lines.append(f"| `{r['name']}` | {r['params']:,} | {r['gmacs']:.2f} | {cell(r['int8_ms_1_thread'], '.1f')} "
                     f"| {cell(r['int8_file_mb'], '.1f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
