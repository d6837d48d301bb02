"""Phone photos carry an EXIF orientation: every path (the training crop in the graph, the evaluation
transform, `predict`'s decoder, a folder's arrays) turns them upright, tested on rotated copies of a
real photo."""

import io

import numpy as np
import pytest
from PIL import Image

from keras_resnet import data
from keras_resnet.data import folder_streams, images, streams, transforms

tf = pytest.importorskip("tensorflow")
skimage_data = pytest.importorskip("skimage.data")

# EXIF orientation -> the transpose that stores an upright image sideways (the inverse of what
# Pillow's exif_transpose applies to read it)
STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _jpeg(image, orientation=None):
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo():
    return Image.fromarray(skimage_data.chelsea())  # 451x300, landscape


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_a_rotated_copy_reads_upright_as_the_original(photo, orientation):
    rotated = _jpeg(photo.transpose(STORED[orientation]), orientation)
    upright = images.read_image(_jpeg(photo))
    got = images.read_image(rotated)
    assert got.shape == upright.shape == (300, 451, 3)
    assert np.abs(got.astype(int) - upright).mean() < 2.0, "the same picture, two JPEG encodings apart"


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_the_training_crop_of_a_rotated_jpeg_is_the_crop_of_the_upright_image(photo, orientation):
    encoded = _jpeg(photo.transpose(STORED[orientation]) if orientation in STORED else photo, orientation)
    assert bool(transforms.exif_oriented(tf.constant(encoded))) == (orientation != 1)
    bad = streams.BadFiles()
    fallback = transforms.pillow_fallback(3, bad, str, (64, 64))
    for index in range(6):
        u = transforms.crop_draws(5, 2, index).numpy()
        crop = images.read_crop(encoded, u[1:].reshape(images.CROP_ATTEMPTS, 4), (64, 64), 3)  # Pillow, upright
        h, w = crop.shape[:2]
        expected = tf.image.resize(crop, (64, 64), antialias=bool(h > 64 or w > 64))
        expected = expected.numpy()[:, ::-1] if u[0] < 0.5 else expected.numpy()
        got, ok = transforms.photo_crop(tf.constant(encoded), tf.constant(index, tf.int64),
                                        tf.constant(2, tf.int64), 5, (64, 64), 3, fallback)
        assert bool(ok) and not bad.found
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-3)


def test_evaluation_predict_and_arrays_agree_on_a_folder_of_rotated_photos(photo, tmp_path):
    from keras_resnet import export

    for c, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for i, orientation in enumerate((3, 6, 8)):
            (tmp_path / name / f"{i}.jpg").write_bytes(_jpeg(photo.transpose(STORED[orientation]), orientation))
    (x, y), (x_test, y_test), info = folder_streams.open_folder(tmp_path, image_size=48, transform="photo",
                                                                test_fraction=0.5, cache="none")
    assert info["transforms"]["orientation"] == "exif"
    batches = list(streams.eval_stream(x_test, y_test, info, 3))
    scale, offset = np.float32(1 / (255 * np.asarray(info["std"]))), -np.asarray(info["mean"]) / info["std"]
    streamed = np.concatenate([b[0].numpy() for b in batches])
    predicted = export.load_images(list(x_test), (48, 48, 3), info["transforms"])  # predict's decoder
    np.testing.assert_allclose(streamed, predicted * scale + offset.astype(np.float32), atol=1e-4)
    upright = images.eval_transform(images.read_image(_jpeg(photo)), (48, 48), "photo")
    assert all(np.abs(p.astype(int) - upright).mean() < 3.0 for p in predicted), "upright, not sideways"
    (xa, _), _, _ = data.load(str(tmp_path), image_size=(300, 451), test_fraction=0.5)
    assert xa.shape[1:] == (300, 451, 3)
    _, first_size, _ = data.folders.probe(sorted(str(p) for p in tmp_path.glob("*/*.jpg")))
    assert first_size == (300, 451), "a folder's size is its upright photos'"


@pytest.fixture(scope="module")
def rotated_tfds(photo, tmp_path_factory):
    """A tensorflow-datasets set built from rotated copies (orientations 3, 6, 8, and 1) of a real
    photo at 60x40: ``(data_dir, the upright photo)``."""
    tfds = pytest.importorskip("tensorflow_datasets")
    folder = tmp_path_factory.mktemp("rotated")
    small = photo.resize((60, 40))
    files = []
    for i, orientation in enumerate((3, 6, 8, 1)):
        path = folder / f"{i}.jpg"
        path.write_bytes(_jpeg(small.transpose(STORED[orientation]) if orientation in STORED else small, orientation))
        files.append(path)

    class RotatedPhotos(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.ClassLabel(
                    names=["a", "b"])}), supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(files * 3), "test": self._generate_examples(files)}

        def _generate_examples(self, paths):
            for i, path in enumerate(paths):
                yield i, {"image": str(path), "label": i % 2}

    data_dir = str(folder / "tfds")
    RotatedPhotos(data_dir=data_dir).download_and_prepare()
    return data_dir, small


@pytest.mark.parametrize("transform", ["small", "photo"])
def test_a_tfds_set_of_rotated_jpegs_reads_upright_streamed_held_in_memory_and_sampled(rotated_tfds, transform):
    """tensorflow-datasets keeps a JPEG file's bytes, EXIF included; the graph's decoder ignores the
    orientation, so every tfds path decodes through `transforms.decode_upright`."""
    tfds = pytest.importorskip("tensorflow_datasets")
    data_dir, small = rotated_tfds
    stored = next(iter(tfds.load("rotated_photos", split="test", data_dir=data_dir,
                                 decoders={"image": tfds.decode.SkipDecoding()})))["image"].numpy()
    assert stored[:3] == b"\xff\xd8\xff" and images.read_image(stored).shape == (40, 60, 3)
    upright = images.eval_transform(images.read_image(_jpeg(small)), (40, 60), transform)

    def assert_upright(x):
        assert x.shape[1:] == (40, 60, 3)
        assert all(np.abs(image.astype(int) - upright).mean() < 4.0 for image in x), "upright, not sideways"

    _, (x_test, y_test), info = data.open_dataset("rotated_photos", data_dir=data_dir, image_size=(40, 60),
                                                  transform=transform, cache="none")
    scale, offset = 255 * np.asarray(info["std"]), 255 * np.asarray(info["mean"])
    assert_upright(np.concatenate([b[0].numpy() for b in streams.eval_stream(x_test, y_test, info, 4)]) * scale + offset)
    if transform == "small":  # the photo recipe streams, always
        _, (held, _), _ = data.open_dataset("rotated_photos", data_dir=data_dir, image_size=(40, 60),
                                            transform=transform, cache="memory")
        assert_upright(held)
    _, (sampled, _), _ = data.open_for_model("rotated_photos", (40, 60), {"recipe": transform}, data_dir=data_dir,
                                             train_count=2, test_count=4)
    assert_upright(sampled)
