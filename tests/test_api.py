"""The public surface: what a saved model knows of itself, what the base install needs, and how every
wrong argument of `build()` and the layers is refused."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import BottleneckBlock, ProjectionShortcut, ResidualBlock, build, config_of

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_saved_model_records_its_build_arguments_and_loads_safely(tmp_path, rng):
    model = build(blocks=(1, 2, 1), block="bottleneck", width=0.5, variant="preact", num_classes=7,
                  input_shape=(32, 32, 3), drop_path_rate=0.1)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert config_of(loaded) == config_of(model) == {
        "depth": 14, "blocks": (1, 2, 1), "block": "bottleneck", "width": 0.5, "stem": "default",
        "stem_width": 8, "shortcut": "projection", "attention": None, "groups": 1, "width_per_group": 64,
        "variant": "preact",
        "num_classes": 7, "input_shape": (32, 32, 3), "include_top": True, "pooling": None,
        "drop_path_rate": 0.1, "classifier_activation": "softmax"}
    assert loaded.name == model.name == "preresnet14_w0.5"
    x = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert build(**config_of(loaded)).count_params() == model.count_params()


def test_config_of_refuses_a_model_it_did_not_build():
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="mine")
    with pytest.raises(ValueError, match="model='mine' of type Sequential"):
        config_of(other)


BASE_INSTALL = textwrap.dedent("""
    import sys

    class Missing:
        # what a base install (keras + numpy) lacks: importing any of these fails
        blocked = ("tensorflow", "keras_tuner", "tensorflow_datasets", "ai_edge_litert", "tf_keras")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{name} is not installed (base install)")

    sys.meta_path.insert(0, Missing())
    import keras_resnet

    model = keras_resnet.build(depth=50)
    info = keras_resnet.summarize(model)
    print("OK", keras_resnet.config_of(model)["depth"], info["trainable_params"], sorted(
        m for m in sys.modules if m.split(".")[0] in Missing.blocked))
""")


@pytest.mark.slow
def test_base_install_builds_a_resnet50_on_jax_without_tensorflow_tuner_tfds_or_litert():
    out = subprocess.run([sys.executable, "-c", BASE_INSTALL], env={**ENV, "KERAS_BACKEND": "jax"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[:3] == ["OK", "50", "25557032"] and out.stdout.strip().endswith("[]")


def test_base_install_dependencies_are_keras_and_numpy_only():
    import tomllib

    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert sorted(d.split(">")[0].split("=")[0] for d in project["dependencies"]) == ["keras", "numpy"]


# (callable, arguments, the argument the message must name, a fragment of the value received)
BAD_ARGUMENTS = [
    (build, dict(depth="50"), "depth", "'50'"),
    (build, dict(depth=19), "depth", "19"),
    (build, dict(depth=True), "depth", "True"),
    (build, dict(depth=-2), "depth", "-2"),
    (build, dict(blocks=[2, 2]), "blocks", "[2, 2]"),
    (build, dict(blocks=(2, 0, 2)), "blocks", "(2, 0, 2)"),
    (build, dict(blocks=(2, 2.5, 2)), "blocks", "2.5"),
    (build, dict(blocks="2,2,2"), "blocks", "'2,2,2'"),
    (build, dict(blocks=(1, 1, 1), block=["basic"]), "block", "['basic']"),
    (build, dict(blocks=(1, 1, 1), block={"a": 1}), "block", "{'a': 1}"),
    (build, dict(blocks=(1, 1, 1), block="resnext"), "block", "'resnext'"),
    (build, dict(depth=20, width=0), "width", "0"),
    (build, dict(depth=20, width="wide"), "width", "'wide'"),
    (build, dict(depth=20, width=[1.0]), "width", "[1.0]"),
    (build, dict(depth=20, variant="v2"), "variant", "'v2'"),
    (build, dict(depth=20, variant=["v1.5"]), "variant", "['v1.5']"),
    (build, dict(depth=20, num_classes=0), "num_classes", "0"),
    (build, dict(depth=20, num_classes=10.0), "num_classes", "10.0"),
    (build, dict(depth=20, input_shape=(32, 32)), "input_shape", "(32, 32)"),
    (build, dict(depth=20, input_shape="32,32,3"), "input_shape", "'32,32,3'"),
    (build, dict(depth=20, input_shape=(32, -1, 3)), "input_shape", "(32, -1, 3)"),
    (build, dict(depth=20, input_shape=(32, 32, 0)), "input_shape", "(32, 32, 0)"),
    (build, dict(depth=20, include_top="yes"), "include_top", "'yes'"),
    (build, dict(depth=20, include_top=False, pooling="mean"), "pooling", "'mean'"),
    (build, dict(depth=20, drop_path_rate=1.0), "drop_path_rate", "1.0"),
    (build, dict(depth=20, drop_path_rate=None), "drop_path_rate", "None"),
    (build, dict(depth=20, classifier_activation="softmaxx"), "classifier_activation", "'softmaxx'"),
    (build, dict(depth=20, classifier_activation=3), "classifier_activation", "3"),
    (ResidualBlock, dict(filters=0), "filters", "0"),
    (ResidualBlock, dict(filters=16.0), "filters", "16.0"),
    (ResidualBlock, dict(filters=16, strides=3), "strides", "3"),
    (ResidualBlock, dict(filters=16, use_projection="auto"), "use_projection", "'auto'"),
    (ResidualBlock, dict(filters=16, drop_path_rate=-0.1), "drop_path_rate", "-0.1"),
    (BottleneckBlock, dict(filters=[64]), "filters", "[64]"),
    (BottleneckBlock, dict(filters=64, strides="2"), "strides", "'2'"),
    (ProjectionShortcut, dict(filters=-1), "filters", "-1"),
    (ProjectionShortcut, dict(filters=8, strides=0), "strides", "0"),
]


@pytest.mark.parametrize("make, kwargs, name, received", BAD_ARGUMENTS,
                         ids=[f"{m.__name__}-{'-'.join(k)}-{r}" for m, k, _, r in BAD_ARGUMENTS])
def test_every_wrong_argument_is_refused_naming_the_argument_and_the_value(make, kwargs, name, received):
    with pytest.raises((ValueError, TypeError)) as err:
        make(**kwargs)
    message = str(err.value)
    assert f"`{name}`" in message or f"{name}=" in message, message
    assert received in message, message


def test_package_exposes_the_model_class_and_its_config_reader():
    assert keras_resnet.ResNet is type(build(depth=20, input_shape=(32, 32, 3)))
    assert keras_resnet.config_of is config_of
