"""The residual layers: shapes, shortcuts, configs, zero-init, stochastic depth, and the pre-activation
classes against 0.1's ``preact=True`` blocks."""

import inspect
import json
import pathlib

import keras
import numpy as np
import pytest

from keras_resnet import (
    BottleneckBlock, DropPath, PreActBottleneckBlock, PreActResidualBlock, ProjectionShortcut, ResidualBlock)
from keras_resnet.models.layers import StridedPad

BLOCKS = [ResidualBlock, BottleneckBlock]
# each post-activation block and its pre-activation class
PREACT_PAIRS = [(ResidualBlock, PreActResidualBlock), (BottleneckBlock, PreActBottleneckBlock)]
FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
BASE_CONFIG_KEYS = {"name", "trainable", "dtype"}


def data(rng, *shape):
    return rng.normal(size=shape).astype("float32")


def constructor_args(cls):
    return set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("preact", [False, True], ids=["post", "pre"])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("use_projection", [None, True], ids=["auto", "forced"])
@pytest.mark.parametrize("size", [8, 7], ids=["even", "odd"])
def test_block_output_shape_matches_compute_output_shape(cls, preact, strides, use_projection, size, rng):
    x = data(rng, 2, size, size, 12)
    block = cls(6, strides=strides, use_projection=use_projection, preact=preact)
    y = block(x)
    expected = (2, -(-size // strides), -(-size // strides), 6 * cls.expansion)
    assert tuple(y.shape) == expected
    assert tuple(block.compute_output_shape(x.shape)) == expected
    assert tuple(block.compute_output_shape((None, None, None, 12))) == (None, None, None, expected[-1])
    assert np.all(np.isfinite(np.asarray(y)))


def test_strides_sit_on_the_first_3x3_convolution():
    # ResNet v1.5 (torchvision): the bottleneck's 1x1 reduction keeps the resolution
    bottleneck = BottleneckBlock(4, strides=2)
    bottleneck.build((None, 8, 8, 8))
    convs = (bottleneck.conv1, bottleneck.conv2, bottleneck.conv3)
    assert [c.strides for c in convs] == [(1, 1), (2, 2), (1, 1)]
    assert isinstance(bottleneck.pad2, StridedPad)
    assert [type(layer) for layer in bottleneck.branch_layers()].count(StridedPad) == 1  # no other pad
    basic = ResidualBlock(4, strides=2)
    basic.build((None, 8, 8, 8))
    assert [c.strides for c in (basic.conv1, basic.conv2)] == [(2, 2), (1, 1)]


def test_strided_convolution_pads_symmetrically():
    # a 3x3 stride-2 convolution sees pixel (0, 0) at the centre of its first window, as in PyTorch
    block = ResidualBlock(1, strides=2, use_projection=True)
    x = np.zeros((1, 4, 4, 1), "float32")
    x[0, 0, 0, 0] = 1.0
    block(x)
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[1, 1] = 1.0  # picks the window's centre
    block.conv1.kernel.assign(kernel)
    y = np.asarray(block.conv1(block.pad1(x)))
    assert y.shape == (1, 2, 2, 1) and y[0, 0, 0, 0] == 1.0 and y.sum() == 1.0


@pytest.mark.parametrize(
    "cls, in_channels, filters, strides, projected",
    [
        (ResidualBlock, 16, 16, 1, False),  # same shape: identity
        (ResidualBlock, 16, 16, 2, True),  # spatial size changes
        (ResidualBlock, 8, 16, 1, True),  # channels change
        (ResidualBlock, 8, 16, 2, True),  # both change
        (BottleneckBlock, 64, 16, 1, False),  # 16 * 4 == 64: identity
        (BottleneckBlock, 16, 16, 1, True),  # 16 -> 64 channels
        (BottleneckBlock, 64, 16, 2, True),
    ],
)
@pytest.mark.parametrize("preact", [False, True], ids=["post", "pre"])
def test_projection_is_created_exactly_when_shape_changes(
    cls, in_channels, filters, strides, projected, preact
):
    block = cls(filters, strides=strides, preact=preact)
    block.build((None, 8, 8, in_channels))
    assert (block.shortcut is not None) == projected
    if projected:
        assert isinstance(block.shortcut, ProjectionShortcut)
        assert block.shortcut.strides == strides
        assert block.shortcut.filters == filters * cls.expansion
        # the pre-activation projection is a bare convolution: its input is already normalised
        assert (block.shortcut.bn is None) == preact


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
def test_use_projection_true_forces_a_projection_on_matching_shapes(cls, rng):
    channels = 8 * cls.expansion
    x = data(rng, 2, 8, 8, channels)
    forced, auto = cls(8, use_projection=True), cls(8)
    forced(x), auto(x)
    assert isinstance(forced.shortcut, ProjectionShortcut)
    assert auto.shortcut is None
    assert len(forced.weights) > len(auto.weights)


@pytest.mark.parametrize("strides, in_channels", [(2, 16), (1, 8)])
def test_use_projection_false_with_mismatched_shapes_raises(strides, in_channels):
    block = ResidualBlock(16, strides=strides, use_projection=False)
    with pytest.raises(ValueError, match="use_projection=False") as err:
        block.build((None, 8, 8, in_channels))
    assert f"strides={strides}" in str(err.value) and f"{in_channels} channels" in str(err.value)


def test_use_projection_false_with_matching_shapes_keeps_the_identity(rng):
    block = ResidualBlock(16, use_projection=False)
    block(data(rng, 1, 8, 8, 16))
    assert block.shortcut is None


def test_d2l_residual_examples_map_to_residual_block(rng):
    # D2L: Residual(3) on (4, 6, 6, 3) keeps the shape; Residual(6, use_1x1conv=True, strides=2) halves it.
    x = data(rng, 4, 6, 6, 3)
    same = ResidualBlock(3)
    assert tuple(same(x).shape) == (4, 6, 6, 3) and same.shortcut is None
    down = ResidualBlock(6, strides=2, use_projection=True)
    assert tuple(down(x).shape) == (4, 3, 3, 6) and down.shortcut is not None


def test_block_with_unknown_channels_raises():
    with pytest.raises(ValueError, match="channel dimension"):
        ResidualBlock(8).build((None, 8, 8, None))


@pytest.mark.parametrize(
    "make, argument, received",
    [
        (lambda: ResidualBlock(0), "filters", "filters=0"),
        (lambda: BottleneckBlock(2.5), "filters", "filters=2.5"),
        (lambda: ResidualBlock(8, strides=3), "strides", "strides=3"),
        (lambda: ResidualBlock(8, use_projection="yes"), "use_projection", "use_projection='yes'"),
        (lambda: ResidualBlock(8, drop_path_rate=1.0), "drop_path_rate", "drop_path_rate=1.0"),
        (lambda: ProjectionShortcut(-1), "filters", "filters=-1"),
        (lambda: ProjectionShortcut(8, strides=0), "strides", "strides=0"),
        (lambda: DropPath(-0.1), "rate", "rate=-0.1"),
        (lambda: DropPath("half"), "rate", "rate='half'"),
    ],
)
def test_bad_layer_arguments_raise_naming_argument_and_value(make, argument, received):
    with pytest.raises(ValueError) as err:
        make()
    assert f"`{argument}`" in str(err.value) and received in str(err.value)


# ---------------------------------------------------------------------------------------------- config


LAYER_CASES = [
    ("basic", lambda: ResidualBlock(8, strides=2, name="blk"), 4),
    ("basic_pre", lambda: ResidualBlock(8, preact=True, use_projection=True), 8),
    ("basic_plain", lambda: ResidualBlock(8, residual=False, zero_init_residual=False), 8),
    ("basic_l2_drop", lambda: ResidualBlock(8, drop_path_rate=0.2, kernel_regularizer="l2"), 8),
    ("bottleneck", lambda: BottleneckBlock(4, strides=2), 8),
    ("bottleneck_pre", lambda: BottleneckBlock(4, preact=True), 16),
    ("projection", lambda: ProjectionShortcut(12, strides=2), 8),
    ("projection_pre", lambda: ProjectionShortcut(12, preact=True, kernel_regularizer="l2"), 8),
    ("preact_basic", lambda: PreActResidualBlock(8, strides=2, attention="se", avg_down=True), 4),
    ("preact_bottleneck", lambda: PreActBottleneckBlock(4, drop_path_rate=0.2, kernel_regularizer="l2"), 8),
    ("preact_plain", lambda: PreActResidualBlock(8, residual=False), 8),
    ("drop_path", lambda: DropPath(0.3, seed=5), 8),
    ("strided_pad", lambda: StridedPad(7), 8),
]


@pytest.mark.parametrize("make, channels", [c[1:] for c in LAYER_CASES], ids=[c[0] for c in LAYER_CASES])
def test_get_config_round_trip_gives_same_config_and_outputs(make, channels, rng, randomize_bn):
    x = data(rng, 2, 8, 8, channels)
    layer = make()
    layer(x)
    randomize_bn(layer)
    config = layer.get_config()
    # get_config is exactly the constructor arguments (plus the base Layer's)
    assert set(config) - BASE_CONFIG_KEYS == constructor_args(type(layer))

    clone = type(layer).from_config(config)
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == config
    assert [w.path for w in clone.weights] == [w.path for w in layer.weights]
    np.testing.assert_array_equal(np.asarray(clone(x, training=False)), np.asarray(layer(x, training=False)))


def test_layers_are_registered_for_safe_loading():
    for cls in (ResidualBlock, BottleneckBlock, PreActResidualBlock, PreActBottleneckBlock, ProjectionShortcut,
                DropPath, StridedPad):
        name = f"keras_resnet>{cls.__name__}"
        assert keras.saving.get_registered_object(name) is cls


def test_weight_paths_contain_sublayer_names(rng):
    basic = ResidualBlock(8, strides=2, name="blk")
    basic(data(rng, 1, 8, 8, 4))
    paths = {w.path for w in basic.weights}
    assert {"blk/conv1/kernel", "blk/bn1/gamma", "blk/conv2/kernel", "blk/bn2/moving_variance",
            "blk/shortcut/conv/kernel", "blk/shortcut/bn/gamma"} <= paths

    bottleneck = BottleneckBlock(4, preact=True, name="bot")
    bottleneck(data(rng, 1, 8, 8, 8))
    paths = {w.path for w in bottleneck.weights}
    assert {"bot/conv1/kernel", "bot/conv3/kernel", "bot/bn3/beta", "bot/shortcut/conv/kernel"} <= paths
    assert not any(p.startswith("bot/shortcut/bn") for p in paths)


# ---------------------------------------------------------------------------------------------- zero init


@pytest.mark.parametrize("cls, last", [(ResidualBlock, "bn2"), (BottleneckBlock, "bn3")])
def test_zero_init_residual_zeroes_last_bn_gamma_of_post_activation_block(cls, last, rng):
    block = cls(4)
    block(data(rng, 1, 8, 8, 8))
    for i in range(1, len(cls.kernel_sizes) + 1):
        gamma = np.asarray(getattr(block, f"bn{i}").gamma)
        expected = 0.0 if f"bn{i}" == last else 1.0
        np.testing.assert_array_equal(gamma, np.full_like(gamma, expected))


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "options", [{"preact": True}, {"residual": False}, {"zero_init_residual": False}],
    ids=["preact", "plain", "disabled"],
)
def test_zero_init_residual_is_not_applied_to_plain_or_preact_blocks(cls, options, rng):
    block = cls(4, **options)
    block(data(rng, 1, 8, 8, 8))
    for i in range(1, len(cls.kernel_sizes) + 1):
        np.testing.assert_array_equal(np.asarray(getattr(block, f"bn{i}").gamma), 1.0)


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
def test_fresh_residual_block_at_inference_is_relu_of_its_input(cls, rng):
    channels = 8 * cls.expansion
    x = data(rng, 2, 8, 8, channels)  # about half the values negative
    block = cls(8)
    y = np.asarray(block(x, training=False))
    assert block.shortcut is None
    np.testing.assert_allclose(y, np.maximum(x, 0.0), atol=1e-6)


def test_plain_block_has_no_addition(rng):
    # with F's kernels zeroed, a residual block passes relu(x) through its shortcut; a plain one gives 0
    x = data(rng, 2, 8, 8, 8)
    for residual, expected in ((True, np.maximum(x, 0.0)), (False, np.zeros_like(x))):
        block = ResidualBlock(8, residual=residual, zero_init_residual=False)
        block(x)
        for conv in (block.conv1, block.conv2):
            conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
        np.testing.assert_allclose(np.asarray(block(x, training=False)), expected, atol=1e-6)
    plain = ResidualBlock(16, strides=2, residual=False)
    plain(x)
    assert plain.shortcut is None


def zero_residual_branch(block):
    for i in range(1, len(block.kernel_sizes) + 1):
        kernel = getattr(block, f"conv{i}").kernel
        kernel.assign(np.zeros(kernel.shape, "float32"))


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
def test_preact_block_adds_without_a_final_activation(cls, rng):
    channels = 4 * cls.expansion
    x = data(rng, 2, 8, 8, channels)
    block = cls(4, preact=True)
    block(x)
    zero_residual_branch(block)
    np.testing.assert_array_equal(np.asarray(block(x, training=False)), x)  # negatives survive


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
def test_preact_projection_takes_the_normalised_input(cls, rng, randomize_bn):
    x = data(rng, 2, 8, 8, 6)
    block = cls(4, strides=2, preact=True)
    block(x)
    randomize_bn(block)
    zero_residual_branch(block)
    expected = block.shortcut.conv(keras.ops.relu(block.bn1(x, training=False)))
    np.testing.assert_allclose(np.asarray(block(x, training=False)), np.asarray(expected), atol=1e-6)


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda c: c.__name__)
def test_post_activation_projection_takes_the_raw_input(cls, rng, randomize_bn):
    x = data(rng, 2, 8, 8, 6)
    block = cls(4, strides=2)
    block(x)
    randomize_bn(block)
    zero_residual_branch(block)
    last = getattr(block, f"bn{len(cls.kernel_sizes)}")
    branch = last(keras.ops.zeros(block.compute_output_shape(x.shape)), training=False)  # BN of zeros
    expected = keras.ops.relu(branch + block.shortcut(x, training=False))
    np.testing.assert_allclose(np.asarray(block(x, training=False)), np.asarray(expected), atol=1e-5)


