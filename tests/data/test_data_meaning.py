"""Data that means what the user thinks: the val/ layouts, seeded stratified subsets, and a run folder
that remembers where its data was and how it was normalised."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from keras_resnet import data, training
from keras_resnet.training import run_folder

CLASSES = [f"class_{c}" for c in range(10)]


def _write(folder, classes=CLASSES, per_class=3, offset=0):
    """`per_class` 8x8 PNGs in a sub-folder per class; pixel value = a file's number (from `offset`)."""
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            value = offset + c * per_class + i
            Image.fromarray(np.full((8, 8, 3), value % 256, np.uint8)).save(folder / name / f"{i:03d}.png")


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_an_imagenet_style_folder_tests_on_its_val_folder_not_on_two_classes(tmp_path, val_name, capsys):
    _write(tmp_path / "train", CLASSES[:3], per_class=4)
    _write(tmp_path / val_name, CLASSES[:3], per_class=2, offset=100)
    (x, y), (x_test, y_test), info = data.load(str(tmp_path))
    assert info["class_names"] == CLASSES[:3] and info["num_classes"] == 3
    assert len(x) == 12 and len(x_test) == 6 and sorted(set(x_test[:, 0, 0, 0])) == list(range(100, 106))
    assert f"no test/ folder: {val_name}/ is the test split" in capsys.readouterr().err


def test_a_val_folder_beside_train_and_test_is_the_runs_validation_split(tmp_path, capsys):
    _write(tmp_path / "train", CLASSES[:3], per_class=6)
    _write(tmp_path / "val", CLASSES[:3], per_class=2, offset=100)
    _write(tmp_path / "test", CLASSES[:3], per_class=2, offset=200)
    recipe = training.Recipe(val_fraction=0.1, batch_size=4)
    for kwargs in ({"cache": "none"}, {"cache": "memory"}):  # streamed: paths; held in memory: pixels
        run = training.load_run_data(str(tmp_path), recipe, image_size=8, transform="small", **kwargs)
        val, test = (run.x_val, run.x_test) if kwargs["cache"] == "memory" else (
            [np.asarray(Image.open(p))[..., :3] for p in run.x_val], [np.asarray(Image.open(p)) for p in run.x_test])
        assert len(run.x_train) == 18, "no validation images are drawn from train/"
        assert sorted(int(v[0, 0, 0]) for v in val) == list(range(100, 106))
        assert sorted(int(t[0, 0, 0]) for t in test) == list(range(200, 206))
        assert "validation" not in run.info
    assert "val/ is the validation split, test/ the test split" in capsys.readouterr().err


def test_two_validation_folders_are_refused_naming_both(tmp_path):
    for split in ("train", "val", "valid"):
        _write(tmp_path / split, CLASSES[:2], per_class=2)
    with pytest.raises(data.DatasetError, match=r"holds val/ and valid/; keep one validation folder"):
        data.load(str(tmp_path))


def test_subsets_of_a_folder_keep_every_class_in_proportion_and_the_same_files(tmp_path):
    _write(tmp_path / "train", per_class=30)  # sorted by class: the first 60 files are two classes
    _write(tmp_path / "test", per_class=10, offset=0)
    recipe = training.Recipe(val_fraction=0.0, batch_size=8)
    runs = [training.load_run_data(str(tmp_path), recipe, train_size=60, test_size=20, cache="none")
            for _ in range(2)]
    assert np.bincount(runs[0].y_train, minlength=10).tolist() == [6] * 10
    assert np.bincount(runs[0].y_test, minlength=10).tolist() == [2] * 10
    assert runs[0].x_train.tolist() == runs[1].x_train.tolist() and runs[0].x_test.tolist() == runs[1].x_test.tolist()
    held = training.load_run_data(str(tmp_path), recipe, train_size=60, test_size=20, cache="memory")
    assert np.array_equal(held.y_train, runs[0].y_train) and np.array_equal(held.y_test, runs[0].y_test)


def test_subsets_of_fashion_mnist_are_stratified_and_evaluate_reads_the_same_test_images(tmp_path):
    recipe = training.Recipe(val_fraction=0.0, batch_size=32)
    run = training.load_run_data(recipe=recipe, train_size=1000, test_size=500)
    assert np.bincount(run.y_train).tolist() == [100] * 10 and np.bincount(run.y_test).tolist() == [50] * 10
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "fashion_mnist"}))
    model = SimpleNamespace(input_shape=(None, 28, 28, 1))
    _, _, (x_test, y_test), _, _ = run_folder.load_data_for(model, str(tmp_path / "model.keras"), train_count=0,
                                                            test_count=500)
    assert np.array_equal(x_test, run.x_test) and np.array_equal(y_test, run.y_test)


