"""One held-out rule per source: a folder and a tensorflow-datasets set without a ``test`` split hold out
exactly the same examples in training (streamed or held in memory), ``evaluate`` and ``export``."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from keras_resnet.data import folder_streams
from keras_resnet import training
from keras_resnet.training import run_folder

tfds = pytest.importorskip("tensorflow_datasets")
from PIL import Image  # noqa: E402

COUNT, CLASSES = 90, ("a", "b", "c")


class TrainOnlyShapes(tfds.core.GeneratorBasedBuilder):
    """90 images of 8x8 pixels whose every pixel is the example's number (1..90): a set with a
    ``train`` split only, as tf_flowers and many user-built sets are."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 3)),
                                                 "label": tfds.features.ClassLabel(names=list(CLASSES))}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(COUNT):
            yield i, {"image": np.full((8, 8, 3), i + 1, np.uint8), "label": i % len(CLASSES)}


def _numbers(images):
    """The example numbers of images whose pixels all hold their number."""
    return sorted(int(x[0, 0, 0]) for x in images)


def _evaluated_and_exported(dataset, tmp_path, data_dir=None, channels=3):
    """The test images that `evaluate` and `export` read for a run on `dataset`: the run folder's
    `load_data_for`, as both commands call it."""
    (tmp_path / "config.json").write_text(json.dumps({"dataset": dataset, "transforms": {"recipe": "small"},
                                                      "normalization": {"mean": [0.5] * channels,
                                                                        "std": [0.25] * channels}}))
    model = SimpleNamespace(input_shape=(None, 8, 8, channels))
    path = str(tmp_path / "model.keras")
    evaluated = run_folder.load_data_for(model, path, data_dir=data_dir)[2][0]
    exported = run_folder.load_data_for(model, path, data_dir=data_dir, purpose="int8 calibration",
                                        train_count=4, test_count=None)[2][0]
    return _numbers(evaluated), _numbers(exported)


def test_a_tfds_set_without_a_test_split_is_held_out_alike_in_training_evaluate_and_export(tmp_path):
    data_dir = str(tmp_path / "tfds")
    TrainOnlyShapes(data_dir=data_dir).download_and_prepare()
    order = [int(x[0, 0, 0]) for x, _ in tfds.as_numpy(tfds.load(
        "train_only_shapes", split="train", data_dir=data_dir, shuffle_files=False, as_supervised=True))]
    recipe = training.Recipe(val_fraction=0.0, batch_size=8)
    streamed = training.load_run_data("train_only_shapes", recipe, data_dir=data_dir, cache="none")
    held = training.load_run_data("train_only_shapes", recipe, data_dir=data_dir, cache="memory")
    assert streamed.info["cache"] == "none" and held.info["cache"] == "memory"
    trained_on = sorted(order[i] for i in streamed.x_train)
    held_out = sorted(order[i] for i in streamed.x_test)
    assert len(held_out) == 18 and not set(held_out) & set(trained_on)
    assert _numbers(held.x_test) == held_out and _numbers(held.x_train) == trained_on
    evaluated, exported = _evaluated_and_exported("train_only_shapes", tmp_path, data_dir)
    assert evaluated == held_out and exported == held_out


def test_a_folder_without_a_test_folder_is_held_out_alike_in_training_evaluate_and_export(tmp_path):
    folder = tmp_path / "photos"
    for i in range(COUNT):
        (folder / CLASSES[i % 3]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), i + 1, np.uint8)).save(folder / CLASSES[i % 3] / f"{i:03d}.png")
    recipe = training.Recipe(val_fraction=0.0, batch_size=8)
    streamed = training.load_run_data(str(folder), recipe, cache="none")
    held = training.load_run_data(str(folder), recipe, pipeline="numpy")  # decoded arrays
    number = {str(folder / CLASSES[i % 3] / f"{i:03d}.png"): i + 1 for i in range(COUNT)}
    held_out = sorted(number[str(p)] for p in streamed.x_test)
    assert len(held_out) == 18 and _numbers(held.x_test) == held_out
    _, (paths, _), _ = folder_streams.open_folder(folder, image_size=8, transform="small", cache="none")  # evaluate's
    assert sorted(number[str(p)] for p in paths) == held_out
    assert _evaluated_and_exported(str(folder), tmp_path) == (held_out, held_out)


