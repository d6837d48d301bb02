"""`train` and `evaluate` (keras_resnet.training)."""

import json

from keras_resnet.cli.arguments import TEST_SIZE_HELP, add_data_args, add_model_args, add_run_args, model_kwargs
from keras_resnet.utils import flags


def _train(args):
    from keras_resnet import training

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
    from keras_resnet import training

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


def add_parsers(sub):
    """The `train` and `evaluate` subcommands."""
    from keras_resnet.training.recipe import Recipe

    p = sub.add_parser("train", help="train a ResNet (resumes an interrupted run of the same command)")
    add_model_args(p)  # --depth defaults to 20 here, unless --blocks is given
    add_data_args(p)
    flags.add_flags(p, Recipe, title="recipe (keras_resnet.training.Recipe)")
    p.add_argument("--run-dir", default=None, help="default saved_models/<model>_<dataset>")
    add_run_args(p)
    p.add_argument("--train-size", type=int, default=None, help="use a seeded sample of N training images, every class in proportion")
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
