"""The training recipe: its settings (`Recipe`), the learning-rate schedule, the optimizer and loss
(`compile_model`), and the phases of a fine-tuning run.

Defaults follow the papers: SGD with Nesterov momentum 0.9, batch 128, peak learning rate 0.1 (He et
al. 2015) reached after a linear warm-up (Goyal et al. 2017), cosine decay to zero (Loshchilov & Hutter
2017), decoupled weight decay 5e-4 (Zagoruyko & Komodakis 2016) on convolution and dense kernels only,
never on BatchNorm or biases.
"""

import dataclasses
import os

import keras

from keras_resnet.data.pipelines import check_batch_size
from keras_resnet.models.losses import SmoothedSparseCrossentropy
from keras_resnet.utils import checks
from keras_resnet.utils.flags import field


SCHEDULES = ("cosine", "step")


MAX_LEARNING_RATE = 10.0


@dataclasses.dataclass
class Recipe:
    """Optimisation settings of a run (the model's settings are `build()` arguments)."""

    epochs: int = field(30, "epochs of the run")
    batch_size: int = field(128, "images per step (all devices together)")
    learning_rate: float = field(0.1, "peak learning rate")
    momentum: float = field(0.9, "Nesterov momentum")
    weight_decay: float = field(5e-4, "decoupled weight decay of the kernels")
    warmup_epochs: float = field(None, "linear warm-up epochs (default 2, or a fifth of a shorter run)",
                                 type=float)
    schedule: str = field("cosine", "learning-rate schedule after the warm-up", choices=SCHEDULES)
    label_smoothing: float = field(0.0, "label smoothing of the cross-entropy")
    erase: float = field(0.0, "random-erasing probability")
    ema: float = field(0.0, "momentum of an exponential moving average of the weights that replaces "
                            "them at the end (0: off; e.g. 0.999)")
    freeze_epochs: int = field(0, "first epochs that train the classifier alone, the (pretrained) "
                                  "backbone frozen with BatchNorm in inference mode")
    fine_tune_lr_scale: float = field(0.1, "after `freeze_epochs`, the whole network trains at "
                                           "learning_rate times this (ten times lower: the usual rule "
                                           "for pretrained layers)")
    val_fraction: float = field(0.1, "training images held out for validation")
    teacher: str = field(None, "a .keras classifier written by this package, trained on the same classes: the "
                               "student also learns its softened predictions on the very same batches "
                               "(knowledge distillation)", type=str, metavar="MODEL.keras")
    distill_weight: float = field(0.9, "with a teacher, the share w of the distillation term: (1 - w) * CE + "
                                       "w * T^2 * KL (0.9: Tian et al. 2020)")
    temperature: float = field(4.0, "with a teacher, the temperature T of both softmaxes (4: Tian et al. 2020)")
    seed: int = field(0, "seed of the weights, the split, the shuffling and the augmentation")

    def __post_init__(self):
        checks.check_int("epochs", self.epochs, 1)
        checks.check_int("batch_size", self.batch_size, 1)
        # Finite, and within what SGD can use: a learning rate above MAX_LEARNING_RATE or a decoupled
        # decay of 1 or more (each step removes learning_rate * weight_decay of every kernel) only
        # destroys the weights.
        checks.check_number("learning_rate", self.learning_rate, 0, MAX_LEARNING_RATE, low_open=True)
        checks.check_number("momentum", self.momentum, 0, 1, high_open=True)
        checks.check_number("weight_decay", self.weight_decay, 0, 1, high_open=True)
        if self.warmup_epochs is None:
            self.warmup_epochs = min(2.0, self.epochs / 5)
        checks.check_number("warmup_epochs", self.warmup_epochs, 0, self.epochs, high_open=True)
        checks.check_choice("schedule", self.schedule, SCHEDULES)
        for name in ("label_smoothing", "erase", "ema", "val_fraction"):
            checks.check_number(name, getattr(self, name), 0, 1, high_open=True)
        checks.check_int("seed", self.seed, 0)
        checks.check_int("freeze_epochs", self.freeze_epochs, 0, self.epochs - 1)
        checks.check_number("fine_tune_lr_scale", self.fine_tune_lr_scale, 0, 1, low_open=True)
        if self.teacher is not None:
            if not isinstance(self.teacher, (str, os.PathLike)) or not os.fspath(self.teacher):
                raise TypeError(f"`teacher` must be the path of a .keras file, or None. Received: "
                                f"teacher={self.teacher!r}")
            self.teacher = os.fspath(self.teacher)
        checks.check_number("distill_weight", self.distill_weight, 0, 1)
        checks.check_number("temperature", self.temperature, 0, low_open=True)


def learning_rate_schedule(recipe, steps_per_epoch):
    """Linear warm-up to the peak, then cosine decay to zero (or steps of 0.1 at 50% and 75%)."""
    total = recipe.epochs * steps_per_epoch
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    if recipe.schedule == "step":
        bounds = [int(total * 0.5), int(total * 0.75)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            bounds, [recipe.learning_rate * f for f in (1.0, 0.1, 0.01)])
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else recipe.learning_rate,
        decay_steps=max(total - warmup, 1),
        warmup_target=recipe.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def compile_model(model, recipe, steps_per_epoch):
    """Compiles `model` with the recipe's optimizer, schedule and loss (sparse integer labels)."""
    optimizer = keras.optimizers.SGD(
        learning_rate=learning_rate_schedule(recipe, steps_per_epoch),
        momentum=recipe.momentum,
        nesterov=True,
        weight_decay=recipe.weight_decay or None,
        use_ema=recipe.ema > 0,
        ema_momentum=recipe.ema or 0.99,
    )
    # Decay kernels only: BatchNorm's scale and shift and the biases stay free.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    if recipe.label_smoothing:
        loss = SmoothedSparseCrossentropy(recipe.label_smoothing, model.output_shape[-1])
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def steps_per_epoch(recipe, images):
    """Whole batches per epoch; a clear error, with a batch size that fits, when there is not one."""
    check_batch_size(recipe.batch_size, images)
    return images // recipe.batch_size


def phases(recipe):
    """``(first epoch, end epoch, recipe, head only)`` of each phase: with ``freeze_epochs``, the
    classifier alone at the recipe's learning rate, then the whole network at ``fine_tune_lr_scale``
    times it, on a schedule of its own; otherwise one phase."""
    if not recipe.freeze_epochs:
        return [(0, recipe.epochs, recipe, False)]
    frozen, rest = recipe.freeze_epochs, recipe.epochs - recipe.freeze_epochs
    head = dataclasses.replace(recipe, epochs=frozen, warmup_epochs=0.0, freeze_epochs=0)
    whole = dataclasses.replace(recipe, epochs=rest, learning_rate=recipe.learning_rate * recipe.fine_tune_lr_scale,
                                warmup_epochs=min(recipe.warmup_epochs, rest / 5), freeze_epochs=0)
    return [(0, frozen, head, True), (frozen, recipe.epochs, whole, False)]


def train_head_only(model, head_only):
    """Freezes every layer but the classifier (``logits``), or unfreezes all. A frozen BatchNorm
    layer runs in inference mode."""
    names = [layer.name for layer in model.layers]
    if head_only and "logits" not in names:
        raise ValueError("`freeze_epochs` trains the classifier alone, but this model has none "
                         "(include_top=False); pass freeze_epochs=0.")
    for layer in model.layers:
        layer.trainable = not head_only or layer.name == "logits"