def test_the_example_digest_is_order_free_and_changes_with_any_image_or_label():
    from keras_resnet.data import ExampleDigest

    images = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4, 1)
    labels = np.array([0, 1, 2, 0, 1])

    def fingerprint(x, y):
        digest = ExampleDigest()
        digest.add(x, y)
        return digest.record("test")

    same = fingerprint(images, labels)
    assert same["examples"] == 5 and len(same["fingerprint"]) == 16
    order = [3, 0, 4, 1, 2]
    assert fingerprint(images[order], labels[order]) == same
    other_label, other_pixel = labels.copy(), images.copy()
    other_label[2], other_pixel[4, 0, 0, 0] = 1, 255
    assert fingerprint(images, other_label)["fingerprint"] != same["fingerprint"]
    assert fingerprint(other_pixel, labels)["fingerprint"] != same["fingerprint"]
    assert fingerprint(images[:4], labels[:4])["fingerprint"] != same["fingerprint"]


@pytest.mark.parametrize("source", ["tfds", "folder"])
def test_run_json_and_evaluation_json_name_the_same_held_out_images_with_one_fingerprint(source, tmp_path):
    """A run streams its held-out test split; ``evaluate`` decodes it by another route: both record
    the split's name, its size and the same fingerprint, which the training images do not have. The
    model file copied away from its run folder is evaluated on the same images, as it was trained."""
    from keras_resnet.data import ExampleDigest

    if source == "tfds":
        data_dir = str(tmp_path / "tfds")
        TrainOnlyShapes(data_dir=data_dir).download_and_prepare()
        dataset, kwargs = "train_only_shapes", {"data_dir": data_dir}
    else:
        folder = tmp_path / "photos"
        for i in range(COUNT):
            (folder / CLASSES[i % 3]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), i + 1, np.uint8)).save(folder / CLASSES[i % 3] / f"{i:03d}.png")
        dataset, kwargs = str(folder), {}
    run_dir = tmp_path / "run"
    result = training.train(dataset=dataset, recipe=training.Recipe(epochs=1, batch_size=8, val_fraction=0.1),
                            run_dir=str(run_dir), cache="none", verbose=0, depth=8, width=0.25, **kwargs)
    recorded = json.loads((run_dir / "run.json").read_text())["data"]
    assert result["data"] == recorded
    held = "train: 0.2 held out (seed 0)" if source == "tfds" else "photos/: 0.2 held out (seed 0)"
    assert recorded["test"]["split"] == held and recorded["test"]["examples"] == 18
    assert recorded["train"]["examples"] + recorded["validation"]["examples"] == COUNT - 18
    assert recorded["validation"]["split"].endswith("0.1 held out (seed 0)")
    evaluated = training.evaluate(str(run_dir / "model.keras"), output=str(tmp_path / "eval"))
    assert evaluated["data"]["test"] == recorded["test"]
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["data"] == evaluated["data"]
    away = tmp_path / "away"  # the model file alone, its run folder gone: it carries its run's record
    away.mkdir()
    shutil.copy(run_dir / "model.keras", away / "model.keras")
    alone = training.evaluate(str(away / "model.keras"))
    assert alone["data"]["test"] == recorded["test"] and alone["test_accuracy"] == evaluated["test_accuracy"]
    train = training.load_run_data(dataset, training.Recipe(val_fraction=0.0), cache="memory", **kwargs)
    digest = ExampleDigest()
    digest.add(train.x_train[:18], train.y_train[:18])
    assert digest.record("train")["fingerprint"] != recorded["test"]["fingerprint"]