# ---------------------------------------------------------------------------------------------- DropPath


def test_drop_path_is_identity_at_inference(rng):
    x = data(rng, 64, 4, 4, 3)
    layer = DropPath(0.5, seed=1)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


def test_drop_path_drops_whole_samples_at_the_rate_and_rescales_the_rest(rng):
    rate, n = 0.3, 4000
    x = np.abs(data(rng, n, 4, 4, 3)) + 0.1  # strictly positive, so zero means dropped
    y = np.asarray(DropPath(rate, seed=7)(x, training=True))
    dropped = np.all(y == 0, axis=(1, 2, 3))
    kept = np.all(y != 0, axis=(1, 2, 3))
    assert np.all(dropped | kept)  # each sample is dropped whole or kept whole
    assert abs(dropped.mean() - rate) < 0.03  # 4 standard deviations of a binomial(4000, 0.3) rate
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)


def test_drop_path_with_the_same_seed_drops_the_same_samples():
    x = np.ones((256, 2, 2, 1), "float32")
    a = np.asarray(DropPath(0.5, seed=3)(x, training=True))
    b = np.asarray(DropPath(0.5, seed=3)(x, training=True))
    np.testing.assert_array_equal(a, b)


def test_drop_path_rate_zero_is_identity_in_training(rng):
    x = data(rng, 8, 4, 4, 3)
    np.testing.assert_array_equal(np.asarray(DropPath(0.0)(x, training=True)), x)


