"""The photo recipe's training crop in the TensorFlow graph, the one of every streamed source: a
random-resized-crop window drawn statelessly from ``(seed, epoch, example)`` (`crop_draws`,
`crop_window`: the graph's form of `keras_resnet.data.images.crop_window`, in full-resolution
coordinates), decoded from the encoded bytes at the largest JPEG scale (1, 1/2, 1/4, 1/8) at which
the window still has the output's size (`decode_scale`; ``tf.io.decode_and_crop_jpeg`` with its
``ratio``, with a one-block margin, so that the pixels are Pillow's ``Image.draft``; Pillow through a
callback for other files), resized to the input size (`resize_crop`) and
flipped half the time. TensorFlow only, imported inside the functions."""

import numpy as np

from keras_resnet.data import images

JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
JPEG_MARGIN = 16  # pixels decoded around a JPEG crop window (one block of 4:2:0 chroma)
NO_PIXELS = {c: np.zeros((1, 1, c), np.uint8) for c in (1, 3)}


def crop_draws(seed, epoch, index):
    """The photo recipe's uniform draws for one image in one epoch, float64 ``(1 + 4 *
    CROP_ATTEMPTS,)``: the flip (``u[0] < 0.5``), then `keras_resnet.data.images.crop_window`'s draws.
    Stateless, from ``(seed, epoch, index)`` alone. TensorFlow, in the graph."""
    import tensorflow as tf

    key = tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64)
    return tf.random.stateless_uniform((4 * images.CROP_ATTEMPTS + 1,), seed=tf.stack([key, tf.cast(index, tf.int64)]),
                                       dtype=tf.float64)


def crop_window(height, width, u):
    """`keras_resnet.data.images.crop_window` in TensorFlow: ``(top, left, h, w)`` int32 of an image of
    ``height`` x ``width`` from the draws ``u`` ``(CROP_ATTEMPTS, 4)`` float64 (a test holds the two
    equal). All attempts are computed at once and the first that fits is taken."""
    import tensorflow as tf

    height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    area = height * width
    lo, hi = np.log(images.CROP_RATIO[0]), np.log(images.CROP_RATIO[1])
    target = area * (images.CROP_AREA[0] + (images.CROP_AREA[1] - images.CROP_AREA[0]) * u[:, 0])
    ratio = tf.exp(lo + (hi - lo) * u[:, 1])
    w, h = tf.round(tf.sqrt(target * ratio)), tf.round(tf.sqrt(target / ratio))  # half to even, as round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    top, left = tf.floor(u[:, 2] * (height - h + 1)), tf.floor(u[:, 3] * (width - w + 1))
    first = tf.argmax(tf.cast(fits, tf.int32))
    aspect = width / height
    fw = tf.where(aspect > images.CROP_RATIO[1], tf.round(height * images.CROP_RATIO[1]), width)
    fh = tf.where(aspect < images.CROP_RATIO[0], tf.round(width / images.CROP_RATIO[0]), height)
    fallback = tf.stack([tf.floor((height - fh) / 2), tf.floor((width - fw) / 2), fh, fw])
    window = tf.where(tf.reduce_any(fits), tf.stack([top[first], left[first], h[first], w[first]]), fallback)
    return tf.cast(window, tf.int32)


def photo_crop(data, index, epoch, seed, size, channels, fallback):
    """The photo recipe's training transform of one example's encoded bytes: float32 pixels at
    `size`, and whether it decoded.

    A JPEG's window is drawn (`crop_draws`, `crop_window`) and decoded in the graph, with no Python:
    ``decode_and_crop_jpeg`` decodes the window with a margin of one 16-pixel block (there the chroma
    upsampling sees the neighbours of a whole decode, so the pixels are Pillow's) and the window is
    cut from it. Other files (and a JPEG without its end marker, a colour JPEG of a grayscale run, or
    a JPEG whose EXIF orientation is not upright, `exif_oriented`) go to ``fallback(index, data, u)
    -> (uint8 crop, ok)`` (`pillow_fallback`, which turns the image upright first)."""
    import tensorflow as tf

    u = crop_draws(seed, epoch, index)
    # a JPEG with its end marker (a truncated one goes to Pillow, which names it; so does one padded
    # with NULs after the marker, which Pillow reads)
    whole = (tf.strings.substr(data, 0, 3) == JPEG_START) & (tf.strings.substr(
        data, tf.maximum(tf.strings.length(data) - 2, 0), 2) == JPEG_END)

    def jpeg(header):
        window = crop_window(header[0], header[1], tf.reshape(u[1:], (-1, 4)))
        return decode_window(data, header, window, size, channels), tf.constant(True)

    def jpeg_or_other():
        header = tf.image.extract_jpeg_shape(data)
        if channels == 3:
            return jpeg(header)
        return tf.cond(header[2] == 1, lambda: jpeg(header), other)  # colour to gray: Pillow's formula

    def upright_jpeg_or_other():
        return tf.cond(exif_oriented(data), other, jpeg_or_other)

    def other():
        pixels, ok = tf.numpy_function(fallback, [index, data, u], (tf.uint8, tf.bool), stateful=False)
        return tf.ensure_shape(pixels, (None, None, channels)), tf.ensure_shape(ok, ())

    crop, ok = tf.cond(whole, upright_jpeg_or_other, other)
    crop = tf.ensure_shape(crop, (None, None, channels))
    x = resize_crop(crop, size)
    x = tf.cond(u[0] < 0.5, lambda: tf.reverse(x, [1]), lambda: x)  # a strided slice costs 4x
    return tf.ensure_shape(x, tuple(size) + (channels,)), ok


