"""Prepare once: an image folder written as a tensorflow-datasets set of TFRecord shards whose photos
have their shorter side bounded (`prepare`, ``keras-resnet prepare DIR OUTPUT --short-side 320``).

A phone's photo is 1-3 MB and decodes in tens of milliseconds; a training crop of 224 pixels never
needs it whole. Written once at a bounded size, the set is read at a few tens of kB an image and
decoded several times faster, as ImageNet pipelines (FFCV, DALI, the TF Model Garden, tfds) do.

- Layout: ``OUTPUT/`` holds tensorflow-datasets' metadata (``dataset_info.json``, ``features.json``)
  and the shards ``images-{split}.tfrecord-{i:05d}-of-{n:05d}``, `SHARD_IMAGES` images each; a
  record is ``{"image": encoded bytes, "label": class, "path": the file's path in DIR}``. The class
  names and the folder's splits (train, test: its ``test/`` or the held-out share that every command
  draws, `keras_resnet.data.folders.list_folder`; validation: its ``val/``) are kept. So
  ``tfds.builder_from_directory(OUTPUT)`` reads it as any tfds set, and `--dataset OUTPUT` trains,
  evaluates and exports from it (`keras_resnet.data.sources.is_prepared`: the tfds path). The
  training split is written in a seeded random order, as tfds writes its own sets: a tfds stream
  shuffles within blocks of consecutive examples (`keras_resnet.data.tfds_streams`), so a split
  written class by class would give batches of one class.
- Images: a file whose shorter side exceeds `short_side`, or that is not upright by its EXIF
  orientation, is decoded (a JPEG at its reduced DCT scale), turned upright, resized (Lanczos) to
  that shorter side and written as a JPEG of quality `JPEG_QUALITY`; a smaller upright JPEG or PNG is
  kept byte for byte. Other formats are written as JPEG.
- Resumable: each shard is written to a temporary name and renamed when complete; the same command
  after an interruption (even ``kill -9``) keeps the finished shards and redoes at most the shard in
  progress. A different `short_side` or listing for the same OUTPUT is an error naming both.
- A file that does not decode: with ``bad_images="error"`` the preparation stops with one line naming
  it (the finished shards are kept); with ``"skip"`` one line names it and it is left out.

TensorFlow writes the shards; the reading side without TensorFlow is `keras_resnet.data.records`.
"""

import io
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from keras_resnet.data import folders, images, records
from keras_resnet.data.common import BAD_IMAGES, DatasetError
from keras_resnet.data.sources import PREPARED_PLAN, folder_of, is_prepared
from keras_resnet.utils import checks, io_utils

SHORT_SIDE = 320  # the shorter side of a prepared photo (FFCV's ImageNet files: 256-512)
SHARD_IMAGES = 1024  # images a shard holds (about 30 MB at 320 pixels)
JPEG_QUALITY = 90
DATASET_NAME = "images"  # the tfds name in the shard file names
TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
KEPT_FORMATS = ("JPEG", "PNG")  # kept byte for byte when small and upright


def shard_name(split, shard, shards):
    return f"{DATASET_NAME}-{split}.tfrecord-{shard:05d}-of-{shards:05d}"


