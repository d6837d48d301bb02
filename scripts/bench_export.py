"""Benchmark of the four LiteRT export modes of a Fashion-MNIST ResNet: size, latency, accuracy.

For each of float32, float16, dynamic and int8 (`keras_resnet.export.to_tflite`, verified as usual)
it measures the file size and its ratio to float32, LiteRT latency per image with 1 and 2 threads
(median of single-image runs after warm-up), and Fashion-MNIST test accuracy; next to Keras's
single-image ``predict`` latency, LiteRT float32 GFLOP/s (2 * MACs / latency) as a fraction of the
CPU's float32 matmul peak (measured first unless given), and the targets (int8 accuracy within 0.5
points of float32, int8 file <= 26% and float16 <= 51% of float32, int8 >= 3x faster than float32).
Prints a table and writes JSON.

    python scripts/bench_export.py --model saved_models/resnet20_fashion_mnist/model.keras
    python scripts/bench_export.py --depth 20 --width 0.5 --train-epochs 1 --train-size 10000
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

import keras_resnet  # noqa: E402
from keras_resnet import data, export  # noqa: E402
from keras_resnet.training import devices as execution
from keras_resnet.utils import io_utils
from keras_resnet.export.interpreter import input_values  # noqa: E402

MODES = ("float32", "float16", "dynamic", "int8")
TARGETS = {"int8_accuracy_drop_points": 0.5, "int8_size_ratio": 0.26, "float16_size_ratio": 0.51,
           "int8_speedup": 3.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a trained Fashion-MNIST .keras file")
    p.add_argument("--depth", type=int, default=20, help="without --model: build this depth ...")
    p.add_argument("--width", type=float, default=0.5, help="... at this width ...")
    p.add_argument("--train-epochs", type=int, default=1, help="... and train it this many epochs ...")
    p.add_argument("--train-size", type=int, default=10000, help="... on the first N training images")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out-dir", default="saved_models/bench_export", help="where the files and JSON go")
    p.add_argument("--calibration-count", type=int, default=export.CALIBRATION_COUNT)
    p.add_argument("--verify-count", type=int, default=1000)
    p.add_argument("--min-agreement", type=float, default=None,
                   help="verification threshold of the quantized modes (default: the library's)")
    p.add_argument("--strip-names", action="store_true", help="export without inner tensor names")
    p.add_argument("--rgb-input", action=argparse.BooleanOptionalAction, default=None,
                   help="camera-ready files (RGB pixels in; the library's default) or the model's own input")
    p.add_argument("--runs", type=int, default=300, help="timed single-image runs per measurement")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--keras-runs", type=int, default=50)
    p.add_argument("--peak-gflops", type=float, default=0.0,
                   help="the CPU's matmul peak in GFLOP/s (default 0: measured here, float32 2048x2048)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def get_model(args, x_train, y_train, info):
    if args.model and Path(args.model).is_file():
        return export.float32_model(args.model), args.model
    if args.model:
        print(f"--model {args.model}: no such file; building and training depth={args.depth} "
              f"width={args.width} for {args.train_epochs} epoch(s) on {args.train_size} images instead.")
    else:
        print(f"no --model given; building and training depth={args.depth} width={args.width} for "
              f"{args.train_epochs} epoch(s) on {args.train_size} images.")
    keras.utils.set_random_seed(args.seed)
    model = keras_resnet.build(args.depth, width=args.width, input_shape=info["input_shape"],
                               num_classes=info["num_classes"])
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    n = args.train_size
    model.fit(data.normalize(x_train[:n], info), y_train[:n], batch_size=128, epochs=args.train_epochs,
              verbose=2)
    path = Path(args.out_dir) / f"{model.name}_trained.keras"
    io_utils.save_model(model, path)
    return model, str(path)


def matmul_peak_gflops(n=2048, runs=10, warmup=3):
    """This CPU's float32 matmul rate with TensorFlow's default threads: median of `runs` products."""
    import tensorflow as tf

    a, b = tf.random.normal((n, n), seed=1), tf.random.normal((n, n), seed=2)
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def litert_latency_ms(path, threads, runs, warmup):
    """Median milliseconds of one single-image invoke (input set included), after warm-up."""
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [1] + list(inp["shape"][1:]))
    interpreter.allocate_tensors()
    x = np.zeros([1] + list(inp["shape"][1:]), inp["dtype"])
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def keras_latency_ms(fn, x, runs, warmup):
    """Median milliseconds of ``fn(x)`` on one image, after warm-up."""
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(fn(x))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def keras_vs_litert_ms(model, path, x, x_file, runs, warmup, threads=2):
    """Median ms of Keras ``predict`` on `x` and of a LiteRT invoke on `x_file` (the same image as the
    file's input), timed in alternation so that a noisy machine slows both alike."""
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [1] + list(inp["shape"][1:]))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]

    def litert():
        interpreter.set_tensor(inp["index"], x_file.astype(inp["dtype"]))
        interpreter.invoke()

    times = {"keras": [], "litert": []}
    for i in range(warmup + runs):
        for name, fn in (("keras", lambda: model.predict(x, verbose=0)), ("litert", litert)):
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main(argv=None):
    args = parse_args(argv)
    if args.peak_gflops < 0:
        raise SystemExit(f"--peak-gflops must be >= 0 (0: measure it). Received: {args.peak_gflops}")
    if not args.peak_gflops:
        args.peak_gflops = matmul_peak_gflops()
        print(f"this CPU's float32 matmul peak (TensorFlow, 2048x2048, median of 10): "
              f"{args.peak_gflops:.0f} GFLOP/s")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test), info = data.load(args.dataset, args.data_dir)
    model, model_path = get_model(args, x_train, y_train, info)
    x_eval = data.normalize(x_test, info)
    macs = keras_resnet.summarize(model)["macs"]
    keras_acc = float(np.mean(model.predict(x_eval, batch_size=256, verbose=0).argmax(-1) == y_test))
    keras_ms = keras_latency_ms(lambda x: model.predict(x, verbose=0), x_eval[:1], args.keras_runs, 5)
    keras_call_ms = keras_latency_ms(lambda x: model(x, training=False), x_eval[:1], args.keras_runs, 5)
    calibration = data.calibration_images(x_train, info, count=args.calibration_count, seed=args.seed)

    rows, top1 = {}, {}
    for mode in MODES:
        path = out / f"{model.name}_{mode}.tflite"
        start = time.perf_counter()
        options = export.ExportOptions(
            quantize=mode, calibration_count=args.calibration_count, strip_names=args.strip_names,
            min_agreement=None if mode == "float32" else args.min_agreement, rgb_input=args.rgb_input)
        sidecar = export.to_tflite(
            model_path, path, options, calibration if mode == "int8" else None,
            verify_data=x_eval[:args.verify_count], verify_labels=y_test[:args.verify_count],
            mean=info["mean"], std=info["std"], class_names=info["class_names"])
        export_s = time.perf_counter() - start
        probs = export.run(path, input_values(sidecar, x_test), batch_size=256)
        rows[mode] = {
            "file": str(path), "bytes": sidecar["file_size"], "export_s": round(export_s, 1),
            "ms_1_thread": litert_latency_ms(path, 1, args.runs, args.warmup),
            "ms_2_threads": litert_latency_ms(path, 2, args.runs, args.warmup),
            "test_accuracy": float(np.mean(probs.argmax(-1) == y_test)),
            "input": sidecar["input"], "ops": sidecar["ops"], "batch_norm": sidecar["batch_norm"],
            "verification": sidecar["verification"],
        }
        top1[mode] = probs.argmax(-1)
    base = rows["float32"]
    x_file = input_values(export.read_sidecar(base["file"]), x_test[:1])
    paired = keras_vs_litert_ms(model, base["file"], x_eval[:1], x_file, args.keras_runs, 5)
    for mode, r in rows.items():
        r["size_ratio"] = r["bytes"] / base["bytes"]
        r["speedup_1_thread"] = base["ms_1_thread"] / r["ms_1_thread"]
        r["speedup_2_threads"] = base["ms_2_threads"] / r["ms_2_threads"]
        r["top1_agreement_with_float32"] = float(np.mean(top1[mode] == top1["float32"]))
    flops = 2 * macs
    gflops = {t: flops / (base[f"ms_{t}"] / 1000) / 1e9 for t in ("1_thread", "2_threads")}
    result = {
        "model": model.name, "model_path": model_path, "macs": macs, "dataset": args.dataset,
        "test_images": int(len(y_test)), "keras_test_accuracy": keras_acc, "keras_predict_ms": keras_ms,
        "keras_call_ms": keras_call_ms, "strip_names": args.strip_names,
        "keras_vs_litert_float32_2_threads_alternated_ms": paired,
        "litert_float32_speedup_over_keras_predict": paired["keras"] / paired["litert"],
        "litert_float32_gflops": gflops,
        "litert_float32_fraction_of_peak": {t: g / args.peak_gflops for t, g in gflops.items()},
        "peak_gflops": args.peak_gflops, "cpu": execution.cpu_info_field("model name"),
        "avx512_vnni": "avx512_vnni" in (execution.cpu_info_field("flags") or "").split(),
        "runs": args.runs, "warmup": args.warmup,
        "cpu_count": os.cpu_count(), "modes": rows,
    }
    int8 = rows["int8"]
    checks = {
        "int8_accuracy_drop_points": (100 * (base["test_accuracy"] - int8["test_accuracy"]), "<=",
                                      TARGETS["int8_accuracy_drop_points"]),
        "int8_size_ratio": (int8["size_ratio"], "<=", TARGETS["int8_size_ratio"]),
        "float16_size_ratio": (rows["float16"]["size_ratio"], "<=", TARGETS["float16_size_ratio"]),
        "int8_speedup_1_thread": (int8["speedup_1_thread"], ">=", TARGETS["int8_speedup"]),
        "int8_speedup_2_threads": (int8["speedup_2_threads"], ">=", TARGETS["int8_speedup"]),
    }
    result["targets"] = t = {
        name: {"value": value, "target": f"{op} {bound}",
               "met": bool(value <= bound if op == "<=" else value >= bound)}
        for name, (value, op, bound) in checks.items()
    }

    print(f"\nCPU: {result['cpu']} (avx512_vnni: {'yes' if result['avx512_vnni'] else 'no'})")
    print(f"{model.name} ({macs / 1e6:.1f} M MACs/image), {args.dataset} test set of {len(y_test)} images; "
          f"Keras accuracy {keras_acc:.4f}, Keras predict {keras_ms:.2f} ms/image "
          f"(model(x) {keras_call_ms:.2f} ms)")
    print(f"{'mode':8} {'KiB':>8} {'size':>6} {'ms 1thr':>8} {'ms 2thr':>8} {'x 1thr':>7} {'x 2thr':>7} "
          f"{'accuracy':>9} {'agree':>7}")  # agree: top-1 agreement with float32 on the test set
    for mode, r in rows.items():
        print(f"{mode:8} {r['bytes'] / 1024:8.1f} {r['size_ratio']:6.1%} {r['ms_1_thread']:8.3f} "
              f"{r['ms_2_threads']:8.3f} {r['speedup_1_thread']:7.2f} {r['speedup_2_threads']:7.2f} "
              f"{r['test_accuracy']:9.4f} {r['top1_agreement_with_float32']:7.4f}")
    print(f"LiteRT float32 over Keras predict (one image, timed in alternation, 2 threads): "
          f"{paired['keras']:.2f} ms vs {paired['litert']:.3f} ms = "
          f"{result['litert_float32_speedup_over_keras_predict']:.1f}x; "
          f"LiteRT float32 {gflops['1_thread']:.1f} GFLOP/s with 1 thread "
          f"({gflops['1_thread'] / args.peak_gflops:.1%} of {args.peak_gflops:g}), "
          f"{gflops['2_threads']:.1f} with 2 ({gflops['2_threads'] / args.peak_gflops:.1%})")
    for name, v in t.items():
        print(f"target {name}: {v['value']:.3f} ({v['target']}) {'met' if v['met'] else 'NOT met'}")
    json_path = out / "bench_export.json"
    io_utils.write_json(json_path, result, indent=2)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
