"""Knowledge distillation on Fashion-MNIST: a teacher, and students trained with and without it.

Trains the teacher once (`keras_resnet.training.train`), then every student with labels alone and
distilled from the teacher (``Recipe(teacher=...)``), at the same epochs and seeds, exports each
student to int8 LiteRT (`keras-resnet export --quantize int8`, verified) and prints the table: mean
and spread (sample standard deviation) over the seeds of the Keras test accuracy and of the int8
file's accuracy, and the gain of distillation. Writes ``distill.json`` into ``--out-dir``.

Every run has its own run folder under ``--out-dir`` (``teacher``, ``resnet8_w0.5_kd_seed1``, ...);
running the same command again resumes an interrupted run and reuses finished ones.

    python scripts/distill.py --teacher 20:1 --teacher-epochs 20 --epochs 12 --train-size 5000
    python scripts/distill.py --step-times     # what the teacher costs a training step
    python scripts/distill.py --epochs 1 --teacher-epochs 1 --train-size 1024 --seeds 0 \\
        --students 8:0.25 --teacher 8:0.5 --verify-count 200 --min-agreement 0   # smoke test
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_resnet import training  # noqa: E402
from keras_resnet.utils import io_utils  # noqa: E402


def architecture(text):
    """``"8:0.5"`` -> ``(8, 0.5)``: a CIFAR-family depth and a width."""
    try:
        depth, width = text.split(":")
        return int(depth), float(width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DEPTH:WIDTH such as 8:0.5; got {text!r}")


def name(depth, width):
    return f"resnet{depth}_w{width:g}"


def run(out, folder, depth, width, recipe, args):
    """Trains (or resumes, or reuses) one run folder; returns its run.json."""
    run_dir = os.path.join(out, folder)
    done = io_utils.read_json(os.path.join(run_dir, "run.json"))
    if done and done.get("epochs_run") == recipe.epochs:
        return done
    start = time.perf_counter()
    result = training.train(depth=depth, width=width, recipe=recipe, run_dir=run_dir, train_size=args.train_size,
                            test_size=args.test_size, precision=args.precision, verbose=args.verbose)
    print(f"{folder}: test accuracy {result['test_accuracy']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return result


def int8_accuracy(model_path, count, min_agreement=None):
    """The int8 file's accuracy (and Keras's) on the first `count` test images, from `keras-resnet export`."""
    output = model_path.replace(".keras", "_int8.tflite")
    command = [sys.executable, "-m", "keras_resnet.cli", "export", model_path, "--quantize", "int8",
               "--verify-count", str(count), "--output", output, "--json"]
    if min_agreement is not None:  # an untrained smoke-test model's near-uniform outputs flip easily
        command += ["--min-agreement", str(min_agreement), "--max-accuracy-drop", "1"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    verification = json.loads(done.stdout.strip().splitlines()[-1])["verification"]
    return {"int8": verification["tflite_accuracy"], "keras_same_images": verification["keras_accuracy"],
            "agreement": verification["top1_agreement"], "file": output}


def step_times(teacher_path, students, args):
    """Seconds of a training step (batch 128, median of 20) of each student alone and with the teacher,
    in this process's precision: what distillation costs per step."""
    import keras
    import numpy as np

    from keras_resnet import build, data
    from keras_resnet.training.devices import precision_scope
    from keras_resnet.tuning.retrain import measure_step

    (x, y), _, info = data.load("fashion_mnist")
    recipe = training.Recipe(teacher=teacher_path)
    xb, yb = data.normalize(x[:recipe.batch_size], info), y[:recipe.batch_size]
    rows = []
    with precision_scope(args.precision) as policy:
        teacher = training.load_teacher(teacher_path, info, info["input_shape"])
        for depth, width in students:
            seconds = []
            for with_teacher in (False, True):
                keras.utils.set_random_seed(0)
                model = build(depth=depth, width=width, input_shape=info["input_shape"], num_classes=10)
                model = training.distilled(model, teacher if with_teacher else None, recipe)
                training.compile_model(model, recipe, steps_per_epoch=100)
                seconds.append(measure_step(model, xb, yb, steps=20)[0])
            rows.append({"student": name(depth, width), "precision": policy, "step_seconds": seconds[0],
                         "distilled_step_seconds": seconds[1]})
            print(f"{name(depth, width):<14} {1000 * seconds[0]:7.1f} ms a step alone, {1000 * seconds[1]:7.1f} ms "
                  f"with the teacher (x{seconds[1] / seconds[0]:.2f}; {policy})", flush=True)
    return rows


