"""Grad-CAM: the heat map of a trained model lies on the object that defines its class."""

import json

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import cli, training
from keras_resnet.gradcam import heatmap as gradcam

SIZE, PATCH, MARGIN = 32, 8, 4  # images, the bright patch, how far the patch region is dilated
NORM = {"mean": [0.25], "std": [0.2]}
NAMES = ["noise", "patch"]


def _patch_images(n, seed):
    """Noise (class 0), or noise with a bright PATCH x PATCH square at a random place (class 1)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 120, (n, SIZE, SIZE, 1)).astype(np.uint8)
    y = rng.integers(0, 2, n)
    corners = rng.integers(0, SIZE - PATCH + 1, (n, 2))
    for image, label, (r, c) in zip(x, y, corners):
        if label:
            image[r:r + PATCH, c:c + PATCH] = 255
    return x, y, corners


def _normalize(x):
    return (x.astype("float32") / 255.0 - NORM["mean"][0]) / NORM["std"][0]


@pytest.fixture(scope="module")
def patch_model():
    """A narrow ResNet-8 that tells noise from noise with a bright patch (a few seconds of training)."""
    keras.utils.set_random_seed(0)
    x, y, _ = _patch_images(768, seed=0)
    model = keras_resnet.build(depth=8, width=0.5, input_shape=(SIZE, SIZE, 1), num_classes=2)
    recipe = training.Recipe(epochs=4, batch_size=32, learning_rate=0.05, weight_decay=1e-4, seed=0)
    training.compile_model(model, recipe, steps_per_epoch=len(x) // 32)
    model.fit(_normalize(x), y, batch_size=32, epochs=4, verbose=0)
    return model


def test_untrained_model_gives_one_map_per_image_in_the_unit_range(rng):
    model = keras_resnet.build(depth=8, width=0.25, input_shape=(16, 16, 3), num_classes=3)
    x = rng.standard_normal((2, 16, 16, 3)).astype("float32")
    maps, probs, chosen = gradcam.heatmaps(model, x, class_indices=[0, 2])
    assert maps.shape == (2, 16, 16) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert all(m.max() in (0.0, pytest.approx(1.0)) for m in maps)  # scaled per image
    assert probs.shape == (2, 3) and chosen.tolist() == [0, 2]
    assert gradcam.target_layer(model) == "stage3_block1"
    one, _, _ = gradcam.heatmaps(model, x[:1], layer="stage2_block1")  # one image; an earlier stage
    assert one.shape == (1, 16, 16) and one.max() == pytest.approx(1.0)
    preact = keras_resnet.build(depth=8, width=0.25, input_shape=(16, 16, 3), num_classes=3, variant="preact")
    assert gradcam.target_layer(preact) == "post_relu"


def test_bad_arguments_are_refused_naming_them(rng):
    model = keras_resnet.build(depth=8, width=0.25, input_shape=(16, 16, 1), num_classes=2)
    images = list(rng.integers(0, 255, (1, 16, 16, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="normalization"):
        keras_resnet.explain(model, images)
    with pytest.raises(ValueError, match="class_name.*'cat'"):
        keras_resnet.explain(model, images, class_name="cat", normalization=NORM, class_names=NAMES)
    with pytest.raises(ValueError, match="x.*shape"):
        gradcam.heatmaps(model, np.zeros((1, 8, 8, 1), "float32"))
    headless = keras_resnet.build(depth=8, width=0.25, input_shape=(16, 16, 1), include_top=False)
    with pytest.raises(ValueError, match="logits"):
        gradcam.target_layer(headless)


def test_another_backend_gets_a_clear_error(monkeypatch):
    model = keras_resnet.build(depth=8, width=0.25, input_shape=(16, 16, 1), num_classes=2)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow"):
        gradcam.heatmaps(model, np.zeros((1, 16, 16, 1), "float32"))


@pytest.mark.slow
def test_heat_map_lies_on_the_patch_that_defines_the_class(patch_model):
    x, y, corners = _patch_images(64, seed=1)
    keep = y == 1
    x, corners = x[keep], corners[keep]
    probs = patch_model.predict(_normalize(x), verbose=0)
    assert np.mean(np.argmax(probs, -1) == 1) > 0.9  # the model has learnt the class
    results = keras_resnet.explain(patch_model, x, class_name="patch", normalization=NORM, class_names=NAMES)
    fractions, area = [], []
    for result, (r, c) in zip(results, corners):
        region = np.zeros((SIZE, SIZE), bool)
        region[max(r - MARGIN, 0):r + PATCH + MARGIN, max(c - MARGIN, 0):c + PATCH + MARGIN] = True
        heat = result["heatmap"]
        fractions.append(heat[region].sum() / heat.sum())
        area.append(region.mean())
        assert result["explained"]["name"] == "patch"
    # The map's mass within the (dilated) patch, against the share of the image that region covers.
    assert np.median(fractions) > 2 * np.median(area), (np.median(fractions), np.median(area))


@pytest.mark.slow
def test_explain_command_reads_the_run_folder_and_writes_one_png_per_image(patch_model, tmp_path):
    from PIL import Image

    folder = tmp_path / "run"
    folder.mkdir()
    patch_model.save(folder / "model.keras")
    (folder / "config.json").write_text(json.dumps({"dataset": "patches", "normalization": NORM,
                                                    "class_names": NAMES}))
    x, _, _ = _patch_images(2, seed=2)
    paths = []
    for i, image in enumerate(x):
        paths.append(str(tmp_path / f"photo{i}.png"))
        Image.fromarray(np.repeat(image, 3, -1)).resize((64, 64)).save(paths[-1])  # RGB, another size
    out = tmp_path / "cams"
    assert cli.main(["explain", str(folder / "model.keras"), *paths, "--class", "patch",
                     "--output", str(out)]) == 0
    for i in range(2):
        assert (out / f"gradcam_photo{i}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["explain", str(folder / "model.keras"), paths[0], "--class", "cat"]) == 2
