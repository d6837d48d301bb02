"""`keras-resnet prepare`: an image folder written once as tensorflow-datasets shards with the shorter
side bounded (keras_resnet.data.prepared), read back by tfds and by the reader without TensorFlow,
resumed after ``kill -9``, and trained, evaluated and exported from."""

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from keras_resnet import data
from keras_resnet.data import DatasetError, images, prepared, records, sources

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")
skimage_data = pytest.importorskip("skimage.data")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _photo_folder(folder, count=4, size=(200, 150)):
    """Three classes of real photos (chelsea, coffee, rocket), `count` each, JPEG; one small PNG."""
    for name, pixels in (("cat", skimage_data.chelsea()), ("cup", skimage_data.coffee()),
                         ("rocket", skimage_data.rocket())):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(pixels).resize((size[0] + 8 * i, size[1])).save(folder / name / f"{i}.jpg", quality=90)
    Image.fromarray(skimage_data.chelsea()[:48, :64]).save(folder / "cat" / "small.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def prepared_set(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "set"
    counts = prepared.prepare(photos, out, short_side=64, shard_images=3, progress=False)
    return out, counts


def test_prepare_keeps_classes_splits_and_paths_with_the_shorter_side_bounded(photos, prepared_set):
    out, counts = prepared_set
    listing = data.folders.list_folder(photos)
    assert counts == {"train": len(listing.train_paths), "test": len(listing.test_paths)}
    assert sources.is_prepared(out) and sources.folder_of(str(out)) is None, "read as a tfds set"
    builder = tfds.builder_from_directory(str(out))
    assert builder.info.features["label"].names == ["cat", "cup", "rocket"]
    assert builder.info.splits["train"].num_shards == -(-counts["train"] // 3)
    seen = {}
    for example in builder.as_dataset(split="test", decoders={"image": tfds.decode.SkipDecoding()}):
        encoded, path = example["image"].numpy(), example["path"].numpy().decode()
        seen[path] = int(example["label"])
        pixels = images.read_image(encoded)
        original = images.read_image(str(photos / path))
        if min(original.shape[:2]) > 64:
            assert min(pixels.shape[:2]) == 64 and encoded[:3] == b"\xff\xd8\xff"
        else:
            assert encoded == (photos / path).read_bytes(), "a small file is kept byte for byte"
    expected = {os.path.relpath(p, photos): int(l) for p, l in zip(listing.test_paths, listing.test_labels)}
    assert seen == expected, "the folder's test split, each file's path and class"
    train = [int(e["label"]) for e in builder.as_dataset(split="train", shuffle_files=False)]
    assert sorted(train) == sorted(listing.train_labels.tolist()) and train != sorted(train), "written shuffled"


def test_the_reader_without_tensorflow_reads_what_tfds_reads(prepared_set):
    out, counts = prepared_set
    shards = sorted(out.glob("images-train.tfrecord-*"))
    parsed = [records.parse_example(r) for shard in shards for r in records.read_records(shard)]
    assert sum(records.count_records(s) for s in shards) == len(parsed) == counts["train"]
    builder = tfds.builder_from_directory(str(out))
    ds = builder.as_dataset(split="train", shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
    for mine, theirs in zip(parsed, ds):
        assert mine["image"][0] == theirs["image"].numpy()
        assert mine["label"][0] == int(theirs["label"]) and mine["path"][0] == theirs["path"].numpy()


def test_a_prepared_folder_streams_as_a_tfds_set(prepared_set):
    out, counts = prepared_set
    (x, y), (x_test, y_test), info = data.open_dataset(str(out), image_size=32, transform="photo")
    assert info["class_names"] == ["cat", "cup", "rocket"] and info["cache"] == "none"
    assert len(x) == counts["train"] and len(x_test) == counts["test"]


def test_bad_files_stop_the_preparation_naming_them_or_are_skipped_with_a_line(tmp_path, capsys):
    folder = _photo_folder(tmp_path / "src", count=2)
    (folder / "cup" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(DatasetError, match=r"broken\.jpg: not a readable image.*--bad-images skip"):
        prepared.prepare(folder, tmp_path / "out", short_side=64, progress=False)
    assert not sources.is_prepared(tmp_path / "out")
    counts = prepared.prepare(folder, tmp_path / "out", short_side=64, bad_images="skip", progress=False)
    lines = [l for l in capsys.readouterr().err.splitlines() if "skipped" in l]
    assert len(lines) == 1 and "broken.jpg" in lines[0]
    assert sum(counts.values()) == 7


def test_bad_arguments_are_one_line_naming_them(photos, tmp_path):
    with pytest.raises(ValueError, match="short_side"):
        prepared.prepare(photos, tmp_path / "a", short_side=0)
    with pytest.raises(ValueError, match="outside the folder"):
        prepared.prepare(photos, photos / "prepared")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="new or empty folder"):
        prepared.prepare(photos, tmp_path / "b")
    prepared.prepare(photos, tmp_path / "c", short_side=64, shard_images=100, progress=False)
    (tmp_path / "c" / "dataset_info.json").unlink()  # as if interrupted before the end
    with pytest.raises(ValueError, match="short_side=64.*Received: short_side=80"):
        prepared.prepare(photos, tmp_path / "c", short_side=80, shard_images=100)


@pytest.mark.slow
def test_prepare_resumes_after_sigkill_redoing_at_most_the_shard_in_progress(tmp_path):
    folder = tmp_path / "src"
    pixels = Image.fromarray(skimage_data.chelsea()).resize((1000, 750))
    buf = io.BytesIO()
    pixels.save(buf, "JPEG", quality=90)
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for i in range(40):
            (folder / name / f"{i:02d}.jpg").write_bytes(buf.getvalue())
    out = tmp_path / "out"
    command = [sys.executable, "-m", "keras_resnet.cli", "prepare", str(folder), str(out), "--short-side", "700",
               "--shard-images", "1", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": REPO}
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("images-train.tfrecord-0000[2-9]-*")) and time.monotonic() < deadline:
        assert job.poll() is None, "killed before it finished"
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait(30)
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("images-*")}
    assert 3 <= len(finished) < 80 and not sources.is_prepared(out)
    counts = prepared.prepare(folder, out, short_side=700, shard_images=1, workers=1, progress=False)
    assert counts == {"train": 64, "test": 16}
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in finished.items()), "finished shards kept"
    assert not list(out.glob(".*partial*")), "no temporary shard left"
    fresh = prepared.prepare(folder, tmp_path / "fresh", short_side=700, shard_images=1, workers=1, progress=False)
    assert fresh == counts
    for shard in sorted(out.glob("images-*")):  # the same records (a protobuf map's order may differ)
        assert ([records.parse_example(r) for r in records.read_records(shard)]
                == [records.parse_example(r) for r in records.read_records(tmp_path / "fresh" / shard.name)])


@pytest.mark.slow
def test_a_prepared_folder_trains_evaluates_and_exports(prepared_set, tmp_path, capsys):
    from keras_resnet import cli

    out, counts = prepared_set
    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", str(out), "--image-size", "32", "--transform", "photo", "--depth", "8",
                     "--width", "0.25", "--epochs", "1", "--batch-size", "4", "--run-dir", str(run),
                     "--verbose", "0"]) == 0
    assert cli.main(["evaluate", str(run / "model.keras"), "--json"]) == 0
    assert f'"test_images": {counts["test"]}' in capsys.readouterr().out
    assert cli.main(["export", str(run / "model.keras"), "--output", str(tmp_path / "m.tflite"),
                     "--verify-count", "2"]) == 0
    assert (tmp_path / "m.tflite").is_file()


@pytest.mark.slow
def test_the_gpu_script_trains_from_prepared_shards_on_jax_without_tensorflow(prepared_set):
    pytest.importorskip("jax")
    out, _ = prepared_set
    command = [sys.executable, os.path.join(REPO, "scripts", "gpu_throughput.py"), "--dataset", str(out), "--depth",
               "18", "--width", "0.25", "--size", "32", "--batch-size", "4", "--steps", "1", "--warmup", "1",
               "--workers", "1", "--precision", "float32"]
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": "jax"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]  # the script asserts that TensorFlow was not imported
    assert "| model alone (one constant batch) |" in done.stdout and "bottleneck:" in done.stdout
