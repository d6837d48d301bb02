"""`build()`: parameter counts, shapes, variants, names, saving, other backends and errors."""

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import BottleneckBlock, ResidualBlock, build
from keras_resnet.models.blocks import Block
from keras_resnet.models.layers import DropPath

ROOT = Path(__file__).resolve().parents[2]

# torchvision's parameter counts (resnet18 ... resnet152, 224x224x3, 1000 classes)
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
# CIFAR ResNets at 32x32x3, 10 classes: (ours, exactly; the paper's Table 6 figure). Ours projects the
# shortcut with a 1x1 convolution where the paper pads with zeros, hence a little more.
CIFAR_PARAMS = {20: (272_474, 0.27e6), 56: (855_770, 0.85e6), 110: (1_730_714, 1.7e6)}


def small(**kwargs):
    """A narrow network on 32x32x3 images, 10 classes: fast enough to run on data."""
    options = {"width": 0.25, "input_shape": (32, 32, 3), "num_classes": 10, **kwargs}
    return build(**options)


def images(rng, n=2, shape=(32, 32, 3)):
    return rng.uniform(0, 1, (n, *shape)).astype("float32")


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def blocks_of(model):
    return [layer for layer in model.layers if isinstance(layer, Block)]


@pytest.fixture(scope="module")
def imagenet_models():
    """The five ImageNet depths at 224x224x3, built once for the module (they are never run, so their
    convolutions start at zero: no random draws for 140 million weights)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras_resnet.models.layers, "CONV_INIT", "zeros")
        return {depth: build(depth) for depth in TORCHVISION_PARAMS}


# ---------------------------------------------------------------------------------------------- counts


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_imagenet_depth_has_torchvision_parameter_count(imagenet_models, depth):
    model = imagenet_models[depth]
    assert trainable_params(model) == TORCHVISION_PARAMS[depth]
    assert model.name == f"resnet{depth}"
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)


def test_imagenet_depths_use_the_block_type_of_the_paper(imagenet_models):
    for depth, model in imagenet_models.items():
        expected = ResidualBlock if depth < 50 else BottleneckBlock
        assert {type(b) for b in blocks_of(model)} == {expected}


def test_imagenet_models_downsample_by_32(imagenet_models):
    for model in imagenet_models.values():
        assert model.get_layer("stem_pool").output.shape == (None, 56, 56, 64)
        assert tuple(blocks_of(model)[-1].output.shape[1:3]) == (7, 7)


@pytest.mark.parametrize("depth", sorted(CIFAR_PARAMS))
def test_cifar_depth_parameter_count_matches_the_paper(depth):
    model = build(depth, input_shape=(32, 32, 3), num_classes=10)
    exact, paper = CIFAR_PARAMS[depth]
    assert trainable_params(model) == exact
    assert abs(exact - paper) / paper < 0.03
    assert len(blocks_of(model)) == 3 * (depth - 2) // 6
    assert [model.get_layer(f"stage{s}_block1").output.shape[-1] for s in (1, 2, 3)] == [16, 32, 64]


# ---------------------------------------------------------------------------------------------- shapes


def test_resnet18_on_28x28x1_keeps_a_4x4_final_map(rng):
    model = build(18, width=0.25, input_shape=(28, 28, 1), num_classes=10)
    assert model.get_layer("stem_conv").strides == (1, 1)
    assert "stem_pool" not in [layer.name for layer in model.layers]
    features = keras.Model(model.input, model.get_layer("stage4_block2").output)
    assert tuple(features(images(rng, 2, (28, 28, 1))).shape) == (2, 4, 4, 128)
    out = np.asarray(model(images(rng, 2, (28, 28, 1))))
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_large_inputs_get_the_strided_stem_and_max_pool(rng):
    model = build(18, width=0.25, input_shape=(64, 64, 3), num_classes=10, include_top=False)
    assert model.get_layer("stem_conv").strides == (2, 2)
    assert tuple(model(images(rng, 1, (64, 64, 3))).shape) == (1, 2, 2, 128)


@pytest.mark.parametrize(
    "blocks, name, stage_channels",
    [
        ((2, 3, 4, 2), "resnet24_w0.25", [16, 32, 64, 128]),  # 2 convolutions x 11 blocks + 2
        ((1, 1, 1), "resnet8_w0.25", [4, 8, 16]),
    ],
)
def test_custom_blocks_make_the_listed_stages(blocks, name, stage_channels, rng):
    model = small(blocks=blocks)
    assert model.name == name
    stages = {}
    for b in blocks_of(model):
        s, n = b.name.removeprefix("stage").split("_block")
        stages.setdefault(int(s), []).append(int(n))
    assert [len(stages[s]) for s in sorted(stages)] == list(blocks)
    assert [stages[s] for s in sorted(stages)] == [list(range(1, n + 1)) for n in blocks]
    assert [model.get_layer(f"stage{s}_block1").filters for s in sorted(stages)] == stage_channels
    assert tuple(model(images(rng)).shape) == (2, 10)


def test_custom_bottleneck_blocks_use_bottleneck_depth():
    model = small(blocks=(1, 1, 1, 1), block="bottleneck")
    assert model.name == "resnet14_w0.25"  # 3 convolutions x 4 blocks + stem + classifier
    assert all(isinstance(b, BottleneckBlock) for b in blocks_of(model))


@pytest.mark.parametrize("width, channels", [(0.5, [8, 16, 32]), (1.0, [16, 32, 64]), (2.0, [32, 64, 128])])
def test_width_multiplier_scales_every_stage(width, channels):
    model = build(20, width=width, input_shape=(32, 32, 3), num_classes=10)
    assert model.get_layer("stem_conv").filters == channels[0]
    assert [model.get_layer(f"stage{s}_block3").output.shape[-1] for s in (1, 2, 3)] == channels
    assert model.get_layer("logits").kernel.shape == (channels[-1], 10)


def test_plain_variant_has_no_shortcuts_or_additions(rng):
    plain, residual = small(depth=20, variant="plain"), small(depth=20)
    assert plain.name == "plain20_w0.25"
    assert all(not b.residual and b.shortcut is None for b in blocks_of(plain))
    assert not any("shortcut" in w.path for w in plain.weights)
    assert sum(b.shortcut is not None for b in blocks_of(residual)) == 2  # first block of stages 2, 3
    # same network minus the two projections (1x1 conv + BN each: 4*8 + 2*8 and 8*16 + 2*16)
    assert trainable_params(residual) - trainable_params(plain) == (4 * 8 + 2 * 8) + (8 * 16 + 2 * 16)
    # no block starts at zero gamma: a plain block has no identity to fall back on
    assert all(np.all(np.asarray(b.bn2.gamma) == 1) for b in blocks_of(plain))
    assert tuple(plain(images(rng)).shape) == (2, 10)


def test_preact_variant_ends_with_post_bn(rng):
    model = small(depth=20, variant="preact")
    names = [layer.name for layer in model.layers]
    assert model.name == "preresnet20_w0.25"
    assert names[-6:] == ["stage3_block3", "post_bn", "post_relu", "pool", "logits", "predictions"]
    assert isinstance(model.get_layer("post_bn"), keras.layers.BatchNormalization)
    assert "stem_bn" not in names  # the first block normalises its input itself
    assert all(b.preact for b in blocks_of(model))
    assert "post_bn" not in [layer.name for layer in small(depth=20).layers]
    assert tuple(model(images(rng)).shape) == (2, 10)


def test_preact_model_files_its_blocks_weights_under_0_1_class_names(tmp_path):
    # Keras files a model's layer weights under their class name: a preact network keeps 0.1's
    # ResidualBlock/BottleneckBlock (preact=True), so that files of 0.1 and of this release read each other
    import h5py

    for block, name in (("basic", "residual_block"), ("bottleneck", "bottleneck_block")):
        model = small(blocks=(1, 1, 1), block=block, variant="preact")
        model.save_weights(tmp_path / f"{block}.weights.h5")
        with h5py.File(tmp_path / f"{block}.weights.h5") as f:
            blocks = {k for k in f["layers"] if k.startswith((name, "pre_act"))}
        assert blocks == {name, f"{name}_1", f"{name}_2"}


def test_layer_names_follow_the_contract():
    names = [layer.name for layer in small(depth=20).layers]
    assert names[:4] == ["input", "stem_conv", "stem_bn", "stem_relu"]
    assert names[-3:] == ["pool", "logits", "predictions"]
    assert [n for n in names if n.startswith("stage")] == [
        f"stage{s}_block{b}" for s in (1, 2, 3) for b in (1, 2, 3)
    ]


def test_classifier_is_a_float32_softmax_after_logits(rng):
    model = small(depth=20)
    head = model.layers[-1]
    assert head.name == "predictions" and head.dtype_policy.compute_dtype == "float32"
    assert isinstance(model.layers[-2], keras.layers.Dense) and model.layers[-2].name == "logits"
    logits_model = small(depth=20, classifier_activation=None)
    assert logits_model.layers[-1].name == "logits"
    logits_model.set_weights(model.get_weights())
    x = images(rng)
    np.testing.assert_allclose(
        np.asarray(model(x)), np.asarray(keras.ops.softmax(logits_model(x))), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("pooling, shape", [(None, (2, 8, 8, 16)), ("avg", (2, 16)), ("max", (2, 16))])
def test_include_top_false_gives_features_with_the_pooling_asked(pooling, shape, rng):
    model = small(depth=20, include_top=False, pooling=pooling)
    assert "logits" not in [layer.name for layer in model.layers]
    x = images(rng)
    out = np.asarray(model(x))
    assert out.shape == shape
    features = small(depth=20, include_top=False)
    features.set_weights(model.get_weights())
    maps = np.asarray(features(x))
    reduce = {None: lambda f: f, "avg": lambda f: f.mean(axis=(1, 2)), "max": lambda f: f.max(axis=(1, 2))}
    np.testing.assert_allclose(out, reduce[pooling](maps), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_any_channel_count_is_accepted(channels, rng):
    model = small(depth=20, input_shape=(32, 32, channels))
    assert model.get_layer("stem_conv").kernel.shape == (3, 3, channels, 4)
    out = np.asarray(model(images(rng, 2, (32, 32, channels))))
    assert out.shape == (2, 10) and np.all(np.isfinite(out))


def test_unknown_spatial_size_runs_on_several_sizes(rng):
    model = small(depth=20, input_shape=(None, None, 3))
    for side in (24, 40):
        assert tuple(model(images(rng, 1, (side, side, 3))).shape) == (1, 10)


def test_drop_path_rate_rises_linearly_from_the_first_block():
    model = small(depth=20, drop_path_rate=0.2)
    rates = [b.drop_path_rate for b in blocks_of(model)]
    np.testing.assert_allclose(rates, np.linspace(0.0, 0.2, 9))
    assert blocks_of(model)[0].drop_path is None
    assert isinstance(blocks_of(model)[-1].drop_path, DropPath)


def test_building_emits_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        small(depth=20)
        build(18, width=0.25, input_shape=(64, 64, 3), variant="preact")


def test_build_is_deterministic_under_a_seed(rng):
    keras.utils.set_random_seed(7)
    a = small(depth=20)
    keras.utils.set_random_seed(7)
    b = small(depth=20)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))


# ---------------------------------------------------------------------------------------------- saving


@pytest.mark.parametrize("options", [
    {"depth": 18},
    {"depth": 20, "variant": "preact"},
    {"depth": 20, "variant": "plain"},
    {"blocks": (1, 1, 1), "block": "bottleneck", "drop_path_rate": 0.1},
], ids=["resnet18", "preact20", "plain20", "bottleneck_droppath"])
def test_saved_keras_file_loads_without_custom_objects_and_gives_identical_outputs(
    options, tmp_path, rng, randomize_bn
):
    model = randomize_bn(small(**options))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode=True, no custom_objects
    assert loaded.name == model.name
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    assert {type(b) for b in blocks_of(loaded)} == {type(b) for b in blocks_of(model)}
    x = images(rng, 4)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)))


def test_model_weight_paths_name_stage_block_and_sublayer():
    paths = {w.path for w in small(depth=18).weights}
    assert {"stem_conv/kernel", "stem_bn/gamma", "stage1_block1/conv1/kernel", "stage1_block1/bn2/gamma",
            "stage2_block1/shortcut/conv/kernel", "stage2_block1/shortcut/bn/moving_mean",
            "logits/kernel", "logits/bias"} <= paths
    assert not any(p.startswith("stage1_block1/shortcut") for p in paths)


# ---------------------------------------------------------------------------------------------- backends


# A small ResNet (one block a stage: an identity shortcut, then three projections), logits out.
BACKEND_MODEL = {"blocks": (1, 1, 1, 1), "width": 0.25, "input_shape": (32, 32, 3), "num_classes": 10,
                 "classifier_activation": None}
BACKEND_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    import keras_resnet.models.layers
    from keras_resnet import build

    keras_resnet.models.layers.CONV_INIT = "zeros"  # every weight comes from the file: no random draws
    folder, expected_backend = sys.argv[1], sys.argv[2]
    assert keras.backend.backend() == expected_backend, keras.backend.backend()
    x = np.load(f"{folder}/x.npy")
    for variant in ("v1.5", "preact"):
        model = build(variant=variant, **%r)
        model.load_weights(f"{folder}/{variant}.weights.h5")
        np.save(f"{folder}/{variant}_{expected_backend}.npy",
                keras.ops.convert_to_numpy(model(x, training=False)))
    """
    % BACKEND_MODEL
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", [
    pytest.param("jax", marks=pytest.mark.skipif(
        importlib.util.find_spec("jax") is None, reason="jax is not installed")),
    pytest.param("torch", marks=pytest.mark.skipif(
        importlib.util.find_spec("torch") is None, reason="torch is not installed")),
])
def test_other_backend_gives_tensorflow_outputs_for_the_same_weights(backend, tmp_path, rng, randomize_bn):
    x = images(rng, 4)
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for variant in ("v1.5", "preact"):
        model = randomize_bn(build(variant=variant, **BACKEND_MODEL))
        model.save_weights(tmp_path / f"{variant}.weights.h5")
        expected[variant] = np.asarray(model(x, training=False))
    script = tmp_path / "run_backend.py"
    script.write_text(BACKEND_SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    # the limit only guards against a hang: the run takes seconds, minutes on a loaded machine
    done = subprocess.run([sys.executable, str(script), str(tmp_path), backend], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for variant, want in expected.items():
        got = np.load(tmp_path / f"{variant}_{backend}.npy")
        assert np.abs(want).max() > 0.1  # the comparison is not between two near-zero arrays
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, argument, received",
    [
        ({"depth": 19}, "depth", "depth=19"),
        ({"depth": 0}, "depth", "depth=0"),
        ({"depth": "18"}, "depth", "depth='18'"),
        ({"width": 0}, "width", "width=0"),
        ({"width": -0.5}, "width", "width=-0.5"),
        ({"num_classes": 0}, "num_classes", "num_classes=0"),
        ({"input_shape": (4, 32, 3)}, "input_shape", "(4, 32, 3)"),
        ({"input_shape": (32, 32, 0)}, "input_shape", "(32, 32, 0)"),
        ({"input_shape": (32, 32)}, "input_shape", "(32, 32)"),
        ({"input_shape": 32}, "input_shape", "input_shape=32"),
        ({"variant": "v2"}, "variant", "variant='v2'"),
        ({"block": "wide"}, "block", "block='wide'"),
        ({"include_top": False, "pooling": "sum"}, "pooling", "pooling='sum'"),
        ({"blocks": (2, 2)}, "blocks", "blocks=(2, 2)"),
        ({"blocks": (2, 0, 2)}, "blocks", "blocks=(2, 0, 2)"),
        ({"blocks": 5}, "blocks", "blocks=5"),
        ({"depth": 34, "blocks": (2, 2, 2, 2)}, "depth", "34"),
        ({"depth": 18, "block": "bottleneck"}, "block", "block='bottleneck'"),
        ({"drop_path_rate": 1.5}, "drop_path_rate", "drop_path_rate=1.5"),
        ({"drop_path_rate": -0.1}, "drop_path_rate", "drop_path_rate=-0.1"),
    ],
)
def test_bad_build_arguments_raise_naming_argument_and_value(kwargs, argument, received):
    options = {"depth": 18, "width": 0.25, "input_shape": (32, 32, 3), **kwargs}
    with pytest.raises(ValueError) as err:
        build(**options)
    message = str(err.value)
    assert f"`{argument}`" in message or f"{argument}=" in message
    assert received in message


def test_unsupported_depth_lists_supported_depths_and_mentions_blocks():
    with pytest.raises(ValueError) as err:
        build(19)
    message = str(err.value)
    assert "depth=19" in message and "blocks=" in message
    for depth in ("18", "34", "50", "101", "152", "20", "56", "110"):
        assert depth in message


def test_input_too_small_says_the_minimum_side():
    with pytest.raises(ValueError, match=r"input_shape.*\(7, 7, 1\).*at least 8 pixels"):
        build(18, input_shape=(7, 7, 1))
    with pytest.raises(ValueError, match=r"input_shape.*\(3, 32, 3\).*at least 4 pixels"):
        build(20, input_shape=(3, 32, 3))
    assert build(20, width=0.25, input_shape=(4, 4, 1)).output_shape == (None, 1000)


def test_mixed_precision_model_loads_and_runs_under_a_float32_policy(tmp_path, rng):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build(depth=8, width=0.25, input_shape=(32, 32, 3), num_classes=10, drop_path_rate=0.1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    block = model.get_layer("stage2_block1")
    assert block.conv1.dtype_policy.name == block.shortcut.conv.dtype_policy.name == "mixed_bfloat16"
    model.save(tmp_path / "bf16.keras")
    loaded = keras.saving.load_model(tmp_path / "bf16.keras")
    x = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
