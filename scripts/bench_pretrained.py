"""Benchmark of `keras_resnet.weights.pretrained.load_weights`: conversion time and peak memory of a ResNet-50.

Writes a torchvision-layout ResNet-50 checkpoint (random weights and BatchNorm statistics, 1000
classes) as ``.safetensors`` and, where torch is installed, ``.pth``; then, for each format, loads it
into a freshly built 224x224 ResNet-50 in a fresh process per run (the model is built before the
clock starts; for ``.pth`` torch is imported before it too, timed apart) and records the time of
`load_weights` (read, check, assign) and the growth of the process's peak resident memory during it
(VmHWM, reset before the load). Reports the median over the
runs, prints a table and writes JSON. The files are read from the page cache (just written).

    python scripts/bench_pretrained.py --runs 5 --output saved_models/bench_pretrained.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--runs", type=int, default=5, help="fresh processes per format")
    p.add_argument("--work-dir", default="saved_models/bench_pretrained", help="where the checkpoints go")
    p.add_argument("--output", default="saved_models/bench_pretrained.json")
    p.add_argument("--timeout", type=float, default=600, help="seconds one loading process may take")
    p.add_argument("--worker", nargs=2, metavar=("DEPTH", "PATH"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def worker(depth, path, image_size):
    """One measurement in this (fresh) process: prints a JSON line."""
    import keras_resnet
    from keras_resnet.weights import pretrained

    model = keras_resnet.build(depth, input_shape=(image_size, image_size, 3))
    import_seconds = 0.0
    if not path.endswith(".safetensors"):  # reading a .pth imports torch: timed apart from the conversion
        start = time.perf_counter()
        import torch  # noqa: F401

        import_seconds = time.perf_counter() - start
    try:  # reset the peak resident set size to the current one (Linux)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        resettable = True
    except OSError:
        resettable = False
    rss = _status_kib("VmRSS")
    start = time.perf_counter()
    info = pretrained.load_weights(model, path)
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_growth_mib": (peak - rss) / 1024, "peak_reset": resettable,
                      "tensors": info["tensors"], "torch_import_seconds": import_seconds}))


def write_checkpoints(depth, folder):
    """A torchvision-layout checkpoint of a randomly initialised model, with random BN statistics."""
    import numpy as np
    from safetensors.numpy import save_file

    import keras_resnet
    from keras_resnet.weights import pretrained

    os.makedirs(folder, exist_ok=True)
    state = pretrained.to_state_dict(keras_resnet.build(depth))
    rng = np.random.default_rng(0)
    for key in state:
        if key.endswith(("running_mean", "running_var")):
            state[key] = rng.uniform(0.5, 1.5, state[key].shape).astype(np.float32)
    paths = {"safetensors": os.path.join(folder, f"resnet{depth}.safetensors")}
    save_file(state, paths["safetensors"])
    try:
        import torch
    except ImportError:
        return paths
    paths["pth"] = os.path.join(folder, f"resnet{depth}.pth")
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, paths["pth"])
    return paths


def cpu_name():
    from keras_resnet.training.devices import cpu_info_field

    flags = (cpu_info_field("flags") or "").split()
    return cpu_info_field("model name"), "avx512_vnni" in flags


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(int(args.worker[0]), args.worker[1], args.image_size)
    paths = write_checkpoints(args.depth, args.work_dir)
    rows = []
    for fmt, path in paths.items():
        runs = []
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, __file__, "--worker", str(args.depth), path,
                                  "--image-size", str(args.image_size)],
                                 capture_output=True, text=True, check=True, timeout=args.timeout).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        rows.append({"format": fmt, "file_mib": os.path.getsize(path) / 2**20, "runs": runs,
                     "seconds_median": statistics.median(r["seconds"] for r in runs),
                     "peak_growth_mib_median": statistics.median(r["peak_growth_mib"] for r in runs),
                     "torch_import_seconds_median": statistics.median(r["torch_import_seconds"]
                                                                     for r in runs),
                     "tensors": runs[0]["tensors"]})
    cpu, vnni = cpu_name()
    result = {"depth": args.depth, "image_size": args.image_size, "runs": args.runs, "cpu": cpu,
              "avx512_vnni": vnni, "cores": os.cpu_count(), "rows": rows}
    print(f"ResNet-{args.depth} load_weights, median of {args.runs} fresh processes; CPU: {cpu} "
          f"(avx512_vnni: {'yes' if vnni else 'no'}, {os.cpu_count()} cores)")
    print(f"{'format':<12} {'file MiB':>9} {'tensors':>8} {'seconds':>8} {'peak +MiB':>10} "
          f"{'import torch s':>15}")
    for r in rows:
        print(f"{r['format']:<12} {r['file_mib']:>9.1f} {r['tensors']:>8} {r['seconds_median']:>8.3f} "
              f"{r['peak_growth_mib_median']:>10.1f} {r['torch_import_seconds_median']:>15.2f}")
    from keras_resnet.utils.io_utils import write_json

    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    write_json(args.output, result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