def spread(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=architecture, default=(20, 2.0), help="teacher DEPTH:WIDTH (default 20:2)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="default: --epochs")
    p.add_argument("--students", type=lambda t: [architecture(s) for s in t.split(",")],
                   default=[(8, 0.5), (14, 0.5)], help="students DEPTH:WIDTH,... (default 8:0.5,14:0.5)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=lambda t: [int(s) for s in t.split(",")], default=[0, 1, 2])
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=None, help="default: the whole test split")
    p.add_argument("--distill-weight", type=float, default=0.9)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--verify-count", type=int, default=2000, help="test images of the int8 accuracy")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="the int8 verification's threshold (default export's; 0 for a smoke test)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument("--out-dir", default="saved_models/distill")
    p.add_argument("--step-times", action="store_true",
                   help="only measure a training step of each student alone and with the trained teacher")
    args = p.parse_args(argv)
    if args.step_times:
        rows = step_times(os.path.join(args.out_dir, "teacher", "model.keras"), args.students, args)
        io_utils.write_json(os.path.join(args.out_dir, "step_times.json"), rows, indent=2)
        return

    out = args.out_dir
    t_depth, t_width = args.teacher
    teacher = run(out, "teacher", t_depth, t_width,
                  training.Recipe(epochs=args.teacher_epochs or args.epochs, seed=0), args)
    teacher_path = os.path.join(out, "teacher", "model.keras")
    rows = []
    for depth, width in args.students:
        for mode in ("labels", "kd"):
            for seed in args.seeds:
                kd = {"teacher": teacher_path, "distill_weight": args.distill_weight,
                      "temperature": args.temperature} if mode == "kd" else {}
                recipe = training.Recipe(epochs=args.epochs, seed=seed, **kd)
                folder = f"{name(depth, width)}_{mode}_seed{seed}"
                result = run(out, folder, depth, width, recipe, args)
                rows.append({"student": name(depth, width), "mode": mode, "seed": seed,
                             "test_accuracy": result["test_accuracy"],
                             "fit_seconds": result["fit_seconds_this_process"],
                             **int8_accuracy(os.path.join(out, folder, "model.keras"), args.verify_count,
                                               args.min_agreement)})

    print(f"\nteacher {name(t_depth, t_width)}: test accuracy {teacher['test_accuracy']:.4f}; students "
          f"{args.epochs} epochs on {args.train_size} images, seeds {args.seeds}, "
          f"w={args.distill_weight:g}, T={args.temperature:g}")
    print(f"{'student':<14} {'training':<9} {'test accuracy':>16} {'int8 accuracy':>16} {'s/run':>6}")
    summary = []
    for student in dict.fromkeys(r["student"] for r in rows):
        means = {}
        for mode in ("labels", "kd"):
            chosen = [r for r in rows if r["student"] == student and r["mode"] == mode]
            acc, q = [r["test_accuracy"] for r in chosen], [r["int8"] for r in chosen]
            means[mode] = statistics.mean(acc)
            summary.append({"student": student, "mode": mode, "test_mean": statistics.mean(acc),
                            "test_std": spread(acc), "int8_mean": statistics.mean(q), "int8_std": spread(q),
                            "seconds_mean": statistics.mean(r["fit_seconds"] for r in chosen)})
            s = summary[-1]
            print(f"{student:<14} {'distilled' if mode == 'kd' else 'labels':<9} "
                  f"{100 * s['test_mean']:>9.2f} ± {100 * s['test_std']:.2f} "
                  f"{100 * s['int8_mean']:>9.2f} ± {100 * s['int8_std']:.2f} {s['seconds_mean']:>6.0f}")
        print(f"{student:<14} gain of distillation: {100 * (means['kd'] - means['labels']):+.2f} points")
    io_utils.write_json(os.path.join(out, "distill.json"),
                        {"args": {k: v for k, v in vars(args).items()}, "teacher": {
                            "test_accuracy": teacher["test_accuracy"], "name": name(t_depth, t_width)},
                         "runs": rows, "summary": summary}, indent=2)


if __name__ == "__main__":
    main()
