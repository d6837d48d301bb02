"""What the search varies (`SearchSpace`) and the models it builds (`ResNetHyperModel`).

Every hyperparameter is named after the `keras_resnet.build` or `keras_resnet.training.Recipe`
argument it sets, so a trial's values feed back into them (`build_kwargs`, `recipe_kwargs`).
"""

import dataclasses
import itertools
import threading

import keras_tuner

from keras_resnet.utils import checks
from keras_resnet import training
from keras_resnet.utils.flags import field, int_list
from keras_resnet.models.architectures import BLOCKS, SHORTCUTS, resolve_depth, supported_depths_message
from keras_resnet.models.resnet import build
from keras_resnet.models.summary import summarize
from keras_resnet.tuning import kt_compat

ARCHITECTURE_NAMES = ("depth", "blocks", "block", "width", "shortcut", "attention")  # arguments of build()
ATTENTION_CHOICES = ("none", "se")  # KerasTuner stores strings; "none" is build()'s attention=None
RECIPE_NAMES = ("learning_rate", "weight_decay")  # arguments of Recipe
DEFAULT_CIFAR_N = (1, 5)  # depths 8, 14, 20, 26, 32


@dataclasses.dataclass
class SearchSpace:
    """What the search varies. One value fixes a hyperparameter (``hp.Fixed``); a range searches it.

    The depth comes from exactly one of ``depths``, ``cifar_n`` or ``blocks`` (``cifar_n=(1, 5)``,
    depths 8 to 32, when none is given).

    Args:
        depths: depths to choose from, e.g. ``(20, 32, 44)`` or ``(18, 34)``; any depth `build` takes.
        cifar_n: ``(n_min, n_max)``: the CIFAR family's depths 6n+2 for n in that range.
        blocks: per-stage block counts to choose from, e.g. ``[(1, 1, 1), (2, 2, 2), (1, 2, 3)]``.
        block: with ``blocks``: ``"basic"`` (default), ``"bottleneck"``, or both to search it.
        width_min, width_max, width_step: the width multiplier's grid (equal ends fix it).
        shortcut: None (build()'s default, not searched), one of "projection" or "avg_down" (fixed),
            or both to search it.
        attention: None (not searched), "none" or "se" (fixed), or both to search it.
        learning_rate: None (the recipe's), one value (fixed), or ``(min, max)`` on a log scale.
        weight_decay: None (the recipe's), one value (fixed), or ``(min, max)`` on a log scale.
    """

    depths: tuple = field(None, "depths to choose from, e.g. 8,14,20", type=int_list)
    cifar_n: tuple = field(None, "N_MIN,N_MAX: depths 6n+2 for n in the range (the default, 1,5: depths 8 "
                                 "to 32)", type=int_list)
    blocks: tuple = field(None, "per-stage block counts to choose from, e.g. 1,1,1 2,2,2 1,2,3",
                          type=int_list, nargs="+")
    block: object = field(None, "with --blocks: basic, bottleneck or both", choices=sorted(BLOCKS), nargs="+")
    width_min: float = field(0.5, "smallest width multiplier")
    width_max: float = field(2.0, "largest width multiplier")
    width_step: float = field(0.25, "step of the width grid")
    shortcut: object = field(None, "projection, avg_down, or both to search it (default: build()'s)",
                             choices=SHORTCUTS, nargs="+")
    attention: object = field(None, "none, se, or both to search it (default: none, not searched)",
                              choices=ATTENTION_CHOICES, nargs="+")
    learning_rate: object = field(None, "one value fixes it, MIN MAX searches it on a log scale (default: "
                                        "the recipe's)", type=float, nargs="+", metavar="LR")
    weight_decay: object = field(None, "one value fixes it, MIN MAX searches it on a log scale (default: "
                                       "the recipe's)", type=float, nargs="+", metavar="WD")

    def __post_init__(self):
        given = [name for name in ("depths", "cifar_n", "blocks") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"Pass one of `depths`, `cifar_n` or `blocks`, not {' and '.join(given)}. "
                             f"Received: {', '.join(f'{n}={getattr(self, n)!r}' for n in given)}")
        if not given:
            self.cifar_n = DEFAULT_CIFAR_N
        if self.depths is not None:
            self.depths = _check_depths(self.depths)
        if self.cifar_n is not None:
            self.cifar_n = checks.check_int_tuple("cifar_n", self.cifar_n, {2})
            if self.cifar_n[0] > self.cifar_n[1]:
                raise ValueError("`cifar_n` must be (n_min, n_max) with 1 <= n_min <= n_max (depths 6n+2). "
                                 f"Received: cifar_n={self.cifar_n!r}")
        if self.blocks is None and self.block is not None:
            raise ValueError(f"`block` goes with `blocks`: a depth decides its own block. "
                             f"Received: block={self.block!r} without blocks")
        if self.blocks is not None:
            self.block = _check_block(self.block)
            self.blocks = _check_blocks(self.blocks, self.block)
        for name in ("width_min", "width_max", "width_step"):
            checks.check_number(name, getattr(self, name), 0, low_open=True)
        if self.width_min > self.width_max:
            raise ValueError(f"`width_min` must not exceed `width_max`. "
                             f"Received: width_min={self.width_min!r}, width_max={self.width_max!r}")
        self.shortcut = _check_choices("shortcut", self.shortcut, SHORTCUTS)
        self.attention = _check_choices("attention", self.attention, ATTENTION_CHOICES)
        self.learning_rate = _check_range("learning_rate", self.learning_rate)
        self.weight_decay = _check_range("weight_decay", self.weight_decay)

    def declare(self, hp):
        """Registers the space on a `keras_tuner.HyperParameters` and returns this trial's values."""
        values = {}
        if self.blocks is not None:
            values["blocks"] = _choice(hp, "blocks", [blocks_text(b) for b in self.blocks])
            values["block"] = _choice(hp, "block", list(self.block))
        elif self.depths is not None:
            values["depth"] = _choice(hp, "depth", list(self.depths))
        else:
            lo, hi = (6 * n + 2 for n in self.cifar_n)
            values["depth"] = hp.Fixed("depth", lo) if lo == hi else hp.Int("depth", lo, hi, step=6)
        if self.width_min == self.width_max:
            values["width"] = hp.Fixed("width", self.width_min)
        else:
            values["width"] = hp.Float("width", self.width_min, self.width_max, step=self.width_step)
        for name in ("shortcut", "attention"):
            if getattr(self, name) is not None:
                values[name] = _choice(hp, name, list(getattr(self, name)))
        for name in RECIPE_NAMES:
            spec = getattr(self, name)
            if isinstance(spec, tuple):
                values[name] = hp.Float(name, spec[0], spec[1], sampling="log")
            elif spec is not None:
                values[name] = hp.Fixed(name, spec)
        return values