def bounded_image(source, short_side, quality=JPEG_QUALITY):
    """The bytes of an image file as a prepared set holds them (see the module docstring): the
    original bytes, or a JPEG of the upright image with its shorter side bounded. Raises
    `keras_resnet.data.images.ImageError` naming a file that does not decode."""
    from PIL import Image

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        image = images.open_image(data, lambda h, w: images.decode_scale(min(h, w), min(h, w), (short_side,) * 2))
    except images.ImageError as e:  # named by its path
        name = "<bytes>" if isinstance(source, bytes) else str(source)
        raise images.ImageError(str(e).replace("<bytes>", name, 1)) from None
    with Image.open(io.BytesIO(data)) as raw:
        upright = raw.getexif().get(0x0112, 1) in (None, 1)
        kept = raw.format in KEPT_FORMATS and upright and min(raw.size) <= short_side
    if kept:
        return data
    pixels = images.to_array(image)
    height, width = pixels.shape[:2]
    scale = short_side / min(height, width)
    resized = images.to_pil(pixels)
    if scale < 1:
        resized = resized.resize((max(round(width * scale), 1), max(round(height * scale), 1)),
                                 Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    resized.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def prepare(folder, output, *, short_side=SHORT_SIDE, shard_images=SHARD_IMAGES, bad_images="error",
            workers=None, test_fraction=0.2, seed=0, progress=True):
    """Writes the image folder `folder` into `output` as a prepared set (see the module docstring);
    resumes a preparation that was interrupted. Returns ``{split: images written}``.

    Args:
        folder: a folder of class folders (with ``train/``, ``test/``, ``val/`` or without).
        output: the prepared set's folder (created; a finished one is left as it is).
        short_side: the shorter side that larger photos are brought to, in pixels.
        shard_images: images per shard.
        bad_images: ``"error"`` (stop, naming the file) or ``"skip"`` (name it, leave it out).
        workers: threads that decode and encode (default: the machine's cores).
        test_fraction, seed: the held-out test split of a folder without ``test/`` (every command's).
        progress: a progress line on stderr with the images per second.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    checks.check_int("short_side", short_side, 1)
    checks.check_int("shard_images", shard_images, 1)
    checks.check_int("workers", workers, 1, none_ok=True)
    checks.check_choice("bad_images", bad_images, BAD_IMAGES)
    source = folder_of(folder)
    if source is None or is_prepared(source):
        raise ValueError("`folder` must be a folder of class folders of images (not a dataset name or a "
                         f"prepared folder). Received: folder={os.fspath(folder)!r}")
    output = Path(os.path.expanduser(os.fspath(output))).absolute()
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise ValueError(f"`output` must be outside the folder it prepares. Received: output={str(output)!r}")
    if is_prepared(output):
        print(f"prepare: {output} is prepared already; nothing to do", file=sys.stderr)
        return _counts(output)
    if output.exists() and any(output.iterdir()) and not (output / PREPARED_PLAN).exists():
        raise ValueError("`output` must be a new or empty folder, or one this command began to prepare. "
                         f"Received: output={str(output)!r} (it holds other files)")
    listing = folders.list_folder(source, test_fraction, seed)
    channels, _, _ = folders.probe(listing.all_paths)
    order = np.random.default_rng((seed, 6)).permutation(len(listing.train_paths))  # see the module docstring
    splits = {"train": (listing.train_paths[order], listing.train_labels[order]),
              "test": (listing.test_paths, listing.test_labels)}
    if listing.val_paths is not None:
        splits["validation"] = (listing.val_paths, listing.val_labels)
    plan = {"source": str(source.resolve()), "short_side": short_side, "shard_images": shard_images,
            "quality": JPEG_QUALITY, "class_names": list(listing.class_names), "channels": channels,
            "splits": {split: len(paths) for split, (paths, _) in splits.items()},
            "test_fraction": test_fraction, "seed": seed}
    with io_utils.folder_lock(output, "prepared folder", "wait for the other `prepare` to finish"):
        begun = io_utils.read_json(output / PREPARED_PLAN)
        if begun is not None and begun != plan:
            changed = sorted(k for k in plan if begun.get(k) != plan[k])
            raise ValueError(f"`output` {output} was begun from {begun.get('source')} with other settings "
                             f"({', '.join(f'{k}={begun.get(k)!r}' for k in changed)}); pass the same "
                             f"arguments to resume it, or another output. Received: "
                             + ", ".join(f"{k}={plan[k]!r}" for k in changed))
        io_utils.write_json(output / PREPARED_PLAN, plan)
        for stale in output.glob(".*.partial-*"):  # a shard in progress when a run was killed
            stale.unlink()
        meter = Progress(sum(plan["splits"].values()), progress)
        split_infos = []
        with ThreadPoolExecutor(workers or max(os.cpu_count() or 1, 1)) as pool:
            for split, (paths, labels) in splits.items():
                lengths, size = [], 0
                shards = max(math.ceil(len(paths) / shard_images), 1)
                for shard in range(shards):
                    path = output / shard_name(split, shard, shards)
                    part = slice(shard * shard_images, (shard + 1) * shard_images)
                    meter.where = f"{split} shard {shard + 1}/{shards}"
                    if path.exists():  # finished before an interruption
                        meter.advance(len(paths[part]), fresh=False)
                    else:
                        _write_shard(path, paths[part], labels[part], source, plan, bad_images, pool, meter, tf)
                    lengths.append(records.count_records(path))
                    size += path.stat().st_size
                split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=size))
        meter.close()
        _write_metadata(output, plan, split_infos, tfds)
    return _counts(output)


def _write_shard(path, paths, labels, source, plan, bad_images, pool, meter, tf):
    """One shard, to a temporary name renamed when complete."""
    import tensorflow_datasets as tfds

    def encode(i):
        try:
            return bounded_image(str(paths[i]), plan["short_side"]), None
        except (OSError, images.ImageError) as e:
            return None, str(e) if isinstance(e, images.ImageError) else f"{paths[i]}: cannot read it: {e}"

    features = _features(plan["class_names"], plan["channels"], tfds)
    with io_utils.atomic_path(path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
        for i, (data, error) in enumerate(pool.map(encode, range(len(paths)))):
            meter.advance(1)
            if error is not None and bad_images == "error":
                raise DatasetError(f"{error}. Delete or replace it and run the same command again (the "
                                   "finished shards are kept), or pass bad_images='skip' (--bad-images skip) "
                                   "to leave such files out.")
            if error is not None:
                print(("\n" if meter.tty else "") + f"warning: prepare: skipped {error}", file=sys.stderr)
                continue
            relative = os.path.relpath(str(paths[i]), str(source))
            writer.write(features.serialize_example({"image": data, "label": int(labels[i]), "path": relative}))


def _features(class_names, channels, tfds):
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, channels)),
        "label": tfds.features.ClassLabel(names=class_names),
        "path": tfds.features.Text()})


def _write_metadata(output, plan, split_infos, tfds):
    """tensorflow-datasets' metadata, written last: its presence marks the folder prepared."""
    template = tfds.core.ShardedFileTemplate(data_dir=output, template=TEMPLATE, dataset_name=DATASET_NAME,
                                             filetype_suffix="tfrecord")
    tfds.folder_dataset.write_metadata(
        data_dir=output, features=_features(plan["class_names"], plan["channels"], tfds),
        split_infos=split_infos, filename_template=template, check_data=False,
        supervised_keys=("image", "label"),
        description=f"{plan['source']} prepared by keras-resnet: shorter side at most {plan['short_side']} "
                    f"pixels, JPEG quality {plan['quality']}")


def read_prepared(folder, split="train"):
    """``(encoded image, label, path)`` of a prepared folder's split, shard after shard, read without
    TensorFlow (`keras_resnet.data.records`), and the class names."""
    folder = Path(os.path.expanduser(os.fspath(folder)))
    if not is_prepared(folder):
        raise ValueError(f"`folder` must be a folder written by `keras-resnet prepare`. Received: folder={str(folder)!r}")
    plan = io_utils.read_json(folder / PREPARED_PLAN)
    shards = sorted(folder.glob(f"{DATASET_NAME}-{split}.tfrecord-*-of-*"))
    if not shards:
        raise ValueError(f"`split` must be one of {sorted(plan['splits'])}. Received: split={split!r}")

    def examples():
        for shard in shards:
            for record in records.read_records(shard):
                example = records.parse_example(record)
                yield example["image"][0], int(example["label"][0]), example["path"][0].decode("utf-8")

    return examples(), plan["class_names"]


def _counts(output):
    import tensorflow_datasets as tfds

    return {name: int(split.num_examples) for name, split in tfds.builder_from_directory(
        os.fspath(output)).info.splits.items()}


class Progress:
    """One line on stderr, rewritten at most every `EVERY` seconds: images done of the total and the
    images per second of this run (shards finished before an interruption count as done, not in the
    rate)."""

    EVERY = 0.5

    def __init__(self, total, enabled=True):
        self.total, self.done, self.fresh, self.enabled = total, 0, 0, enabled
        self.start = self.shown = time.monotonic()
        self.tty, self.where = enabled and sys.stderr.isatty(), ""

    def advance(self, count, fresh=True):
        self.done += count
        self.fresh += count if fresh else 0
        now = time.monotonic()
        if self.enabled and (now - self.shown >= self.EVERY or self.done == self.total):
            self.shown = now
            self.show(now)

    def show(self, now):
        rate = self.fresh / max(now - self.start, 1e-9)
        width = 30
        bar = "=" * int(width * self.done / max(self.total, 1))
        line = (f"prepare: [{bar:<{width}}] {self.done}/{self.total} images, {rate:.0f} images/s "
                f"({self.where})")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self):
        if self.tty:
            print(file=sys.stderr)
