"""The ResNet family as data: named architectures, their counts, checkpoints, numerics and export.

The references are timm's networks written in PyTorch with timm's layout and tensor names
(tests/timm_reference.py), given random weights and BatchNorm statistics and saved as ``.pth`` and
safetensors; the Keras model that `build(name, weights=...)` makes from them must give the same
eval-mode logits on TensorFlow and JAX.
"""

import functools
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

import timm_reference  # noqa: E402
from test_pretrained import _cached_repo, randomized  # noqa: E402

import keras_resnet  # noqa: E402
from keras_resnet.weights import assignment, layout as checkpoint_layout, pretrained  # noqa: E402
from keras_resnet.models.layers import ProjectionShortcut, SqueezeExcite, se_channels  # noqa: E402
from keras_resnet.models import ARCHITECTURES, list_models  # noqa: E402

CLASSES = 10
SIZE = 72  # odd feature maps from the third stage on (9 -> 5 -> 3): the average pool's partial windows
TOLERANCE = 1e-5  # max |keras - torch| relative to the largest torch logit
# torchvision's documented parameter counts, and timm's for its names
PUBLISHED = {"resnext50_32x4d": 25_028_904, "wide_resnet50_2": 68_883_240, "resnext101_32x8d": 88_791_336,
             "wide_resnet101_2": 126_886_696, "resnext101_64x4d": 83_455_272, "resnet50d": 25_576_264,
             "seresnet50": 28_088_024, "seresnext50_32x4d": 27_559_896, "resnet50": 25_557_032}


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def relative_error(actual, expected):
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def torch_state_shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# ------------------------------------------------------------------ the table


def test_list_models_names_every_row_of_the_one_table():
    names = list_models()
    assert names == sorted(ARCHITECTURES)
    for name in ("resnet18", "resnet152", "resnet18d", "resnet50c", "resnet50d", "seresnet50", "seresnet152",
                 "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "seresnext50_32x4d",
                 "wide_resnet50_2", "wide_resnet101_2", "resnetv2_18", "resnetv2_50", "resnetv2_101"):
        assert name in names
    assert keras_resnet.list_models() == names


def test_the_torch_reference_has_the_published_parameter_counts():
    with torch.device("meta"):
        counts = {n: sum(p.numel() for p in timm_reference.create_model(n).parameters()) for n in PUBLISHED}
    assert counts == PUBLISHED


def test_a_name_and_its_options_build_the_same_network():
    by_name = keras_resnet.build("resnet18d", input_shape=(64, 64, 3), num_classes=CLASSES)
    by_options = keras_resnet.build(18, stem="deep", shortcut="avg_down", input_shape=(64, 64, 3),
                                    num_classes=CLASSES)
    assert by_name.name == by_options.name == "resnet18d"
    assert keras_resnet.config_of(by_name) == keras_resnet.config_of(by_options)
    assert [w.path for w in by_name.weights] == [w.path for w in by_options.weights]


def _check_named(name):
    """Keras's count and tensor names for `name` equal the torch reference's."""
    with torch.device("meta"):
        module = timm_reference.create_model(name)
    model = keras_resnet.build(name, input_shape=(64, 64, 3))
    assert model.name == name
    assert trainable_params(model) == sum(p.numel() for p in module.parameters())
    if name in PUBLISHED:
        assert trainable_params(model) == PUBLISHED[name]
    shapes = torch_state_shapes(module)
    if "head.fc.weight" in shapes:  # timm ResNetV2's classifier is a 1x1 convolution: a Dense kernel here
        shapes["head.fc.weight"] = shapes["head.fc.weight"][:2]
    key_of = checkpoint_layout.key_function(keras_resnet.config_of(model))
    keys = {key_of(w.path): checkpoint_layout.in_file_layout(w.shape) for w in model.weights}
    assert None not in keys and len(keys) == len(model.weights)
    assert keys == {k: v for k, v in shapes.items() if not k.endswith("num_batches_tracked")}
    arch = pretrained.read_architecture(shapes)
    assert arch["name"] == name
    assert not assignment.model_problems(model, keras_resnet.config_of(model), arch)


def test_resnet18d_has_the_reference_count_and_tensor_names():
    _check_named("resnet18d")


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_named_architecture_has_the_reference_count_and_tensor_names(name, monkeypatch):
    # Only the shapes and names are compared: zeros instead of the random draws of 60 million weights.
    monkeypatch.setattr(keras_resnet.models.layers, "CONV_INIT", "zeros")
    _check_named(name)