def _check_depths(depths):
    if checks.is_int(depths):
        depths = (depths,)
    if not isinstance(depths, (list, tuple)) or not depths:
        raise ValueError(f"`depths` must be a non-empty list of depths. Received: depths={depths!r}")
    for depth in depths:
        try:
            resolve_depth(depth)
        except ValueError:
            raise ValueError(f"`depths` holds an unsupported depth {depth!r}. "
                             f"Received: depths={depths!r}. " + supported_depths_message()) from None
    return tuple(dict.fromkeys(depths))


def _check_block(block):
    choices = ("basic",) if block is None else (block,) if isinstance(block, str) else block
    if not isinstance(choices, (list, tuple)) or not choices or any(b not in BLOCKS for b in choices):
        raise ValueError(f"`block` must be one of {sorted(BLOCKS)} or a list of them. "
                         f"Received: block={block!r}")
    return tuple(dict.fromkeys(choices))


def _check_blocks(blocks, block_choices):
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise ValueError(f"`blocks` must be a non-empty list of per-stage block counts, e.g. "
                         f"[(1, 1, 1), (2, 2, 2)]. Received: blocks={blocks!r}")
    if all(isinstance(b, int) for b in blocks):
        blocks = (blocks,)  # a single stage list
    for stages in blocks:
        for block in block_choices:
            try:
                resolve_depth(blocks=stages, block=block)
            except ValueError as e:
                raise ValueError(f"`blocks` holds an invalid entry {stages!r}: {e}") from None
    return tuple(dict.fromkeys(tuple(stages) for stages in blocks))