def decode_window(data, header, window, size, channels):
    """A JPEG's full-resolution `window` ``(top, left, h, w)`` decoded at its `decode_scale` for an
    output of `size` (``header``: ``tf.image.extract_jpeg_shape``), in the graph: the scaled window
    and a one-block margin (`JPEG_MARGIN`) are decoded by ``decode_and_crop_jpeg`` with that
    ``ratio``, and the window cut from them."""
    import tensorflow as tf

    def at(scale):  # the window's pixels decoded at 1/scale
        def decode():
            top, left, ch, cw = scaled_window(window, scale, header[0], header[1])
            height, width = -(-header[0] // scale), -(-header[1] // scale)
            t, l = tf.maximum(top - JPEG_MARGIN, 0), tf.maximum(left - JPEG_MARGIN, 0)
            b, r = tf.minimum(top + ch + JPEG_MARGIN, height), tf.minimum(left + cw + JPEG_MARGIN, width)
            decoded = tf.io.decode_and_crop_jpeg(data, tf.stack([t, l, b - t, r - l]), channels=channels,
                                                 ratio=scale, dct_method="INTEGER_ACCURATE")
            return decoded[top - t:top - t + ch, left - l:left - l + cw]

        return decode

    return by_scale(decode_scale(window[2], window[3], size), at)


EXIF_SEARCH = 1 << 16  # bytes of a JPEG searched for its orientation (the Exif segment leads the file)
# The orientation entry of an Exif directory: tag 0x0112, type SHORT, count 1, then the value (2..8:
# not upright), little-endian ("II") or big-endian ("MM"); None marks the value's byte.
ORIENTATION_ENTRIES = ((0x12, 0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, None, 0x00),
                       (0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, None))


def exif_oriented(data):
    """Whether a JPEG's first `EXIF_SEARCH` bytes hold an Exif orientation other than upright (1), in
    the graph: one RE2 search for `ORIENTATION_ENTRIES` (about 0.25 ms of CPU an image; matching
    every 10-byte frame of the 64 KiB as tensors cost 7 ms). A false match only sends the file to
    Pillow, which reads the orientation itself."""
    import tensorflow as tf

    head = tf.strings.substr(data, 0, EXIF_SEARCH)
    return tf.strings.regex_replace(head, ORIENTATION_PATTERN, "", replace_global=False) != head


def _entry_pattern(entry):
    return "".join("[\\x02-\\x08]" if v is None else f"\\x{v:02x}" for v in entry)


ORIENTATION_PATTERN = "|".join(_entry_pattern(e) for e in ORIENTATION_ENTRIES)  # every byte below 0x80


def decode_upright(data, channels, scale_of=None):
    """An encoded image (any format the graph decodes) -> uint8 pixels (H, W, `channels`), turned upright
    by its EXIF orientation as every path of the package turns it (`keras_resnet.data.images.open_image`):
    the graph's decode, or Pillow's for a JPEG whose orientation is not upright (`exif_oriented`), at
    the JPEG scale ``scale_of(height, width)`` gives (`keras_resnet.data.images.read_image`)."""
    import tensorflow as tf

    def pillow(encoded):
        encoded = encoded.item() if isinstance(encoded, np.ndarray) else bytes(encoded)
        return images.read_image(encoded, channels, scale_of)

    def upright():
        return tf.numpy_function(pillow, [data], tf.uint8, stateful=False)

    def graph():
        return tf.io.decode_image(data, channels=channels, expand_animations=False)

    return tf.ensure_shape(tf.cond(exif_oriented(data), upright, graph), (None, None, channels))


def pillow_fallback(channels, bad, name_of, size):
    """``(index, encoded bytes, draws) -> (crop, ok)``: the photo crop of a file that the graph does
    not decode, decoded by Pillow (`keras_resnet.data.images.read_crop`: the same window, a JPEG at
    the same reduced scale for an output of `size`); a file that does not decode is recorded in `bad`
    under ``name_of(index)`` (a path, or a tensorflow-datasets example) and gives ok False."""

    def load(index, data, u):
        try:
            encoded = data.item() if isinstance(data, np.ndarray) else bytes(data)
            return images.read_crop(encoded, u[1:].reshape(images.CROP_ATTEMPTS, 4), size, channels), True
        except (OSError, images.ImageError) as e:
            bad.add(name_of(int(index)), decode_error(e))
            return NO_PIXELS[channels], False

    return load


def decode_scale(height, width, size):
    """`keras_resnet.data.images.decode_scale` in the graph: the largest JPEG scale (int32) at which a
    region of ``height`` x ``width`` still has at least ``size``."""
    import tensorflow as tf

    scales = tf.constant(images.JPEG_SCALES, tf.int32)
    fits = ((height // scales >= size[0]) & (width // scales >= size[1])) | (scales == 1)
    return tf.gather(scales, tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32))


def by_scale(scale, branch, scales=tuple(sorted(images.JPEG_SCALES))):
    """``branch(a)()`` for the JPEG scale ``a`` of `scales` that the int32 tensor `scale` holds, in the
    graph: nested ``tf.cond``s (``ratio`` is an attribute of the decode, so each scale is its own op)."""
    import tensorflow as tf

    first, *rest = scales
    if not rest:
        return branch(first)()
    return tf.cond(scale == first, branch(first), lambda: by_scale(scale, branch, tuple(rest)))


def scaled_window(window, scale, height, width):
    """`keras_resnet.data.images.scaled_window` in the graph (`scale` a Python int; ``height`` and
    ``width`` the full-resolution size)."""
    import tensorflow as tf

    top, left, h, w = (window[i] for i in range(4))
    t, l = top // scale, left // scale
    b = tf.minimum(-(-(top + h) // scale), -(-height // scale))
    r = tf.minimum(-(-(left + w) // scale), -(-width // scale))
    return t, l, b - t, r - l


def decode_for_eval(data, channels, size, crop_fraction):
    """An encoded image's pixels for the photo recipe's evaluation transform, in the graph: a JPEG at
    its `keras_resnet.data.images.eval_scale` (the pixels of Pillow's ``Image.draft``), turned upright
    by its EXIF orientation (`decode_upright`), another file whole."""
    import tensorflow as tf

    def jpeg():
        header = tf.image.extract_jpeg_shape(data)
        short = tf.minimum(header[0], header[1])
        def at(scale):
            return lambda: tf.io.decode_jpeg(data, channels=channels, ratio=scale, dct_method="INTEGER_ACCURATE")

        return by_scale(decode_scale(short, short, (int(max(size) / crop_fraction),) * 2), at)

    def other():  # another file, or a JPEG to turn upright: Pillow, at the same scale
        return decode_upright(data, channels, scale_of)

    def scale_of(height, width):
        return images.eval_scale(height, width, size, "photo", crop_fraction)

    plain = (tf.strings.substr(data, 0, 3) == JPEG_START) & tf.logical_not(exif_oriented(data))
    x = tf.cond(plain, jpeg, other)
    return tf.ensure_shape(x, (None, None, channels))


def decode_error(e):
    """What a failed decode says, for a bad-file line (the file is named there)."""
    return str(e).split(": ", 1)[-1] if isinstance(e, images.ImageError) else f"cannot read it: {e}"


def resize_crop(crop, size):
    """A training crop -> float32 at `size`: bilinear, antialiased when shrinking as torchvision's is
    (growing, the two filters are the same and the plain one costs half as much)."""
    import tensorflow as tf

    shrinks = tf.reduce_any(tf.shape(crop)[:2] > size)
    return tf.cond(shrinks, lambda: tf.image.resize(crop, size, method="bilinear", antialias=True),
                   lambda: tf.image.resize(crop, size, method="bilinear"))
