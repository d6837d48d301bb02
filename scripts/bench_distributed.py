"""What training across processes costs: images/s of one process with two CPU threads against a job
of two processes (keras_resnet.training.distributed, JAX + gloo on localhost) with one thread each.

    python scripts/bench_distributed.py                       # ResNet-20, Fashion-MNIST, batch 128
    python scripts/bench_distributed.py --steps 30 --repeats 2 --out saved_models/bench/distributed.json

Every set-up trains the same model on the same global batch with the package's recipe and NumPy
pipeline (each process of the job augments and feeds its half of every batch); the threads are the
CPU cores a process may run on (sched_setaffinity). The two-core set-ups do the same arithmetic; the
job adds one all-reduce of the gradients (and BatchNorm's statistics) per step, so their ratio is the
overhead of the collective and of splitting the work. One process on one core is the baseline of the
job's scaling. Images/s are counted from the end of the warm-up steps to the end of the last step.
Set-ups alternate when repeated; the median is reported.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402 -- JAX starts its CPU threads on first use, after the worker's affinity

RESULT = "BENCH_RESULT "


def worker(args):
    """One process: trains `--steps` + `--warmup` steps and prints its images/s (process 0)."""
    os.sched_setaffinity(0, [int(c) for c in args.cores.split(",")])  # before JAX sizes its threads
    from keras_resnet import training
    from keras_resnet.training import distributed, process_data
    from keras_resnet.models import build
    from keras_resnet.training.devices import distribution_scope

    steps = args.warmup + args.steps
    recipe = training.Recipe(epochs=1, batch_size=args.batch_size, val_fraction=0.0, seed=0)
    keras.utils.set_random_seed(recipe.seed)
    data = training.load_run_data("fashion_mnist", recipe, train_size=steps * args.batch_size)
    with distribution_scope("data-parallel") as devices:
        data, layout = process_data.plan(data, recipe)
        chief = distributed.is_chief()
        model = build(depth=args.depth, input_shape=data.info["input_shape"], num_classes=10)
        training.compile_model(model, recipe, steps)
        train_ds, _ = training.make_datasets(data.x_train, data.y_train, data.x_val, data.y_val, data.info,
                                             recipe, pipeline="numpy")
        (train_ds,) = process_data.process_datasets(train_ds)
        timer = StepTimer(args.warmup)
        model.fit(train_ds, epochs=1, callbacks=[timer], shuffle=False, verbose=0)
    if chief:
        print(RESULT + json.dumps({**layout, "replicas": devices, "cores": args.cores,
                                   "images_per_s": args.batch_size * args.steps / timer.seconds}), flush=True)


class StepTimer(keras.callbacks.Callback):
    """Seconds from the end of step `warmup` to the end of training, with the device work done."""

    def __init__(self, warmup):
        super().__init__()
        self.warmup, self.start, self.seconds = warmup, None, None

    def _sync(self):
        self.model.trainable_variables[0].numpy()  # waits for the step's updates

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.warmup:
            self._sync()
            self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self._sync()
        self.seconds = time.perf_counter() - self.start


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SETUPS = {"1x2": ("1 process x 2 threads", ["0,1"]), "2x1": ("2 processes x 1 thread (gloo)", ["0", "1"]),
          "1x1": ("1 process x 1 thread", ["0"])}


def run_setup(setup, args):
    """Launches one set-up: a process per entry of its core list, pinned to those cores."""
    cores = SETUPS[setup][1]
    processes = len(cores)
    port = free_port()
    procs = []
    for i, core in enumerate(cores):
        env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
        env.pop("XLA_FLAGS", None)
        for name in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                     "KERAS_DISTRIBUTION_PROCESS_ID"):
            env.pop(name, None)
        if processes > 1:
            env.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}",
                       KERAS_DISTRIBUTION_NUM_PROCESSES=str(processes), KERAS_DISTRIBUTION_PROCESS_ID=str(i))
        cmd = [sys.executable, __file__, "--worker", "--cores", core, "--depth", str(args.depth),
               "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [p.communicate(timeout=args.timeout)[0] for p in procs]
    for p, out in zip(procs, outputs):
        if p.returncode:
            raise RuntimeError(f"a benchmark process failed (exit status {p.returncode}):\n{out[-3000:]}")
    line = next(line for line in outputs[0].splitlines() if line.startswith(RESULT))
    return json.loads(line[len(RESULT):])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each set-up, in alternation")
    p.add_argument("--timeout", type=int, default=600, help="seconds for one run")
    p.add_argument("--out", default="saved_models/bench/distributed.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cores", default="0,1", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("this benchmark needs two CPU cores")
    from keras_resnet.training.devices import cpu_info_field

    runs = {setup: [] for setup in SETUPS}
    for _ in range(args.repeats):
        for setup in SETUPS:
            runs[setup].append(run_setup(setup, args))
    flags = (cpu_info_field("flags") or "").split()
    result = {"cpu": cpu_info_field("model name"), "avx512_vnni": "avx512_vnni" in flags,
              "load_average": os.getloadavg(), "model": f"ResNet-{args.depth}", "dataset": "fashion_mnist",
              "global_batch": args.batch_size, "steps": args.steps, "runs": runs}
    print(f"{result['model']} on Fashion-MNIST, global batch {args.batch_size}, {args.steps} timed steps; "
          f"CPU {result['cpu']} (avx512_vnni: {result['avx512_vnni']})")
    print(f"{'set-up':<34}{'images/s (median)':>18}{'runs':>24}")
    medians = {}
    for setup, (label, _) in SETUPS.items():
        figures = [r["images_per_s"] for r in runs[setup]]
        medians[setup] = statistics.median(figures)
        print(f"{label:<34}{medians[setup]:>18.1f}{', '.join(f'{f:.1f}' for f in figures):>24}")
    result["median_images_per_s"] = medians
    print(f"2 processes x 1 thread / 1 process x 2 threads: {medians['2x1'] / medians['1x2']:.2f}; "
          f"/ 1 process x 1 thread: {medians['2x1'] / medians['1x1']:.2f}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    from keras_resnet.utils import io_utils

    io_utils.write_json(args.out, result, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