def test_block_drop_path_drops_only_the_residual_branch(rng):
    x = data(rng, 64, 4, 4, 8)
    block = ResidualBlock(8, drop_path_rate=0.5, zero_init_residual=False)
    y = np.asarray(block(x, training=True))
    branch_dropped = np.all(np.isclose(y, np.maximum(x, 0.0), atol=1e-6), axis=(1, 2, 3))
    # some samples keep F(x) (output differs from relu(x)), some lose it (output is relu(x))
    assert 10 < branch_dropped.sum() < 54
    at_inference = np.asarray(block(x, training=False))
    assert not np.any(np.all(np.isclose(at_inference, np.maximum(x, 0.0), atol=1e-6), axis=(1, 2, 3)))


# ---------------------------------------------------------------------------------------------- pre-activation


def randomized(layer, seed=0):
    """Random weights everywhere (variances positive), so that no layer of the block is an identity."""
    gen = np.random.default_rng(seed)
    for w in layer.weights:
        value = gen.normal(0.0, 0.5, w.shape).astype(w.dtype)
        w.assign(np.abs(value) + 0.5 if w.path.endswith("moving_variance") else value)
    return layer


def relative_paths(layer):
    return [w.path.split("/", 1)[1] for w in layer.weights]


@pytest.mark.parametrize("old, new", PREACT_PAIRS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("options", [{"strides": 2, "attention": "se", "avg_down": True}, {},
                                     {"residual": False}, {"use_projection": True, "strides": 2}],
                         ids=["strided_se_avgdown", "identity", "plain", "projected"])
def test_preact_class_computes_what_preact_true_computes_with_the_same_weights(old, new, options, rng):
    x = data(rng, 2, 8, 8, 8)
    before, after = old(4, preact=True, **options), new(4, **options)
    before.build(x.shape), after.build(x.shape)
    assert type(before) is old and before.preact and after.preact  # preact=True keeps its class
    assert before.preactivation + before.branch == after.preactivation + after.branch  # one figure
    assert relative_paths(after) == relative_paths(before)
    after.set_weights(randomized(before).get_weights())
    for training in (False, True):  # training: BatchNorm on the batch's statistics
        np.testing.assert_array_equal(np.asarray(after(x, training=training)),
                                      np.asarray(before(x, training=training)))
    assert after.macs(x.shape) == before.macs(x.shape)


@pytest.mark.parametrize("name", ["basic_se_avgdown", "basic_identity", "basic_plain", "bottleneck_grouped"])
def test_preact_blocks_saved_by_0_1_load_safely_and_compute_the_same(name):
    saved = json.loads((FIXTURES / "preact_blocks.json").read_text())
    case, x = saved["blocks"][name], np.asarray(saved["inputs"], "float32")
    block = keras.saving.deserialize_keras_object(case["config"], safe_mode=True)  # 0.1's config
    assert type(block).__name__ == case["config"]["class_name"] and block.preact
    twin = {ResidualBlock: PreActResidualBlock, BottleneckBlock: PreActBottleneckBlock}[type(block)](
        **{k: v for k, v in block.get_config().items() if k not in ("preact", "zero_init_residual")})
    assert block.built  # from the file's build_config
    twin.build(x.shape)
    for layer in (block, twin):
        paths = {w.path.split("/", 1)[1]: w for w in layer.weights}
        for path, value in case["weights"].items():
            paths[path.split("/", 1)[1]].assign(np.asarray(value, "float32"))
        np.testing.assert_allclose(np.asarray(layer(x, training=False)), case["outputs"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(layer(x, training=True)), case["outputs_training"],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("old, new", PREACT_PAIRS, ids=lambda c: c.__name__)
def test_preact_class_in_a_keras_file_loads_safely_with_equal_outputs(old, new, tmp_path, rng):
    inputs = keras.Input((8, 8, 8))
    y = new(4, strides=2, attention="se", name="pre")(inputs)
    y = old(4, preact=True, name="old_spelling")(y)  # both forms side by side, each under its class name
    model = keras.Model(inputs, y)
    randomized(model)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)  # no custom_objects
    assert [type(layer) for layer in loaded.layers[1:]] == [new, old]
    x = data(rng, 2, 8, 8, 8)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_pre_activation_blocks_have_no_zero_gamma_and_no_preact_argument():
    block = PreActBottleneckBlock(4)
    block.build((None, 8, 8, 16))
    assert all(np.all(np.asarray(getattr(block, f"bn{i}").gamma) == 1.0) for i in (1, 2, 3))
    assert "preact" not in constructor_args(PreActResidualBlock) | set(block.get_config())
    with pytest.raises(TypeError, match="preact"):
        PreActResidualBlock(4, preact=True)

