"""The one image decoder and the photo recipe's transforms (keras_resnet.data.images), against references
written here with torchvision's definitions, on real photos from scikit-image's package."""

import io
import math
import os

import numpy as np
import pytest
from PIL import Image

from keras_resnet import data, export
from keras_resnet.data import images

skimage = pytest.importorskip("skimage")
PHOTOS = os.path.join(os.path.dirname(skimage.__file__), "data")
PHOTO_FILES = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "retina.jpg",
               "motorcycle_left.png", "horse.png"]


def torchvision_eval(path, size, crop_fraction=0.875):
    """torchvision's ``Resize(int(size / crop_fraction), BICUBIC)`` + ``CenterCrop(size)`` on a PIL image
    (``transforms.functional.resize`` and ``center_crop`` written out)."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short = int(size / crop_fraction)
    new_long = int(new_short * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)), np.uint8)


@pytest.mark.parametrize("name", PHOTO_FILES)
def test_evaluation_transform_matches_torchvisions_resize_and_centre_crop(name):
    path = os.path.join(PHOTOS, name)
    ours = images.center_crop(images.read_image(path, 3), (224, 224))
    reference = torchvision_eval(path, 224)
    assert ours.shape == reference.shape == (224, 224, 3)
    assert np.mean(np.abs(ours.astype(float) - reference)) <= 2.0


def test_random_resized_crop_windows_stay_in_the_stated_ranges_and_fill_them():
    rng = np.random.default_rng(0)
    h, w = 288, 288  # square: the aspect draws are symmetric about 1
    windows = np.array([images.crop_window(h, w, rng.random((images.CROP_ATTEMPTS, 4))) for _ in range(4000)])
    top, left, ch, cw = windows.T
    area, aspect = ch * cw / (h * w), cw / ch
    assert np.all((top >= 0) & (left >= 0) & (top + ch <= h) & (left + cw <= w))
    assert area.min() >= 0.08 - 0.01 and area.max() <= 1.0
    assert aspect.min() >= 3 / 4 - 0.03 and aspect.max() <= 4 / 3 + 0.03
    # log-uniform aspect: as many below 1 as above; the draws reach both ends of both ranges
    assert abs(np.mean(np.log(aspect))) < 0.01
    assert np.quantile(area, 0.02) < 0.12 and np.quantile(area, 0.98) > 0.9
    assert np.quantile(aspect, 0.02) < 0.78 and np.quantile(aspect, 0.98) > 1.28
    # offsets spread over the whole image
    assert left.max() > 0.8 * w / 2 and top.max() > 0.8 * h / 2


def test_random_resized_crop_falls_back_to_the_centre_with_the_aspect_clamped():
    always_too_big = np.ones((images.CROP_ATTEMPTS, 4)) * [1.0, 1.0, 0.5, 0.5]  # area 100 %, aspect 4/3
    assert images.crop_window(300, 10, always_too_big) == (int((300 - round(10 / 0.75)) // 2), 0,
                                                           round(10 / 0.75), 10)
    smallest = np.zeros((images.CROP_ATTEMPTS, 4))  # area 8 %, width 3/4 of the height
    assert images.crop_window(100, 100, smallest) == (0, 0, 33, 24)


def _save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def _kinds(folder):
    """One file of each kind the decoder must agree on, all 20x24."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    gray16 = (rng.random((20, 24)) * 65535).astype(np.uint16)
    return {
        "rgb8.png": _save(Image.fromarray(rgb), folder / "rgb8.png"),
        "gray16.png": _save(Image.fromarray(gray16), folder / "gray16.png"),
        "palette.png": _save(Image.fromarray(rgb).convert("P"), folder / "palette.png"),
        "cmyk.jpg": _save(Image.fromarray(rgb).convert("CMYK"), folder / "cmyk.jpg", quality=95),
        "rgba.png": _save(Image.fromarray(np.dstack([rgb, rgb[..., :1]])), folder / "rgba.png"),
        "gray8.png": _save(Image.fromarray(rgb[..., 0]), folder / "gray8.png"),
        "rgb.webp": _save(Image.fromarray(rgb), folder / "rgb.webp", lossless=True),
        "cmyk.tif": _save(Image.fromarray(rgb).convert("CMYK"), folder / "cmyk.tif"),
    }


def test_sixteen_bit_png_keeps_its_high_byte_like_tensorflows_decoder(tmp_path):
    import tensorflow as tf

    path = _kinds(tmp_path)["gray16.png"]
    ours = images.read_image(path)
    theirs = tf.io.decode_png(path.read_bytes(), channels=1).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert ours.mean() > 100  # scaled, not clipped at 255


def test_training_and_predict_read_every_kind_of_file_to_the_same_pixels(tmp_path):
    paths = _kinds(tmp_path / "files")
    for c in ("a", "b"):  # a folder of every kind, twice, as two classes with a test/ split
        for split in ("train", "test"):
            (tmp_path / "set" / split / c).mkdir(parents=True)
            for name, path in paths.items():
                (tmp_path / "set" / split / c / name).write_bytes(path.read_bytes())
    (x, y), _, info = data.load(tmp_path / "set")
    assert len(x) == 2 * len(paths), "every extension is taken"
    names = sorted(paths)  # the folder's order
    predicted = export.load_images([paths[n] for n in names], (20, 24, 3))
    for name, trained, read in zip(names, x[:len(names)], predicted):
        np.testing.assert_array_equal(trained, read, err_msg=name)


def test_a_folder_is_colour_if_any_image_is_and_says_so(tmp_path, capsys):
    rng = np.random.default_rng(2)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    colour = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "b" / "9.png")
    (x, y), (x_test, _), info = data.load(tmp_path, test_fraction=0.25)
    assert info["input_shape"] == (8, 8, 3)
    lines = [line for line in capsys.readouterr().err.splitlines() if "colour" in line]
    assert lines == [f"note: {tmp_path}: colour (3 channels): {tmp_path}/b/9.png is colour (6 grayscale "
                     "images before it); a folder is colour if any image is"]
    everything = np.concatenate([x, x_test])
    assert any(np.array_equal(image, colour) for image in everything), "the colour image kept its colour"


def test_jpeg_crops_decoded_by_tensorflow_equal_pillows_pixels():
    import tensorflow as tf

    for name in ("rocket.jpg", "retina.jpg"):
        raw = open(os.path.join(PHOTOS, name), "rb").read()
        full = images.read_image(raw, 3)
        for image, channels in ((full, 3), (images.read_image(_gray_jpeg(raw), 1), 1)):
            source = raw if channels == 3 else _gray_jpeg(raw)
            window = [13, 27, image.shape[0] // 2, image.shape[1] // 3]
            crop = tf.io.decode_and_crop_jpeg(source, window, channels=channels,
                                              dct_method="INTEGER_ACCURATE").numpy()
            t, l, h, w = window
            np.testing.assert_array_equal(crop, image[t:t + h, l:l + w], err_msg=name)


def _gray_jpeg(raw):
    out = io.BytesIO()
    Image.open(io.BytesIO(raw)).convert("L").save(out, "JPEG", quality=90)
    return out.getvalue()


def test_a_file_that_is_not_an_image_is_named():
    with pytest.raises(images.ImageError, match=r"^<bytes>: not a readable image: not a format Pillow identifies"):
        images.read_image(b"not an image")
    assert math.isclose(images.CROP_FRACTION, 0.875)