def test_the_run_folder_remembers_its_data_dir_and_keeps_its_normalisation_with_an_explicit_dataset(tmp_path):
    import os

    idx = tmp_path / "idx"
    idx.mkdir()
    source = data.IDX_SETS["fashion_mnist"].system_dir
    for name in os.listdir(source):
        if "ubyte" in name:
            os.symlink(os.path.join(source, name), idx / name)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({
        "dataset": "fashion_mnist", "data_dir": str(idx), "transforms": {"recipe": "small"},
        "normalization": {"mean": [0.5], "std": [0.25]}, "class_names": [str(c) for c in range(10)]}))
    model = SimpleNamespace(input_shape=(None, 28, 28, 1))
    _, _, _, info, note = run_folder.load_data_for(model, str(run / "model.keras"), test_count=5, train_count=0)
    assert info["source"] == str(idx), "read where the run read it"
    _, _, _, info, note = run_folder.load_data_for(model, str(run / "model.keras"), dataset="fashion_mnist",
                                                   test_count=5, train_count=0)
    assert info["mean"] == [0.5] and info["std"] == [0.25] and info["class_names"][0] == "0"
    assert info["source"] == str(idx) and "normalisation, transforms and class names of" in note


def _bomb_png(path, side=20000):
    """A PNG whose header declares `side` x `side` pixels: Pillow refuses it on opening
    (``DecompressionBombError``), before any pixel is allocated."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return str(path)


@pytest.fixture
def bomb_folder(tmp_path):
    _write(tmp_path / "train", CLASSES[:2], per_class=8)
    _write(tmp_path / "test", CLASSES[:2], per_class=4, offset=50)
    return tmp_path, {split: _bomb_png(tmp_path / split / CLASSES[0] / "zz_bomb.png") for split in ("train", "test")}


def test_a_decompression_bomb_is_a_bad_image_named_in_each_split_never_a_traceback(bomb_folder):
    from keras_resnet.data import folder_streams, images, streams

    folder, bombs = bomb_folder
    with pytest.raises(images.ImageError, match=r"zz_bomb.png: not a readable image: DecompressionBombError"):
        images.read_image(bombs["train"])
    with pytest.raises(data.DatasetError, match=r"train/class_0/zz_bomb.png: not a readable image: Decompression"
                                                ".*--bad-images skip"):  # in the statistics' sample: before training
        folder_streams.open_folder(folder, image_size=8, transform="small", cache="none")
    for transform in ("small", "photo"):  # skip: left out of the sample; a stream names it when it meets it
        (x, y), (x_test, y_test), info = folder_streams.open_folder(folder, image_size=8, transform=transform,
                                                                    cache="none", bad_images="skip")
        assert bombs["train"] in set(x) and bombs["test"] in set(x_test)
        bad = streams.BadFiles()
        check = streams.BadFileCheck(bad, "error", str(folder))
        list(streams.train_stream(x, y, info, 4, bad=bad).take(len(x) // 4))
        with pytest.raises(data.DatasetError, match=r"zz_bomb.png: not a readable image: DecompressionBombError"):
            check.on_train_batch_end(0)
        bad = streams.BadFiles()
        weights = np.concatenate([w.numpy() for _, _, w in streams.eval_stream(x_test, y_test, info, 4, bad=bad)])
        assert weights.tolist().count(0.0) == 1 and [p for p, _ in bad.new()] == [bombs["test"]]


@pytest.mark.slow
def test_a_bad_test_image_stops_a_run_after_its_epochs_are_saved_and_the_same_run_then_finishes(bomb_folder,
                                                                                                capsys):
    import os

    folder, bombs = bomb_folder
    os.remove(bombs["train"])  # the test split's alone
    kwargs = dict(dataset=str(folder), cache="none", image_size=8, transform="small", depth=8, width=0.25,
                  run_dir=str(folder / "run"), verbose=0, recipe=training.Recipe(epochs=1, batch_size=4))
    with pytest.raises(data.DatasetError, match=r"test/class_0/zz_bomb.png: not a readable image"):
        training.train(**kwargs)
    assert os.listdir(folder / "run" / "state"), "the epoch was saved before the test step"
    os.remove(bombs["test"])
    result = training.train(**kwargs)
    assert result["epochs_run"] == 1 and result["test_images"] == 8 and (folder / "run" / "model.keras").is_file()