def test_count_macs_counts_a_grouped_convolution_once_per_group():
    plain = keras_resnet.build(blocks=(1, 1, 1, 1), block="bottleneck", input_shape=(64, 64, 3))
    grouped = keras_resnet.build(blocks=(1, 1, 1, 1), block="bottleneck", groups=4, width_per_group=16,
                                 input_shape=(64, 64, 3))
    conv2 = [m.get_layer(f"stage{s}_block1").conv2 for m in (plain, grouped) for s in (1,)]
    assert conv2[0].kernel.shape[2] == 4 * conv2[1].kernel.shape[2]
    difference = keras_resnet.count_macs(plain) - keras_resnet.count_macs(grouped)
    # only the 3x3s differ: stage s has (64 * 2**(s-1))**2 * 9 MACs per pixel, a quarter with 4 groups
    pixels = [16 * 16, 8 * 8, 4 * 4, 2 * 2]
    assert difference == sum(p * (64 * 2 ** s) ** 2 * 9 * 3 // 4 for s, p in enumerate(pixels))


# ------------------------------------------------------------------ options on other families


def test_cifar_family_takes_the_average_pool_shortcut_and_se(rng):
    model = keras_resnet.build(20, shortcut="avg_down", attention="se", input_shape=(28, 28, 1),
                               num_classes=CLASSES)
    block = model.get_layer("stage3_block1")
    assert isinstance(block.se, SqueezeExcite) and block.shortcut.pool is not None
    assert block.shortcut.conv.strides == (1, 1)
    assert model.name == "resnet20_avg_down_se"  # and so its default run folder differs from resnet20's
    assert model(rng.normal(size=(2, 28, 28, 1)).astype("float32")).shape == (2, CLASSES)
    plain = keras_resnet.build(20, input_shape=(28, 28, 1), num_classes=CLASSES)
    # SE adds 2 * (C * C_se) + C_se + C per block; avg_down adds no parameter
    extra = sum(2 * c * se_channels(c) + se_channels(c) + c for c in (16, 32, 64) for _ in range(3))
    assert trainable_params(model) - trainable_params(plain) == extra


@pytest.mark.parametrize("kwargs, argument, received", [
    ({"depth": "resnet50x"}, "depth", "resnet50d"),  # suggests the names close to it
    ({"depth": "resnet50d", "stem": "default"}, "stem", "'resnet50d', which has stem='deep'"),
    ({"depth": "resnetv2_18", "variant": "v1.5"}, "variant", "'resnetv2_18', which has variant='preact'"),
    ({"depth": 20, "stem": "deep"}, "stem", "small-input stem"),
    ({"depth": 18, "stem": "deep", "input_shape": (32, 32, 3)}, "stem", "under 64 pixels"),
    ({"depth": 18, "groups": 32}, "groups", "groups=32"),
    ({"depth": 20, "width_per_group": 128}, "width_per_group", "bottleneck"),
    ({"depth": 20, "shortcut": "avg_down", "variant": "plain"}, "shortcut", "variant='plain'"),
    ({"depth": 20, "shortcut": "avgpool"}, "shortcut", "shortcut='avgpool'"),
    ({"depth": 20, "attention": "eca"}, "attention", "attention='eca'"),
    ({"depth": 50, "groups": 0}, "groups", "groups=0"),
    ({"depth": 50, "stem_width": 1, "stem": "deep"}, "stem_width", "stem_width=1"),
])
def test_options_that_do_not_apply_raise_naming_the_argument(kwargs, argument, received):
    options = {"input_shape": (64, 64, 3), "num_classes": CLASSES, **kwargs}
    with pytest.raises(ValueError) as error:
        keras_resnet.build(**options)
    assert argument in str(error.value) and received in str(error.value), str(error.value)


# ------------------------------------------------------------------ layers


def test_average_pool_shortcut_equals_torchs_ceil_mode_pool_without_padding(rng):
    x = rng.normal(size=(2, 7, 9, 4)).astype("float32")  # odd sides: partial last windows
    layer = ProjectionShortcut(6, strides=2, avg_down=True, preact=True)
    y = layer(x)
    pool = torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
    conv = torch.nn.Conv2d(4, 6, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(layer.conv.kernel.numpy().transpose(3, 2, 0, 1)))
        expected = conv(pool(torch.from_numpy(x.transpose(0, 3, 1, 2)))).numpy().transpose(0, 2, 3, 1)
    assert y.shape == (2, 4, 5, 6)
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-5)