def _check_choices(name, value, allowed):
    """None, one of `allowed`, or a list of them (searched) -> None or a tuple."""
    if value is None:
        return None
    values = (value,) if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not values or any(v not in allowed for v in values):
        raise ValueError(f"`{name}` must be one of {list(allowed)} or a list of them. Received: {name}={value!r}")
    return tuple(dict.fromkeys(values))


def _check_range(name, spec):
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)) and len(spec) == 1:
        spec = spec[0]
    if isinstance(spec, (list, tuple)):
        numbers = all(checks.is_number(v) and v > 0 for v in spec)
        if len(spec) != 2 or not numbers or spec[0] > spec[1]:
            raise ValueError(f"`{name}` must be one number or (min, max) with 0 < min <= max (searched on a "
                             f"log scale). Received: {name}={spec!r}")
        return (float(spec[0]), float(spec[1])) if spec[0] < spec[1] else float(spec[0])
    if not checks.is_number(spec) or spec < 0 or (name == "learning_rate" and spec == 0):
        raise ValueError(f"`{name}` must be a number {'> 0' if name == 'learning_rate' else '>= 0'} or a "
                         f"(min, max) range. Received: {name}={spec!r}")
    return float(spec)


def _choice(hp, name, values):
    return hp.Fixed(name, values[0]) if len(values) == 1 else hp.Choice(name, values)


def blocks_text(blocks):
    """``(1, 2, 3)`` -> ``"1,2,3"``, as KerasTuner stores it (its values are scalars)."""
    return ",".join(str(b) for b in blocks)


def build_kwargs(values):
    """The `keras_resnet.build` arguments among a trial's values.

    ``depth``, ``block``, ``width`` and ``shortcut`` pass through; ``blocks`` is stored as text
    (KerasTuner values are scalars), ``"1,2,3"``, and comes back as the tuple ``(1, 2, 3)``;
    ``attention`` "none" is None. KerasTuner's own ``tuner/...`` entries are left out.
    """
    kwargs = {name: values[name] for name in ("depth", "block", "width", "shortcut") if name in values}
    if "attention" in values:
        kwargs["attention"] = None if values["attention"] == "none" else values["attention"]
    if "blocks" in values:
        kwargs["blocks"] = tuple(int(b) for b in str(values["blocks"]).split(","))
    return kwargs


def recipe_kwargs(values):
    """The `keras_resnet.training.Recipe` arguments among a trial's values."""
    return {name: values[name] for name in RECIPE_NAMES if name in values}


def describe(values):
    """``depth=20 width=0.75 learning_rate=0.05``: a trial's values, KerasTuner's entries left out."""
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in values.items() if not k.startswith("tuner/"))


def architecture_key(values):
    """A hashable key of the architecture among `values` (`build_kwargs`, sorted)."""
    return tuple(sorted(build_kwargs(values).items()))


