"""Reduced-scale decode: a JPEG's training crop and evaluation image are decoded at the largest DCT
scale (1, 1/2, 1/4, 1/8) that still leaves the output's size, in the graph (``tf.io.decode_jpeg``'s
``ratio``) and through Pillow (``Image.draft``) alike, so training and the app see the same pixels;
tested on real photos scaled to a phone's 4032x3024."""

import io

import numpy as np
import pytest
from PIL import Image

from keras_resnet.data import images, streams, transforms

tf = pytest.importorskip("tensorflow")
skimage_data = pytest.importorskip("skimage.data")

PHONE = (4032, 3024)  # width, height: a 12 MP phone photo
SIZE = (224, 224)


def _jpeg(pixels, size, quality=90):
    buf = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").resize(size, Image.Resampling.LANCZOS).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def phone_photos():
    """Two real photos at phone size, one landscape and one portrait."""
    return [_jpeg(skimage_data.chelsea(), PHONE), _jpeg(skimage_data.astronaut(), PHONE[::-1])]


def test_the_decode_scale_is_the_largest_that_keeps_the_output_size():
    assert images.decode_scale(3024, 4032, SIZE) == 8
    assert images.decode_scale(1791, 1800, SIZE) == 4  # 1791 // 8 = 223 < 224
    assert images.decode_scale(448, 600, SIZE) == 2
    assert images.decode_scale(447, 4000, SIZE) == 1
    assert images.decode_scale(100, 100, SIZE) == 1  # smaller than the output: decoded whole
    rng = np.random.default_rng(0)
    scale = tf.function(transforms.decode_scale)
    for h, w in rng.integers(1, 4000, (60, 2)):
        assert int(scale(tf.constant(int(h)), tf.constant(int(w)), SIZE)) == images.decode_scale(h, w, SIZE)


def test_the_training_crop_in_the_graph_is_pillows_reduced_scale_crop(phone_photos):
    bad = streams.BadFiles()
    fallback = transforms.pillow_fallback(3, bad, str, SIZE)
    scales = []
    for index, encoded in enumerate(phone_photos):
        width, height = Image.open(io.BytesIO(encoded)).size
        for epoch in range(3):
            u = transforms.crop_draws(1, epoch, index).numpy()
            window = images.crop_window(height, width, u[1:].reshape(images.CROP_ATTEMPTS, 4))
            scales.append(images.decode_scale(*window[2:], SIZE))
            crop = images.read_crop(encoded, u[1:].reshape(images.CROP_ATTEMPTS, 4), SIZE, 3)  # Pillow
            expected = transforms.resize_crop(tf.constant(crop), SIZE).numpy()
            expected = expected[:, ::-1] if u[0] < 0.5 else expected
            got, ok = transforms.photo_crop(tf.constant(encoded), tf.constant(index, tf.int64),
                                            tf.constant(epoch, tf.int64), 1, SIZE, 3, fallback)
            assert bool(ok) and not bad.found
            assert np.abs(got.numpy() - expected).max() <= 2.0, "training's pixels are the app's, within 2/255"
    assert max(scales) > 1, "a phone photo's crop is decoded at a reduced scale"


def test_a_reduced_scale_crop_shows_what_the_full_decode_shows(phone_photos):
    encoded = phone_photos[0]
    full = images.read_image(encoded, 3)
    u = np.tile([0.9, 0.5, 0.3, 0.6], (images.CROP_ATTEMPTS, 1))  # most of the image: scale 8
    top, left, h, w = images.crop_window(*full.shape[:2], u)
    assert images.decode_scale(h, w, SIZE) == 8
    whole = transforms.resize_crop(tf.constant(full[top:top + h, left:left + w]), SIZE).numpy()
    reduced = transforms.resize_crop(tf.constant(images.read_crop(encoded, u, SIZE, 3)), SIZE).numpy()
    assert np.abs(whole - reduced).mean() < 3.0


def test_evaluation_decodes_a_phone_photo_at_reduced_scale_as_the_app_does(phone_photos):
    for encoded in phone_photos:
        app = images.read_for_eval(encoded, SIZE, "photo", channels=3)  # evaluate's and predict's decoder
        decoded = transforms.decode_for_eval(tf.constant(encoded), 3, SIZE, images.CROP_FRACTION).numpy()
        assert min(decoded.shape[:2]) == 3024 // 8  # 378 >= 256, the resized shorter side
        graph = images.center_crop(decoded, SIZE)  # a tensorflow-datasets set's evaluation pixels
        assert app.shape == SIZE + (3,)
        assert np.abs(graph.astype(int) - app).max() <= 2


def test_a_png_decodes_whole_as_before(phone_photos):
    buf = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()).save(buf, "PNG")
    png = buf.getvalue()
    u = np.tile([0.5, 0.5, 0.5, 0.5], (images.CROP_ATTEMPTS, 1))
    full = images.read_image(png, 3)
    top, left, h, w = images.crop_window(*full.shape[:2], u)
    np.testing.assert_array_equal(images.read_crop(png, u, (32, 32), 3), full[top:top + h, left:left + w])
    np.testing.assert_array_equal(images.read_for_eval(png, (32, 32), "photo", channels=3),
                                  images.center_crop(full, (32, 32)))