def test_squeeze_excite_gates_each_channel_by_its_global_average(rng):
    x = rng.normal(size=(2, 5, 5, 32)).astype("float32")
    se = SqueezeExcite(32)
    y = np.asarray(se(x))
    w1, b1 = se.fc1.kernel.numpy()[0, 0], se.fc1.bias.numpy()
    w2, b2 = se.fc2.kernel.numpy()[0, 0], se.fc2.bias.numpy()
    s = np.maximum(x.mean(axis=(1, 2)) @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(y, x * (1 / (1 + np.exp(-s)))[:, None, None, :], rtol=1e-5, atol=1e-6)
    assert se.fc1.filters == 8  # 32 / 16 = 2, rounded up to timm's divisor 8


@pytest.mark.parametrize("make", [
    lambda: SqueezeExcite(16),
    lambda: keras_resnet.BottleneckBlock(8, strides=2, groups=4, width_per_group=16, attention="se",
                                         avg_down=True),
    lambda: keras_resnet.ResidualBlock(16, strides=2, attention="se", avg_down=True, preact=True),
], ids=["se", "seresnext_block", "preact_se_avg_down_block"])
def test_new_layers_pass_keras_layer_tests(make):
    from keras.src.testing import TestCase

    layer = make()
    TestCase().run_layer_test(
        type(layer), init_kwargs=layer.get_config(), input_shape=(2, 8, 8, 16),
        expected_output_shape=tuple(layer.compute_output_shape((2, 8, 8, 16))),
        run_training_check=False, supports_masking=False)


@pytest.mark.slow
def test_every_variant_saved_as_keras_loads_with_safe_mode(tmp_path, rng):
    x = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    for name, kwargs in {"resnet18d": {"depth": "resnet18d"},
                         "seresnext": {"blocks": (1, 1, 1, 1), "block": "bottleneck", "stem": "deep",
                                       "shortcut": "avg_down", "attention": "se", "groups": 4,
                                       "width_per_group": 16}}.items():
        model = keras_resnet.build(**kwargs, width=0.25, input_shape=(64, 64, 3), num_classes=CLASSES)
        model.save(tmp_path / f"{name}.keras")
        loaded = keras.saving.load_model(tmp_path / f"{name}.keras", safe_mode=True)
        assert keras_resnet.config_of(loaded) == keras_resnet.config_of(model)
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# ------------------------------------------------------------------ checkpoints and numerics


# case: (torch reference, build() arguments)
CASES = {
    "resnet18d": (dict(name="resnet18d"), dict(depth="resnet18d")),
    "seresnet18": (dict(name="seresnet18"), dict(depth="seresnet18")),
    # seresnext26d_32x4d's blocks with one block per stage: deep stem, average pool, SE, 32 groups
    "seresnext_d_1111": (dict(layers=[1, 1, 1, 1], block=timm_reference.Bottleneck, cardinality=32,
                              base_width=4, stem_width=32, stem_type="deep", avg_down=True, attn="se"),
                         dict(blocks=(1, 1, 1, 1), block="bottleneck", stem="deep", shortcut="avg_down",
                              attention="se", groups=32, width_per_group=4)),
    "wide_1111": (dict(layers=[1, 1, 1, 1], block=timm_reference.Bottleneck, base_width=128),
                  dict(blocks=(1, 1, 1, 1), block="bottleneck", width_per_group=128)),
    # timm's pre-activation ResNetV2: its stem max-pool pads with -inf, the stride on the 3x3
    "resnetv2_50": (dict(name="resnetv2_50"), dict(depth="resnetv2_50")),
    "resnetv2_1111": (dict(layers=[1, 1, 1, 1], block=timm_reference.PreActBottleneck),
                      dict(blocks=(1, 1, 1, 1), block="bottleneck", variant="preact")),
}


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """case -> its .pth and .safetensors files, the torch logits and the build() arguments (made once)."""
    folder = tmp_path_factory.mktemp("family")
    x = np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)

    @functools.cache
    def make(case):
        reference, build_args = CASES[case]
        module = randomized(timm_reference.create_model(**reference, num_classes=CLASSES), seed=len(case))
        with torch.no_grad():
            logits = module(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
        torch.save(module.state_dict(), folder / f"{case}.pth")
        os.makedirs(folder / case)
        state = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
        safetensors_numpy.save_file(state, str(folder / case / "model.safetensors"))
        return {"pth": str(folder / f"{case}.pth"), "safetensors": str(folder / case / "model.safetensors"),
                "logits": logits, "build": build_args, "state": state}

    make.x = x
    return make


def build_case(case, **kwargs):
    return keras_resnet.build(**{**case["build"], "input_shape": (SIZE, SIZE, 3), "num_classes": CLASSES,
                                 "classifier_activation": None, **kwargs})


def test_resnet18d_logits_match_torch_on_tensorflow(family):
    case = family("resnet18d")
    model = build_case(case, weights=case["pth"])
    error = relative_error(model.predict(family.x, verbose=0), case["logits"])
    print(f"parity resnet18d pth tensorflow: max relative error {error:.1e}")
    assert error < TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", ["seresnet18", "seresnext_d_1111", "wide_1111"])
def test_family_logits_match_torch_on_tensorflow(family, name):
    case = family(name)
    model = build_case(case, weights=case["safetensors"])
    error = relative_error(model.predict(family.x, verbose=0), case["logits"])
    print(f"parity {name} safetensors tensorflow: max relative error {error:.1e}")
    assert error < TOLERANCE


@pytest.mark.slow
def test_resnetv2_50_logits_match_timms_and_its_state_dict_round_trips(family):
    case = family("resnetv2_50")
    model = build_case(case)
    info = pretrained.load_weights(model, case["pth"])
    assert info["layout"] == "timm ResNetV2" and info["head_loaded"] and info["mean"] == [0.5] * 3
    error = relative_error(model.predict(family.x, verbose=0), case["logits"])
    print(f"parity resnetv2_50 pth tensorflow: max relative error {error:.1e}")
    assert error < TOLERANCE
    state = pretrained.to_state_dict(model)  # timm's names and shapes, the classifier a 1x1 convolution
    expected = {k: v for k, v in case["state"].items() if not k.endswith("num_batches_tracked")}
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_preact_stem_pool_pads_with_minus_infinity_as_torchs_max_pool(rng):
    model = keras_resnet.build(blocks=(1, 1, 1, 1), variant="preact", width=0.25, input_shape=(64, 64, 3))
    features = rng.normal(size=(2, 33, 32, 8)).astype("float32") - 10.0  # a zero pad would win at the border
    pooled = model.get_layer("stem_pool_stride")(model.get_layer("stem_pool")(features))
    expected = torch.nn.MaxPool2d(3, 2, padding=1)(torch.from_numpy(features.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(np.asarray(pooled), expected.numpy().transpose(0, 2, 3, 1))


JAX_SCRIPT = """
import json, sys
import numpy as np
import keras_resnet
keras_resnet.models.layers.CONV_INIT = "zeros"  # every weight comes from the checkpoint: no random draws
jobs = json.loads(sys.argv[1])
x = np.load(jobs.pop("x"))
for out, (kwargs, path) in jobs.items():
    model = keras_resnet.build(**kwargs, input_shape=x.shape[1:], num_classes=%d,
                               classifier_activation=None, weights=path)
    np.save(out, np.asarray(model.predict(x, verbose=0)))
"""


@pytest.mark.slow
def test_family_logits_match_torch_on_jax(family, tmp_path):
    np.save(tmp_path / "x.npy", family.x)
    fmt = {"resnet18d": "safetensors", "seresnet18": "pth", "seresnext_d_1111": "pth", "wide_1111": "safetensors",
           "resnetv2_1111": "safetensors"}
    jobs = {str(tmp_path / f"{n}.npy"): ({k: list(v) if isinstance(v, tuple) else v
                                          for k, v in family(n)["build"].items()}, family(n)[f])
            for n, f in fmt.items()}
    jobs["x"] = str(tmp_path / "x.npy")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", JAX_SCRIPT % CLASSES, json.dumps(jobs)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in fmt:
        error = relative_error(np.load(tmp_path / f"{name}.npy"), family(name)["logits"])
        print(f"parity {name} {fmt[name]} jax: max relative error {error:.1e}")
        assert error < TOLERANCE, (name, error)


def test_checkpoint_of_another_family_member_names_the_option_and_keeps_weights(family):
    case = family("resnet18d")
    model = keras_resnet.build(18, input_shape=(SIZE, SIZE, 3), num_classes=CLASSES)
    before = [np.array(w.numpy()) for w in model.weights]
    with pytest.raises(ValueError) as error:
        pretrained.load_weights(model, case["safetensors"])
    message = str(error.value)
    for text in ("stem='deep'", "conv1.0.weight (32, 3, 3, 3)", "shortcut='avg_down'",
                 "layer2.0.downsample.1.weight (128, 64, 1, 1)", "build('resnet18d')", "keeps its weights"):
        assert text in message, (text, message)
    for a, b in zip(model.weights, before):
        np.testing.assert_array_equal(a.numpy(), b)


@pytest.mark.slow
def test_to_state_dict_round_trips_a_family_checkpoint(family):
    case = family("resnet18d")
    state = pretrained.to_state_dict(build_case(case, weights=case["safetensors"]))
    expected = {k: v for k, v in case["state"].items() if not k.endswith("num_batches_tracked")}
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_architecture_of_reads_the_config_json_name_else_the_tensors(family, tmp_path):
    case = family("seresnext_d_1111")
    assert pretrained.architecture_of(case["safetensors"]) == {"depth": None, **case["build"], "stem_width": 64,
                                                               "variant": "v1.5"}
    os.symlink(case["safetensors"], tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "seresnext26d_32x4d.gluon_in1k"}))
    # a name outside the table: read from the tensors
    assert pretrained.architecture_of(tmp_path)["groups"] == 32
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet50d.ra2_in1k"}))
    assert pretrained.architecture_of(tmp_path) == {"depth": "resnet50d"}


@pytest.mark.slow
def test_build_takes_the_architecture_from_a_hub_config_json(family, tmp_path, monkeypatch):
    case = family("seresnet18")
    config = {"architecture": "seresnet18", "num_classes": CLASSES,
              "pretrained_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    with open(case["safetensors"], "rb") as f:
        files = {"model.safetensors": f.read(), "config.json": json.dumps(config).encode()}
    _cached_repo(tmp_path / "hub", "timm/seresnet18.test_in1k", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pretrained.architecture_of("timm/seresnet18.test_in1k") == {"depth": "seresnet18"}
    model = keras_resnet.build(weights="timm/seresnet18.test_in1k", input_shape=(SIZE, SIZE, 3),
                               num_classes=CLASSES, classifier_activation=None)
    assert model.name == "seresnet18"
    assert relative_error(model.predict(family.x, verbose=0), case["logits"]) < TOLERANCE


@pytest.mark.slow
def test_build_reads_the_architecture_from_the_tensors_without_config_json(family):
    case = family("seresnext_d_1111")
    model = keras_resnet.build(weights=case["safetensors"], input_shape=(SIZE, SIZE, 3), num_classes=CLASSES,
                               classifier_activation=None)
    assert relative_error(model.predict(family.x, verbose=0), case["logits"]) < TOLERANCE


# ------------------------------------------------------------------ export


@pytest.mark.slow
def test_narrow_seresnext_d_exports_to_verified_float32_and_int8_litert_with_builtin_ops(tmp_path, rng,
                                                                                          randomize_bn):
    from keras_resnet.export import ExportOptions, to_tflite

    # every new operator at once: the deep stem, the average-pool shortcut, SE and a grouped 3x3
    model = keras_resnet.build(blocks=(1, 1, 1, 1), block="bottleneck", stem="deep", shortcut="avg_down",
                               attention="se", groups=4, width_per_group=16, width=0.25,
                               input_shape=(64, 64, 3), num_classes=4)
    randomize_bn(model)
    x = rng.normal(size=(16, 64, 64, 3)).astype("float32")
    for mode, checks in (("float32", {}), ("int8", {"max_abs_diff": 0.1, "min_agreement": 0.0})):
        info = to_tflite(model, tmp_path / f"{mode}.tflite", ExportOptions(quantize=mode, **checks),
                         x if mode == "int8" else None, verify_data=x)
        ops = info["ops"]
        assert not [op for op in ops if op.startswith(("CUSTOM", "Flex"))], ops
        assert {"CONV_2D", "AVERAGE_POOL_2D", "MEAN", "LOGISTIC", "MUL"} <= set(ops)
        assert ops["CONV_2D"] == 27  # stem 3, blocks 4 x (3 + SE 2), shortcuts 4: every one built in
        assert info["verification"]["max_abs_diff"] <= (1e-4 if mode == "float32" else 0.1)
