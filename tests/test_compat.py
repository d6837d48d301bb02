"""What users of 0.1.0 keep: files it saved load and predict the same, and its module paths import."""

import importlib
import json
import pathlib

import keras
import numpy as np
import pytest

import keras_resnet

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED["models"]))
def test_a_file_saved_by_the_flat_layout_loads_safely_and_predicts_the_same(name):
    case = EXPECTED["models"][name]
    model = keras.saving.load_model(FIXTURES / f"{name}.keras", safe_mode=True)  # no custom_objects
    assert model.name == case["name"] and model.count_params() == case["params"]
    assert type(model.loss).__name__ == "SmoothedSparseCrossentropy"
    outputs = model.predict(np.asarray(EXPECTED["inputs"], "float32"), verbose=0)
    np.testing.assert_allclose(outputs, case["outputs"], rtol=1e-5, atol=1e-6)
    rebuilt = keras_resnet.build(**case["build"], input_shape=(16, 16, 3), num_classes=5)
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]


@pytest.mark.parametrize("old, new", sorted(keras_resnet.MOVED.items()))
def test_a_module_path_of_the_flat_layout_is_the_module_it_moved_to(old, new):
    assert importlib.import_module(f"keras_resnet.{old}") is importlib.import_module(f"keras_resnet.{new}")


def test_the_flat_layouts_names_import_from_their_old_modules():
    from keras_resnet.execution import distribution_scope, precision_scope  # noqa: F401
    from keras_resnet.layers import CONV_INIT, ResidualBlock  # noqa: F401
    from keras_resnet.pretrained import load_weights

    assert load_weights is keras_resnet.load_weights
    assert keras_resnet.training.Recipe is keras_resnet.training.recipe.Recipe
    assert keras_resnet.data.load is keras_resnet.load_data
    assert keras_resnet.models.build is keras_resnet.models.resnet.build
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("keras_resnet.no_such_module")