class ResNetHyperModel(keras_tuner.HyperModel):
    """A ResNet of the search space, compiled with the training recipe.

    ``build(hp)`` is `build_architecture` (the model, from `keras_resnet.build`) followed by
    `training.compile_model` with `build_recipe` (the `Recipe` of this trial). A trial trains for
    ``epochs`` epochs, or to Hyperband's ``tuner/epochs``, and its learning-rate schedule spans them; a
    Hyperband trial that continues an earlier one picks the schedule up at ``tuner/initial_epoch``.

    Args:
        space: a `SearchSpace` (default: depths 8 to 32, width 0.5 to 2).
        input_shape: (height, width, channels) of the images.
        num_classes: classes of the classifier.
        steps_per_epoch: training batches per epoch (for the schedule).
        epochs: epochs of a trial when the tuner does not decide them.
        recipe: the `Recipe` whose other settings every trial uses (batch size, momentum, ...).
        variant: the `build` variant of every model.
        teacher: a `training.Teacher` (`training.load_teacher` of ``recipe.teacher``): every trial's
            model is then a `training.Distiller` of its student, which learns from it too.

    Example:

    >>> hypermodel = ResNetHyperModel(SearchSpace(depths=(8, 14), width_min=0.25, width_max=0.5))
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    >>> model.name
    'resnet8_w0.25'
    """

    def __init__(self, space=None, *, input_shape=(28, 28, 1), num_classes=10, steps_per_epoch=100, epochs=10,
                 recipe=None, variant="v1.5", teacher=None):
        super().__init__(name="resnet")
        self.steps_per_epoch = checks.check_int("steps_per_epoch", steps_per_epoch, 1)
        self.epochs = checks.check_int("epochs", epochs, 1)
        self.space = space or SearchSpace()
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.recipe = recipe or training.Recipe()
        self.variant, self.teacher = variant, teacher
        self._sizes = {}
        self._lock = threading.Lock()

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def build_architecture(self, hp):
        """The uncompiled model of this trial's depth and width."""
        self.space.declare(hp)
        return self.model(build_kwargs(hp.values))

    def build_recipe(self, hp, epochs=None):
        """This trial's `Recipe`: the base recipe with its learning rate, weight decay and epochs."""
        self.space.declare(hp)
        epochs = epochs or hp.values.get("tuner/epochs", self.epochs)
        warmup = min(self.recipe.warmup_epochs, epochs / 5)
        return dataclasses.replace(self.recipe, epochs=epochs, warmup_epochs=warmup,
                                   **recipe_kwargs(hp.values))

    def build(self, hp):
        recipe = self.build_recipe(hp)
        model = training.distilled(self.build_architecture(hp), self.teacher, recipe)
        training.compile_model(model, recipe, self.steps_per_epoch)
        # A Hyperband trial continuing an earlier one starts its schedule where that one stopped.
        model.optimizer.iterations.assign(hp.values.get("tuner/initial_epoch", 0) * self.steps_per_epoch)
        return model

    def measure(self, values):
        """``{"params", "macs"}`` of the model of `values`, from `summarize` (cached per architecture)."""
        key = architecture_key(values)
        with self._lock:
            if key not in self._sizes:
                info = summarize(self.model(build_kwargs(values)))
                self._sizes[key] = {"params": info["params"], "macs": info["macs"]}
            return self._sizes[key]

    def model(self, kwargs):
        """The uncompiled model of `build_kwargs` `kwargs`, with this search's input, classes and variant."""
        return build(**kwargs, variant=self.variant, input_shape=self.input_shape, num_classes=self.num_classes)

    def architectures(self, hyperparameters=None, widths="smallest"):
        """Every architecture choice of the space as `build_kwargs` values: at its smallest width, or
        with ``widths="all"`` at every width of the grid."""
        hp = hyperparameters.copy() if hyperparameters is not None else keras_tuner.HyperParameters()
        self.space.declare(hp)
        options = {p.name: _options(p, widths == "all") for p in hp.space if p.name in ARCHITECTURE_NAMES}
        for combination in itertools.product(*options.values()):
            yield dict(zip(options, combination))


def _options(p, every_float):
    """The values of a hyperparameter worth measuring: all, or for a float only the least."""
    kinds = kt_compat.hyperparameter_kinds()
    if isinstance(p, kinds["Fixed"]):
        return [p.value]
    if isinstance(p, kinds["Choice"]):
        return list(p.values)
    if isinstance(p, kinds["Int"]):
        return list(range(p.min_value, p.max_value + 1, p.step or 1))
    if isinstance(p, kinds["Float"]):
        if not every_float:
            return [p.min_value]
        count = int(round((p.max_value - p.min_value) / p.step)) + 1
        return [round(p.min_value + i * p.step, 10) for i in range(count)]
    raise ValueError(f"`{p.name}` must be a Fixed, Choice, Int or Float hyperparameter. Received: {p!r}")
