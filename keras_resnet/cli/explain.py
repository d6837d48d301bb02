"""`explain` (keras_resnet.gradcam): Grad-CAM heat maps of where a .keras model finds a class."""

import os


def _explain(args):
    from keras_resnet.gradcam import heatmap as gradcam

    output = args.output or os.path.dirname(os.path.abspath(args.model))
    for result in gradcam.explain(args.model, args.images, class_name=args.class_name, output=output,
                                  layer=args.layer):
        top, explained = result["top"], result["explained"]
        print(f"{result['image']}: top {top['name']} {top['probability']:.3f}; Grad-CAM of "
              f"{explained['name']} ({explained['probability']:.3f}) in {result['file']}")


def add_parsers(sub):
    """The `explain` subcommand."""
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
