"""Where the photo recipe's training stream spends its CPU: the whole stream timed as it is, then with
one piece swapped out at a time (the antialiased resize, the accurate IDCT, the EXIF check), each in a
fresh process, one after the other. Swaps are for measuring only: they change the recipe's pixels.

    python scripts/bench_data.py --make 512 --photos imagenet --folder /tmp/bi --pipelines ""
    python scripts/profile_stream.py --folder /tmp/bi --size 224 --batch-size 64 --batches 14

Prints images per CPU-second (the process's user + system time) and per wall-second of each variant,
over the batches after the first.
"""

import argparse
import os
import resource
import subprocess
import sys
import time

VARIANTS = {
    "as it is": "base",
    "bilinear resize without antialiasing": "no-antialias",
    "fast IDCT instead of the accurate one": "fast-idct",
    "no EXIF check": "no-exif",
}


def swap(variant):
    """Replaces one function of the stream for `variant` (nothing for "base")."""
    import tensorflow as tf

    from keras_resnet.data import transforms

    if variant == "no-antialias":
        transforms.resize_crop = lambda crop, size: tf.image.resize(crop, size, method="bilinear")
    elif variant == "fast-idct":
        decode = tf.io.decode_and_crop_jpeg
        tf.io.decode_and_crop_jpeg = lambda *a, **k: decode(*a, **{**k, "dct_method": "INTEGER_FAST"})
    elif variant == "no-exif":
        transforms.exif_oriented = lambda data: tf.constant(False)


def measure(folder, size, batch_size, batches, variant):
    """``(images per CPU-second, images per wall-second)`` of `batches` training batches after the first."""
    from keras_resnet.data import folder_streams, streams

    swap(variant)
    (x, y), _, info = folder_streams.open_folder(folder, image_size=size, transform="photo", cache="none",
                                                 test_fraction=0.01)
    batches_of = iter(streams.train_stream(x, y, info, batch_size, seed=0))
    next(batches_of)

    def cpu():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    cpu0, wall0, count = cpu(), time.perf_counter(), 0
    for _ in range(batches):
        count += int(next(batches_of)[0].shape[0])
    return count / (cpu() - cpu0), count / (time.perf_counter() - wall0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", required=True, help="a folder of class folders of JPEG photos")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=14)
    p.add_argument("--timeout", type=float, default=600, help="seconds each variant's process may take")
    p.add_argument("--variant", choices=sorted(VARIANTS.values()), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:  # one variant, in this process
        print(*measure(args.folder, args.size, args.batch_size, args.batches, args.variant))
        return
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    print(f"{args.folder}, {args.size}x{args.size}, batch {args.batch_size}, {args.batches} batches after the first")
    print("| variant | images / CPU-s | images / wall-s |\n|---|---|---|")
    for name, variant in [*VARIANTS.items(), ("as it is, again", "base")]:
        out = subprocess.run([sys.executable, __file__, "--folder", args.folder, "--size", str(args.size),
                              "--batch-size", str(args.batch_size), "--batches", str(args.batches),
                              "--variant", variant], env=env, capture_output=True, text=True,
                             timeout=args.timeout, check=True)
        per_cpu, per_wall = map(float, out.stdout.split()[-2:])
        print(f"| {name} | {per_cpu:.1f} | {per_wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
