"""`keras-resnet`: build, train, search, export and run residual networks from the command line.

Every flag is named after the library argument it sets (`--batch-size` is `Recipe.batch_size`); the
recipe's, the search space's and the budget's flags are derived from their dataclasses
(`keras_resnet.utils.flags`). Errors are one line, ``keras-resnet <command>: error: ...``, with exit status
2 for bad input and 1 for a failure while running; ``--debug`` shows the traceback and TensorFlow's
native log lines instead.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out of the output

from keras_resnet.utils import flags  # noqa: E402
from keras_resnet.utils.io_utils import jsonable, quiet_native_logs  # noqa: E402
from keras_resnet.training.devices import DISTRIBUTE, PRECISIONS  # noqa: E402

TEST_SIZE_HELP = "use the first N test images only (quick experiments; evaluate reproduces a run's figure)"


def _depth(text):
    """A depth (an integer) or a name of keras_resnet.list_models(), which build() checks."""
    return int(text) if text.isdigit() else text


def add_model_args(p, input_shape=(224, 224, 3), num_classes=1000, depth=None):
    """The `build()` arguments, shared by every subcommand that builds a model."""
    from keras_resnet.models.architectures import ATTENTIONS, BLOCKS, SHORTCUTS, STEMS, VARIANTS

    g = p.add_argument_group("model (arguments of keras_resnet.build)")
    g.add_argument("--depth", "--arch", dest="depth", type=_depth, default=depth,
                   help="18/34/50/101/152, 6n+2 (20, 56, 110, ...), or a name of keras_resnet.list_models(): "
                        "resnet50d, seresnet50, resnext50_32x4d, wide_resnet50_2, ...")
    g.add_argument("--blocks", type=flags.int_list, default=None, help="custom blocks per stage, e.g. 2,3,4,2")
    g.add_argument("--block", choices=sorted(BLOCKS), default=None)
    g.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1.0)")
    g.add_argument("--stem", choices=STEMS, default=None, help="deep: three 3x3 convolutions (ResNet-C)")
    g.add_argument("--stem-width", type=int, default=None, help="channels out of the stem (default 64 * width)")
    g.add_argument("--shortcut", choices=SHORTCUTS, default=None,
                   help="avg_down: average-pool, then a stride-1 1x1 projection (ResNet-D)")
    g.add_argument("--attention", choices=[a for a in ATTENTIONS if a], default=None,
                   help="se: squeeze-and-excitation in every block")
    g.add_argument("--groups", type=int, default=None, help="groups of the bottleneck's 3x3 (ResNeXt)")
    g.add_argument("--width-per-group", type=int, default=None,
                   help="bottleneck width per group per 64 channels (4 with --groups 32: resnext50_32x4d; "
                        "128: wide_resnet50_2)")
    g.add_argument("--variant", choices=VARIANTS, default=None,
                   help="default: the name's (preact for resnetv2_*), else v1.5")
    g.add_argument("--num-classes", type=int, default=num_classes)
    g.add_argument("--input-shape", type=flags.int_list, default=input_shape, help="H,W,C, e.g. 28,28,1")
    g.add_argument("--drop-path-rate", type=float, default=0.0)


def model_kwargs(args):
    return {k: getattr(args, k) for k in ("depth", "blocks", "block", "width", "stem", "stem_width", "shortcut",
                                          "attention", "groups", "width_per_group", "variant",
                                          "num_classes", "input_shape", "drop_path_rate")}


def _summary(args):
    from keras_resnet.utils.io_utils import load_model
    from keras_resnet.models.resnet import ResNet, build, config_of
    from keras_resnet.models.summary import format_summary, summarize

    model = load_model(args.model) if args.model else build(**model_kwargs(args))
    info = summarize(model)
    if isinstance(model, ResNet):  # the architecture a saved file records
        info["build"] = jsonable(config_of(model))
    if args.json:
        print(json.dumps(info))
        return
    print(format_summary(info))
    if args.model and "build" in info:
        print("  build(" + ", ".join(f"{k}={v!r}" for k, v in info["build"].items()) + ")")


def _models(args):
    from keras_resnet.models.architectures import ARCHITECTURE_FIELDS, ARCHITECTURES

    for name, row in sorted(ARCHITECTURES.items()):
        options = dict(zip(ARCHITECTURE_FIELDS, row))
        print(f"{name:20s} " + " ".join(f"{k}={v}" for k, v in options.items()) if args.verbose else name)


def _add_models(sub):
    p = sub.add_parser("models", help="the names that --depth (--arch) takes, as keras_resnet.list_models()")
    p.add_argument("--verbose", action="store_true", help="with each name's build() arguments")
    p.set_defaults(func=_models)


def _add_summary(sub):
    p = sub.add_parser("summary", help="parameters, MACs per image and architecture of a ResNet or a .keras file")
    p.add_argument("model", nargs="?", default=None, help="a .keras file (else the model of the flags below)")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_summary)


def _train(args):
    from keras_resnet.training import run as training

    kwargs = {k: v for k, v in model_kwargs(args).items() if v is not None}
    kwargs.pop("input_shape"), kwargs.pop("num_classes")  # both come from the dataset
    if "blocks" not in kwargs:
        kwargs.setdefault("depth", 20)
    verbose = "auto" if args.verbose == "auto" else int(args.verbose)
    result = training.train(
        dataset=args.dataset, data_dir=args.data_dir, download=args.download,
        recipe=flags.from_args(training.Recipe, args), run_dir=args.run_dir, precision=args.precision,
        distribute=args.distribute, pipeline=args.pipeline, train_size=args.train_size, test_size=args.test_size,
        verbose=verbose, bad_images=args.bad_images, weights=args.weights, image_size=args.image_size,
        transform=args.transform, crop_fraction=args.crop_fraction, cache=args.cache, **kwargs)
    tta = (f", {result['test_accuracy_flip_tta']:.4f} with flip test-time augmentation"
           if "test_accuracy_flip_tta" in result else "")
    best = result["best_val_accuracy"]
    print(f"{result['model']['name']} on {args.dataset}: test accuracy {result['test_accuracy']:.4f}{tta} "
          f"({'' if best is None else f'best validation {best:.4f}, '}{result['epochs_run']} epochs); "
          f"run folder {result['run_dir']}")


def _evaluate(args):
    from keras_resnet.training import run as training

    result = training.evaluate(args.model, dataset=args.dataset, data_dir=args.data_dir,
                               download=args.download, tta=args.tta, output=args.output, test_size=args.test_size)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.model}: test accuracy {result['test_accuracy']:.4f} on {result['test_images']} images"
          + (" (with flip test-time augmentation)" if args.tta else ""))
    worst = sorted(result["per_class"]["classes"], key=lambda c: c["f1"])[:3]
    print(f"  macro F1 {result['per_class']['macro_avg']['f1']:.4f}; lowest F1: "
          + ", ".join(f"{c['class']} {c['f1']:.3f}" for c in worst))
    print("  wrote " + ", ".join(result["files"].values()))


def add_data_args(p, run_folder_default=None, bad_images=True):
    """The dataset flags (`keras_resnet.data.DataSource`), and --bad-images where images are trained on.

    `run_folder_default` is set for commands that read a saved model: their dataset defaults to the
    run folder's, and the text says what that dataset is used for.
    """
    from keras_resnet.data.common import BAD_IMAGES, DataSource

    defaults = None if run_folder_default is None else {
        "dataset": (None, f"the run's, from config.json next to the model, else fashion_mnist; {run_folder_default}")}
    flags.add_flags(p, DataSource, title="data (keras_resnet.data.DataSource)", defaults=defaults)
    if bad_images:
        p.add_argument("--bad-images", choices=BAD_IMAGES, default=BAD_IMAGES[0],
                       help="an image file of a folder that does not decode: stop, naming it (default), "
                            "or skip it")


def add_run_args(p):
    """How a run executes: precision, distribution, input pipeline (arguments of `train`)."""
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--distribute", choices=DISTRIBUTE, default="auto")
    from keras_resnet.training.run import PIPELINES

    p.add_argument("--pipeline", choices=PIPELINES, default=PIPELINES[0])


def _add_training(sub):
    """`train` and `evaluate` (keras_resnet.training)."""
    from keras_resnet.training.run import Recipe

    p = sub.add_parser("train", help="train a ResNet (resumes an interrupted run of the same command)")
    add_model_args(p)  # --depth defaults to 20 here, unless --blocks is given
    add_data_args(p)
    flags.add_flags(p, Recipe, title="recipe (keras_resnet.training.Recipe)")
    p.add_argument("--run-dir", default=None, help="default saved_models/<model>_<dataset>")
    add_run_args(p)
    p.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    p.add_argument("--test-size", type=int, default=None, help=TEST_SIZE_HELP)
    p.add_argument("--weights", default=None,
                   help="start from a checkpoint: a torchvision/timm .pth or .safetensors file, a Hub name "
                        "(timm/resnet50.a1_in1k), or a .keras/.weights.h5 file")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize images to this side (pretrained ImageNet networks need >= 64, e.g. 224)")
    p.add_argument("--transform", choices=["auto", "photo", "small"], default="auto",
                   help="an image folder's or tensorflow-datasets set's transforms: photo (random-resized-crop + flip; centre crop to "
                        "evaluate), small (resize; pad-crop + flip), auto: photo from 64 pixels up")
    p.add_argument("--crop-fraction", type=float, default=0.875,
                   help="the photo recipe's evaluation keeps this share of the resized image (default 0.875)")
    p.add_argument("--cache", choices=["auto", "memory", "none"], default="auto",
                   help="an image folder or tensorflow-datasets set: none streams it from disk, memory decodes "
                        "it once into arrays "
                        "(small-image recipe); auto: memory when it takes at most 1 GiB")
    p.add_argument("--verbose", default="auto", choices=["auto", "0", "1", "2"],
                   help="auto: a progress bar on a terminal, one line per epoch otherwise")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="test accuracy, per-class F1, confusion.png and mistakes.png of a saved "
                                        ".keras model")
    p.add_argument("model", help="path of a .keras file")
    add_data_args(p, run_folder_default="its test split is evaluated")
    p.add_argument("--tta", action="store_true",
                   help="average each test image's prediction with its mirror image's (data trained with flips)")
    p.add_argument("--test-size", type=int, default=None, help=TEST_SIZE_HELP)
    p.add_argument("--output", default=None,
                   help="folder of confusion.png, mistakes.png and evaluation.json (default: the model's folder)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_evaluate)


def _tune(args):
    from keras_resnet import tuning
    from keras_resnet.training import run as training

    tuned = ("learning_rate", "weight_decay", "epochs")  # searched (the space) or set by the budget
    result = tuning.run_search(
        flags.from_args(tuning.SearchSpace, args),
        flags.from_args(tuning.Budget, args, max_trials=args.max_trials or None),
        flags.from_args(training.Recipe, args, skip=tuned),
        data=flags.from_args(tuning.SearchData, args), retrain=flags.from_args(tuning.Retrain, args),
        setup=flags.from_args(tuning.SearchSetup, args), verbose=0 if args.quiet else 1)
    if result.get("role") == "worker":
        print(f"worker {result['tuner_id']}: no trials left after {result['search_seconds']:.0f} s")
    elif not result["trials"].get("COMPLETED"):
        counts = ", ".join(f"{n} {status.lower()}" for status, n in result["trials"].items()) or "none ran"
        raise RuntimeError(f"no trial of the search completed ({counts}; each trial's line above says why), "
                           f"so there is no result: see {result['files']['leaderboard_csv']}")


def _add_tuning(sub):
    """`tune` (keras_resnet.tuning): its flags are the fields of the tuning dataclasses and the Recipe."""
    from keras_resnet import tuning
    from keras_resnet.training import run as training

    p = sub.add_parser("tune", help="search depth and width with KerasTuner (the same command resumes it)",
                       description="Search depth and width with KerasTuner, then retrain the best model. "
                                   "Results in DIRECTORY/SEARCH_NAME: leaderboard.csv/.json, pareto.png, "
                                   "best.keras, results.json.")
    flags.add_flags(p, tuning.SearchData, title="data (keras_resnet.tuning.SearchData)")
    flags.add_flags(p, tuning.SearchSpace, title="search space (keras_resnet.tuning.SearchSpace); one value "
                                                  "fixes an entry")
    flags.add_flags(p, tuning.Budget, title="budget (keras_resnet.tuning.Budget)")
    flags.add_flags(p, tuning.SearchSetup, title="tuner and folder (keras_resnet.tuning.SearchSetup)")
    flags.add_flags(p, training.Recipe, skip=("learning_rate", "weight_decay", "epochs"),
                    title="recipe of every trial (keras_resnet.training.Recipe)")
    flags.add_flags(p, tuning.Retrain, title="retraining of the best model (keras_resnet.tuning.Retrain)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_tune)


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


def _add_export(sub):
    """`export` and `predict` (keras_resnet.export)."""
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


def _explain(args):
    from keras_resnet.gradcam import heatmap as gradcam

    output = args.output or os.path.dirname(os.path.abspath(args.model))
    for result in gradcam.explain(args.model, args.images, class_name=args.class_name, output=output,
                                  layer=args.layer):
        top, explained = result["top"], result["explained"]
        print(f"{result['image']}: top {top['name']} {top['probability']:.3f}; Grad-CAM of "
              f"{explained['name']} ({explained['probability']:.3f}) in {result['file']}")


def _add_explain(sub):
    """`explain` (keras_resnet.gradcam)."""
    p = sub.add_parser("explain", help="Grad-CAM heat maps of images: where a .keras model finds a class "
                                       "(TensorFlow backend)")
    p.add_argument("model", help="a .keras file (its run folder gives the normalisation and class names)")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...), read as `predict` reads them")
    p.add_argument("--class", dest="class_name", metavar="NAME", default=None,
                   help="the class to explain, by name or index (default: each image's top prediction)")
    p.add_argument("--output", default=None,
                   help="folder of the gradcam_<image>.png files (default: the model's folder)")
    p.add_argument("--layer", default=None, help="the feature map (default: the last residual stage)")
    p.set_defaults(func=_explain)


# Bad input (exit 2) and failures while running (exit 1), each reported in one line.
USAGE_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
RUNTIME_ERRORS = (OSError, FloatingPointError, RuntimeError, ImportError)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-resnet", description="Residual networks for Keras 3: build, train, search, export, "
                                         "predict, explain. `keras-resnet COMMAND --help` lists a command's flags.")
    parser.add_argument("--debug", action="store_true", help="tracebacks and TensorFlow's native logs")
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    with quiet_native_logs("--debug" not in argv):  # TensorFlow's C++ log lines go nowhere
        try:
            for add in (_add_models, _add_summary, _add_training, _add_tuning, _add_export, _add_explain):  # imports the modules
                add(sub)
        except KeyboardInterrupt:
            print("keras-resnet: interrupted while starting; nothing was written", file=sys.stderr)
            return 130
        _python_handles_ctrl_c()
        args = parser.parse_args(argv)
        return _run(args)


def _python_handles_ctrl_c():
    """From here on Ctrl-C is Python's KeyboardInterrupt again (during the imports, the package's own
    handler printed one line and left)."""
    import signal

    import keras_resnet

    if signal.getsignal(signal.SIGINT) is keras_resnet._interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _run(args):
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print(f"keras-resnet {args.command}: interrupted; the same command continues the run", file=sys.stderr)
        return 130
    except USAGE_ERRORS + RUNTIME_ERRORS as e:
        if args.debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"keras-resnet {args.command}: error: {message}", file=sys.stderr)
        distributed = sys.modules.get("keras_resnet.training.distributed")
        if distributed is not None and isinstance(e, distributed.LostProcessError):
            distributed.leave_after_loss()  # JAX's shutdown at exit would wait for the lost process
        return 2 if isinstance(e, USAGE_ERRORS) else 1


if __name__ == "__main__":
    sys.exit(main())
