"""The argument groups that several subcommands share: the model (`keras_resnet.build`), the data
(`keras_resnet.data.DataSource`) and how a run executes (precision, distribution, input pipeline)."""

from keras_resnet.utils import flags
from keras_resnet.training.devices import DISTRIBUTE, PRECISIONS

TEST_SIZE_HELP = ("use a seeded sample of N test images, every class in proportion (quick experiments; evaluate "
                  "reproduces a run's figure)")


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
    from keras_resnet.training.feed import PIPELINES

    p.add_argument("--pipeline", choices=PIPELINES, default=PIPELINES[0])
