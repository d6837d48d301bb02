"""`export` and `predict` (keras_resnet.export): a verified LiteRT file, and the top classes it gives."""

import json
import os
import sys

from keras_resnet.cli.arguments import add_data_args
from keras_resnet.utils import flags


def _export(args):
    from pathlib import Path

    from keras_resnet import export
    from keras_resnet import data
    from keras_resnet.utils import io_utils
    from keras_resnet.training import run_folder
    from keras_resnet.utils.checks import check_int
    from keras_resnet.export.options import check_mode

    check_int("--verify-count", args.verify_count, minimum=1)
    options = flags.from_args(export.ExportOptions, args)
    check_int("--calibration-count", options.calibration_count, minimum=1)
    quantize = check_mode(options.quantize, options.edge)
    output = args.output or str(Path(args.model).with_name(
        f"{Path(args.model).stem}_{quantize}{'_edge' if args.edge else ''}.tflite"))
    model = io_utils.load_model(args.model)
    # the run's own dataset, statistics and class names, images resized as in training; of a folder or
    # a tensorflow-datasets set only the calibration sample and the verification images are decoded
    dataset, (x_train, _), (x_test, y_test), info, note = run_folder.load_data_for(
        model, args.model, args.dataset, args.data_dir, args.download,
        purpose="int8 calibration" if quantize == "int8" else "verification",
        train_count=options.calibration_count if quantize == "int8" else 0, test_count=args.verify_count)
    if note:
        print(note, file=sys.stderr if args.json else sys.stdout)
    class_names = info["class_names"]
    representative = None
    if quantize == "int8":
        representative = data.calibration_images(x_train, info, count=options.calibration_count)
    n = args.verify_count
    result = export.to_tflite(
        model, output, options, representative, verify_data=data.normalize(x_test[:n], info),
        verify_labels=y_test[:n], mean=info["mean"], std=info["std"], class_names=class_names,
        verbose=getattr(args, "debug", False), transforms=info.get("transforms"))
    if args.json:
        print(json.dumps(result))
        return
    v, bn, inp = result["verification"], result["batch_norm"], result["input"]
    print(f"wrote {output} ({quantize}{', edge' if args.edge else ''}, {result['file_size'] / 1024:.1f} KiB) "
          f"and {export.sidecar_path(output)}")
    pixels = "0-255 pixels, normalised inside" if inp["normalized_inside"] else "normalised images"
    print(f"  input: {inp['color_space']} {inp['dtype']} {inp['shape']} ({pixels}); metadata: image "
          f"properties, normalisation, {len(class_names or [])} class names (for MediaPipe's ImageClassifier)")
    print("  operators: " + ", ".join(f"{k} {c}" for k, c in result["ops"].items()))
    print(f"  BatchNorm: {bn['keras_layers']} Keras layers, {bn['unfolded']} left unfolded after a "
          f"convolution, {bn['standalone']} that cannot fold (pre-activation)")
    if result.get("calibration_images"):
        print(f"  int8 calibrated on {result['calibration_images']} {dataset} training images (a seeded sample)")
    print(f"  verified on {v['images']} {dataset} test images: top-1 agreement with Keras "
          f"{v['top1_agreement']:.2%}, accuracy {v['tflite_accuracy']:.2%} "
          f"(Keras {v['keras_accuracy']:.2%}), max |LiteRT - Keras| {v['max_abs_diff']:.2g}")


def _predict(args):
    import numpy as np

    from keras_resnet import export

    from keras_resnet.utils.checks import check_int

    if os.path.isdir(args.model) or not args.model.endswith(".tflite"):
        what = "a directory" if os.path.isdir(args.model) else "not a .tflite file"
        raise ValueError(f"the first argument of predict must be a .tflite file (written by export); "
                         f"{args.model!r} is {what}. Usage: keras-resnet predict MODEL.tflite IMAGE [IMAGE ...]")
    for image in args.images:
        if os.path.isdir(image):
            raise IsADirectoryError(f"{image!r} is a directory; predict takes image files (e.g. "
                                    f"{os.path.join(image, '*.png')}, expanded by the shell)")
    if not args.images and not args.idx:
        raise ValueError("predict needs image files and/or --idx PATH. Received neither.")
    check_int("--limit", args.limit, minimum=1, none_ok=True)
    sidecar = export.read_sidecar(args.model)
    shape, transforms = sidecar["input"]["shape"][1:], sidecar.get("transforms")
    names, batches = [], []
    if args.images:
        batches.append(export.load_images(args.images, shape, transforms))
        names += args.images
    if args.idx:
        from keras_resnet.data.idx import read_idx

        pixels = read_idx(args.idx, 3)[:args.limit]
        if tuple(shape) == pixels.shape[1:] + (1,):
            batches.append(pixels[..., None])
        else:
            batches.append(export.load_images(list(pixels), shape))
        names += [f"{args.idx}[{i}]" for i in range(len(pixels))]
    results = export.predict(args.model, np.concatenate(batches), top=args.top, num_threads=args.num_threads)
    for name, top in zip(names, results):
        print(f"{name}: " + ", ".join(f"{label} {p:.3f}" for _, label, p in top))
    if args.labels:
        if not args.idx:
            raise ValueError("--labels goes with --idx (the IDX label file of the same images).")
        from keras_resnet.data.idx import read_idx

        labels = read_idx(args.labels, 1)[:args.limit]
        idx_results = results[len(args.images):]
        if len(labels) != len(idx_results):
            raise ValueError(f"--labels holds {len(labels)} labels for {len(idx_results)} IDX images.")
        hits = sum(top[0][0] == y for top, y in zip(idx_results, labels))
        print(f"accuracy on {len(labels)} IDX images: {hits / len(labels):.4f}")


def add_parsers(sub):
    """The `export` and `predict` subcommands."""
    from keras_resnet.export import ExportOptions

    p = sub.add_parser("export", help="convert a .keras model to a verified LiteRT file with metadata and a "
                                      "JSON sidecar")
    p.add_argument("model", help="path of a .keras file")
    p.add_argument("--output", default=None, help="the .tflite file (default: <model>_<quantize>.tflite)")
    add_data_args(p, bad_images=False, run_folder_default="its train split calibrates int8, its test split "
                                                           "verifies, with its normalisation and class names")
    p.add_argument("--verify-count", type=int, default=1000, help="test images to verify on")
    flags.add_flags(p, ExportOptions, title="the file (keras_resnet.export.ExportOptions)")
    p.add_argument("--json", action="store_true", help="print the sidecar as JSON")
    p.set_defaults(func=_export)

    p = sub.add_parser("predict", help="top classes of images with a .tflite file from `export`")
    p.add_argument("model", help="a .tflite file with its .json sidecar next to it")
    p.add_argument("images", nargs="*", help="image files (PNG, JPEG, ...)")
    p.add_argument("--idx", default=None, help="an IDX image file, e.g. t10k-images-idx3-ubyte.gz")
    p.add_argument("--labels", default=None, help="the IDX label file of --idx, to print the accuracy")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of --idx")
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--num-threads", type=int, default=None)
    p.set_defaults(func=_predict)
