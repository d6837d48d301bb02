"""Image folders streamed through tf.data (keras_resnet.data.streams, folder_streams): epoch order, shards of a
multi-process job, resume, bad files, and the transforms against their Pillow references."""

import numpy as np
import pytest
from PIL import Image

from keras_resnet import data, training
from keras_resnet.data import folder_streams, images, streams, transforms

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two classes of 12 colour photos, 40x48, JPEG and PNG mixed."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog")):
        (folder / name).mkdir()
        for i in range(12):
            pixels = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
            image = Image.fromarray(pixels).resize((48, 40), Image.Resampling.BICUBIC)
            image.save(folder / name / f"{i:02d}{'.jpg' if i % 3 else '.png'}", quality=92)
    return folder


def _open(folder, **kwargs):
    kwargs = {"image_size": 32, "transform": "photo", **kwargs}
    return folder_streams.open_folder(folder, **kwargs)


def _batches(ds, count):
    return [tuple(t.numpy() for t in batch) for batch in ds.take(count)]


def test_epoch_order_is_a_function_of_seed_and_epoch_and_shards_cover_each_epoch_once():
    n, batch = 103, 8
    one = folder_streams.epoch_order(n, batch, seed=3, epoch=5)
    assert np.array_equal(one, folder_streams.epoch_order(n, batch, seed=3, epoch=5))
    assert not np.array_equal(one, folder_streams.epoch_order(n, batch, seed=3, epoch=6))
    assert len(one) == (n // batch) * batch and len(set(one)) == len(one)
    parts = [folder_streams.epoch_order(n, batch, 3, 5, process=p, processes=4) for p in range(4)]
    assert all(len(p) == len(one) // 4 for p in parts)
    assert len(set(np.concatenate(parts))) == len(one), "disjoint"
    # the global batch is the same: its rows, process by process
    rebuilt = np.concatenate([np.stack([p.reshape(-1, 2)[s] for p in parts]).reshape(-1)
                              for s in range(n // batch)])
    assert np.array_equal(rebuilt, one)


def test_open_folder_lists_without_decoding_and_draws_the_splits_from_the_file_list(photos, monkeypatch, capsys):
    decoded = []
    read = images.read_image
    monkeypatch.setattr(images, "read_image", lambda path, *a: decoded.append(path) or read(path, *a))
    monkeypatch.setattr(folder_streams, "STATS_SAMPLE", 5)
    (x, y), (x_test, y_test), info = _open(photos, test_fraction=0.25)
    assert len(decoded) == 5, "only the statistics' sample is decoded"
    assert x.dtype.kind == "U" and len(x) == 18 and len(x_test) == 6
    assert np.array_equal(np.bincount(y_test), [3, 3]), "stratified"
    assert info["input_shape"] == (32, 32, 3) and info["transforms"]["recipe"] == "photo"
    assert len(info["mean"]) == 3 and all(0 < s < 1 for s in info["std"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"data: {photos}: 18 training and 6 test files, colour (3 channels)")
    assert "streamed from disk; photo recipe: random-resized-crop" in line


def test_small_folders_are_held_in_memory_unless_told_otherwise(photos, capsys):
    (x, _), _, info = _open(photos, transform="small")
    assert x.dtype == np.uint8 and info["cache"] == "memory" and "stream" not in info
    assert "held in memory" in capsys.readouterr().err
    (x, _), _, info = _open(photos, transform="small", cache="none")
    assert x.dtype.kind == "U" and info["cache"] == "none"
    with pytest.raises(ValueError, match="cache='memory' holds decoded images"):
        _open(photos, cache="memory")


@pytest.mark.slow
@pytest.mark.parametrize("transform", ["photo", "small"])
def test_two_processes_rows_make_up_the_global_batches_of_one(photos, transform):
    (x, y), _, info = _open(photos, transform=transform, cache="none")
    whole = _batches(streams.train_stream(x, y, info, 8, seed=1, erase=0.5), 4)
    parts = [_batches(streams.train_stream(x, y, info, 8, seed=1, erase=0.5, process=p, processes=2), 4)
             for p in range(2)]
    for step, (images_, labels) in enumerate(whole):
        np.testing.assert_allclose(np.concatenate([parts[0][step][0], parts[1][step][0]]), images_, atol=1e-5)
        assert np.array_equal(np.concatenate([parts[0][step][1], parts[1][step][1]]), labels)
    assert images_.shape == (8, 32, 32, 3) and images_.dtype == np.float32


def test_a_stream_resumed_at_an_epoch_reads_what_the_whole_run_read(photos):
    (x, y), _, info = _open(photos, cache="none")
    steps = len(x) // 6
    whole = _batches(streams.train_stream(x, y, info, 6, seed=2), 2 * steps)
    resumed = _batches(streams.train_stream(x, y, info, 6, seed=2, start_epoch=1), steps)
    for a, b in zip(whole[steps:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(whole[0][0], whole[steps][0]), "each epoch has its own order and crops"


def test_the_crop_window_in_the_graph_is_the_numpy_reference():
    rng = np.random.default_rng(0)
    shapes = [(int(h), int(w)) for h, w in rng.integers(1, 400, (150, 2))] + [(300, 10), (10, 300), (1, 1)]
    draws = rng.random((len(shapes), images.CROP_ATTEMPTS, 4))
    draws[::7, :, 0] = 1.0  # every attempt too big: the fallback
    window = tf.function(transforms.crop_window)
    for (h, w), u in zip(shapes, draws):
        got = window(tf.constant(h), tf.constant(w), tf.constant(u)).numpy()
        assert tuple(got) == images.crop_window(h, w, u), (h, w)


def test_a_jpeg_crop_decoded_by_tensorflow_is_pillows_crop(photos):
    (x, y), _, info = _open(photos, cache="none")
    bad = streams.BadFiles()
    fallback = transforms.pillow_fallback(3, bad, lambda index: str(x[index]), (32, 32))
    flips = []
    for index in range(len(x)):
        u = transforms.crop_draws(4, 7, index).numpy()
        crop = images.read_crop(str(x[index]), u[1:].reshape(images.CROP_ATTEMPTS, 4), (32, 32), 3)
        h, w = crop.shape[:2]
        pixels, ok = transforms.photo_crop(tf.io.read_file(str(x[index])), tf.constant(index, tf.int64),
                                           tf.constant(7, tf.int64), 4, (32, 32), 3, fallback)
        expected = tf.image.resize(crop, (32, 32), antialias=bool(h > 32 or w > 32)).numpy()
        expected = expected[:, ::-1] if u[0] < 0.5 else expected
        assert bool(ok) and not bad.found
        np.testing.assert_allclose(pixels.numpy(), expected, atol=1e-3)
        flips.append(u[0] < 0.5)
    assert 0 < sum(flips) < len(flips)


def test_evaluation_stream_gives_the_centre_crop_that_evaluate_and_predict_use(photos):
    from keras_resnet import export

    (_, _), (x_test, y_test), info = _open(photos)
    batches = list(streams.eval_stream(x_test, y_test, info, 4))
    got = np.concatenate([b[0].numpy() for b in batches])
    scale, offset = np.float32(1 / (255 * np.asarray(info["std"]))), -np.asarray(info["mean"]) / info["std"]
    pixels = export.load_images(list(x_test), (32, 32, 3), info["transforms"])
    np.testing.assert_allclose(got, pixels * scale + offset.astype(np.float32), atol=1e-4)
    assert np.array_equal(np.concatenate([b[1].numpy() for b in batches]), y_test)


@pytest.fixture
def with_bad_file(photos, tmp_path):
    import shutil

    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    (folder / "dog" / "05.jpg").write_bytes((folder / "dog" / "05.jpg").read_bytes()[:300])  # truncated
    (folder / "cat" / "zz.png").write_text("not an image")
    return folder, [str(folder / "cat" / "zz.png"), str(folder / "dog" / "05.jpg")]


@pytest.mark.slow
def test_skipped_bad_files_leave_every_epoch_its_steps_and_are_named(with_bad_file):
    folder, bad_paths = with_bad_file
    (x, y), _, info = _open(folder, cache="none", test_fraction=0.2, bad_images="skip")
    bad = streams.BadFiles()
    train = [p for p in bad_paths if p in set(x)]
    steps = len(x) // 4
    batches = _batches(streams.train_stream(x, y, info, 4, bad=bad), 2 * steps)
    assert len(batches) == 2 * steps and all(b[0].shape[0] == 4 for b in batches)
    assert sorted(p for p, _ in bad.new()) == sorted(train) and train


@pytest.mark.slow
def test_a_bad_file_stops_the_run_after_its_batch_naming_it(with_bad_file):
    folder, bad_paths = with_bad_file
    with pytest.raises(data.DatasetError, match="--bad-images skip"):  # met in the statistics' sample first
        _open(folder, cache="none", test_fraction=0.2)
    (x, y), _, info = _open(folder, cache="none", test_fraction=0.2, bad_images="skip")  # what the stream meets
    bad = streams.BadFiles()
    check = streams.BadFileCheck(bad, "error", str(folder))
    list(streams.train_stream(x, y, info, 4, bad=bad).take(len(x) // 4))
    with pytest.raises(data.DatasetError) as err:
        check.on_train_batch_end(0)
    message = str(err.value)
    assert any(message.startswith(p + ": not a readable image") for p in bad_paths), message
    assert "--bad-images skip" in message


@pytest.mark.slow
def test_a_streamed_photo_run_trains_evaluates_and_records_its_transforms(photos, tmp_path):
    import json

    result = training.train(dataset=str(photos), image_size=32, transform="photo", depth=8, width=0.25,
                            recipe=training.Recipe(epochs=2, batch_size=6, seed=0),
                            run_dir=str(tmp_path / "run"), verbose=0)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data_feed"] == "stream" and config["transforms"]["recipe"] == "photo"
    assert result["transforms"]["crop_fraction"] == 0.875 and result["epochs_run"] == 2
    assert result["test_images"] == 5
    assert (tmp_path / "run" / "mistakes.png").is_file() and (tmp_path / "run" / "confusion.png").is_file()
    assert sum(c["support"] for c in result["per_class"]["classes"]) == 5
    evaluated = training.evaluate(str(tmp_path / "run" / "model.keras"))  # streamed too
    assert evaluated["test_accuracy"] == pytest.approx(result["test_accuracy"])
    assert evaluated["test_images"] == 5 and evaluated["per_class"] == result["per_class"]


@pytest.mark.slow
def test_cli_train_on_a_folder_with_a_bad_file_ends_in_one_line_naming_it(with_bad_file, tmp_path, capsys):
    from keras_resnet import cli

    folder, bad_paths = with_bad_file
    status = cli.main(["train", "--dataset", str(folder), "--image-size", "32", "--transform", "photo",
                       "--depth", "8", "--width", "0.25", "--epochs", "1", "--batch-size", "4",
                       "--run-dir", str(tmp_path / "run"), "--verbose", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("keras-resnet train: error: ")]
    assert status == 2 and len(errors) == 1 and "Traceback" not in "\n".join(err)
    assert any(f"error: {p}: not a readable image" in errors[0] for p in bad_paths), errors


# --- export's images: only the calibration sample and the verification images are decoded ---------


def _run_folder(folder, tmp_path, recipe="photo", normalization=None):
    """A run folder that says the model was trained on `folder`; the model itself is not needed to
    choose the images, only its input shape."""
    import json
    from types import SimpleNamespace

    config = {"dataset": str(folder), "class_names": ["cat", "dog"], "normalization": normalization,
              "transforms": {"recipe": recipe, "crop_fraction": 0.875}}
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    return SimpleNamespace(input_shape=(None, 32, 32, 3)), str(tmp_path / "run" / "model.keras")


@pytest.fixture(scope="module")
def split_photos(photos, tmp_path_factory):
    """The photos in the other layout: train/<class>/ (8 of each class) and test/<class>/ (4)."""
    import shutil

    folder = tmp_path_factory.mktemp("split_photos")
    for path in sorted(photos.glob("*/*")):
        part = "test" if int(path.stem) >= 8 else "train"
        (folder / part / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / part / path.parent.name / path.name)
    return folder


@pytest.mark.parametrize("layout, recipe", [("flat", "photo"), ("split", "photo"), ("flat", "small")])
def test_export_data_of_a_folder_decodes_only_its_sample_and_equals_the_whole_load(
        photos, split_photos, layout, recipe, tmp_path, monkeypatch):
    from keras_resnet.training import run_folder
    from keras_resnet.data.pipelines import calibration_index

    folder = photos if layout == "flat" else split_photos
    model, model_path = _run_folder(folder, tmp_path, recipe)
    _, (x, y), (x_test, y_test), info, _ = run_folder.load_data_for(model, model_path)
    decoded = []
    read = images.read_image
    monkeypatch.setattr(images, "read_image", lambda path, *a: decoded.append(path) or read(path, *a))
    _, (xs, ys), (xs_test, ys_test), part_info, _ = run_folder.load_data_for(model, model_path, train_count=5,
                                                                          test_count=3)
    index = calibration_index(len(x), 5)
    assert xs.shape == (5, 32, 32, 3) and np.array_equal(xs, x[index]) and np.array_equal(ys, y[index])
    kept = data.subset_index(y_test, 3)  # the test images a test_size of 3 keeps, every class in proportion
    assert np.array_equal(xs_test, x_test[kept]) and np.array_equal(ys_test, y_test[kept])
    np.testing.assert_array_equal(data.calibration_images(xs, part_info, 5), data.calibration_images(x, info, 5))
    assert part_info == info, "statistics of a small folder's sample are those of its whole training split"
    listing = folders_list(folder)
    used = set(listing.train_paths[index]) | set(listing.test_paths[data.subset_index(listing.test_labels, 3)])
    stats = set(listing.train_paths)  # no normalisation in the run folder: a sample (here all) gives it
    assert used <= set(decoded) <= used | stats
    decoded.clear()
    model, model_path = _run_folder(folder, tmp_path, recipe, normalization={"mean": [0.5] * 3, "std": [0.2] * 3})
    run_folder.load_data_for(model, model_path, train_count=5, test_count=3)
    assert sorted(decoded) == sorted(used), "with the run's normalisation, nothing else is decoded"


def folders_list(folder):
    from keras_resnet.data import folders

    return folders.list_folder(folder)


@pytest.fixture
def only_the_sample_readable(photos, tmp_path):
    """A copy of the photos where every file but export's 4 calibration and 3 verification images is
    not an image."""
    import shutil

    from keras_resnet.data.pipelines import calibration_index

    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    listing = folders_list(folder)
    keep = set(listing.train_paths[calibration_index(len(listing.train_paths), 4)]) | set(
        listing.test_paths[data.subset_index(listing.test_labels, 3)])
    for path in listing.all_paths:
        if path not in keep:
            open(path, "wb").write(b"not an image")
    return folder


def test_export_data_of_a_folder_does_not_open_the_files_it_does_not_use(only_the_sample_readable, tmp_path):
    from keras_resnet.training import run_folder

    model, model_path = _run_folder(only_the_sample_readable, tmp_path,
                                    normalization={"mean": [0.5] * 3, "std": [0.2] * 3})
    _, (x, _), (x_test, _), info, _ = run_folder.load_data_for(model, model_path, train_count=4, test_count=3)
    assert x.shape == (4, 32, 32, 3) and x_test.shape == (3, 32, 32, 3) and info["class_names"] == ["cat", "dog"]
    with pytest.raises(ValueError, match="cannot be loaded from there: .*not a readable image"):
        run_folder.load_data_for(model, model_path)  # the whole load decodes every file


@pytest.mark.slow
def test_cli_int8_export_of_a_folder_run_reads_only_the_images_it_uses(only_the_sample_readable, tmp_path, capsys):
    import json

    from keras_resnet import build, cli

    _, model_path = _run_folder(only_the_sample_readable, tmp_path,
                                normalization={"mean": [0.5] * 3, "std": [0.2] * 3})
    build(blocks=(1, 1, 1), input_shape=(32, 32, 3), width=0.25, num_classes=2).save(model_path)
    out = tmp_path / "model_int8.tflite"
    assert cli.main(["export", model_path, "--quantize", "int8", "--calibration-count", "4", "--verify-count", "3",
                     "--min-agreement", "0", "--max-accuracy-drop", "1", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "decoding 4 training and 3 test images" in captured.err
    assert "int8 calibrated on 4" in captured.out and "verified on 3" in captured.out
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["calibration_images"] == 4 and sidecar["verification"]["images"] == 3
    assert sidecar["class_names"] == ["cat", "dog"] and sidecar["transforms"]["recipe"] == "photo"
