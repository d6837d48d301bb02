"""Image files -> uint8 pixels, and the evaluation transforms: the one decoder of the package.

Training from a folder, ``evaluate``, ``export``'s calibration and ``predict`` all read files through
`read_image`, so a picture gives the same pixels everywhere. Pillow only (no TensorFlow): the app-side
``predict`` needs nothing else. The rules, whatever the file's mode:

- 8-bit grayscale (``L``) stays one channel; ``1`` (bilevel) becomes ``L``; ``LA`` drops its alpha.
- 16-bit (``I;16``, ``I``) keeps the high byte (``value >> 8``), which is what TensorFlow's PNG decoder
  does; 32-bit float (``F``) is clipped to 0-255.
- Palette (``P``), ``RGBA``, ``CMYK``, ``YCbCr``, ... become ``RGB`` (alpha dropped, not composited).

Every extension of `IMAGE_EXTENSIONS` is read (Pillow reads WebP and TIFF), and an image folder takes
all of them. The transforms after decoding:

- ``"small"`` (the CIFAR / Fashion-MNIST recipe): a bilinear resize to the model's input.
- ``"photo"`` (the ImageNet recipe): `center_crop` resizes the shorter side to ``size / crop_fraction``
  (bicubic, antialiased) and keeps the centre ``size``, as torchvision's and timm's evaluation does.
  Training's random-resized-crop lives in `keras_resnet.data.streams` (TensorFlow); `crop_window` here is
  its reference in NumPy.
"""

import io
import math
import os

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TRANSFORMS = ("small", "photo")
TRANSFORM_CHOICES = ("auto",) + TRANSFORMS
PHOTO_MIN_SIDE = 64  # "auto": the photo recipe from this input side up, the small-image one below
CROP_FRACTION = 0.875  # evaluation: resize to size / 0.875, keep the centre (224 of 256)
CROP_AREA = (0.08, 1.0)  # training: random-resized-crop's share of the image area
CROP_RATIO = (3 / 4, 4 / 3)  # and aspect ratio (width / height), drawn log-uniformly
CROP_ATTEMPTS = 10  # draws before the fallback to a centre crop (torchvision's rule)
ORIENTATION = "exif"  # every path turns a file upright by its EXIF orientation before any transform
ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap the stored height and width
JPEG_SCALES = (8, 4, 2, 1)  # libjpeg's DCT scaling: a JPEG decodes at 1/8, 1/4, 1/2 or full size


class ImageError(ValueError):
    """A file that is not a readable image; the message names it."""


def choose_transform(transform, size):
    """``"photo"`` or ``"small"``: `transform`, or for ``"auto"`` the photo recipe when the input's
    smaller side has at least `PHOTO_MIN_SIDE` pixels."""
    from keras_resnet.utils.checks import check_choice

    check_choice("transform", transform, TRANSFORM_CHOICES)
    if transform == "auto":
        return "photo" if min(size) >= PHOTO_MIN_SIDE else "small"
    return transform


def describe(transform, size, crop_fraction=CROP_FRACTION):
    """What a run folder records about the transforms (``config.json``, ``run.json``)."""
    h, w = (int(d) for d in size)
    if transform == "photo":
        summary = (f"photo recipe: random-resized-crop (area {CROP_AREA[0]:.0%}-"
                   f"{CROP_AREA[1]:.0%}, aspect 3/4-4/3) + flip at {h}x{w}; evaluation resizes "
                   f"the shorter side to {int(max(h, w) / crop_fraction)} and keeps the centre {h}x{w}")
    else:
        summary = (f"small-image recipe: resize to {h}x{w}, pad-crop + flip (+ erasing) in training, "
                   "resize only in evaluation")
    return {"recipe": transform, "size": [h, w], "crop_fraction": crop_fraction if transform == "photo" else None,
            "orientation": ORIENTATION, "summary": summary}


def decode_scale(height, width, size):
    """The reduced-scale decode rule: the largest JPEG scale ``a`` of `JPEG_SCALES` at which a region
    of ``height`` x ``width`` full-resolution pixels still has at least ``size`` ``(height, width)``
    (``height // a >= size[0]`` and ``width // a >= size[1]``); 1 when none does. The training crop
    (in the graph, `keras_resnet.data.transforms.photo_crop`, and through Pillow) and the evaluation
    transform decode at this scale, then resize."""
    for a in JPEG_SCALES:
        if height // a >= size[0] and width // a >= size[1]:
            return a
    return 1


def eval_scale(height, width, size, transform="small", crop_fraction=CROP_FRACTION):
    """The decode scale of the evaluation transform: the photo recipe's resized shorter side
    (`center_crop`) must still fit in the shorter side at that scale; the small recipe decodes whole."""
    if transform != "photo":
        return 1
    short = min(height, width)
    return decode_scale(short, short, (int(max(size) / crop_fraction),) * 2)


def scaled_window(window, scale, height, width):
    """A full-resolution window ``(top, left, h, w)`` in the pixels of a decode at 1/`scale` of
    ``height`` x ``width`` (the scaled image's size): the scaled pixels that cover it."""
    top, left, h, w = (int(v) for v in window)
    t, l = top // scale, left // scale
    b, r = min(-(-(top + h) // scale), height), min(-(-(left + w) // scale), width)
    return t, l, b - t, r - l


def open_image(source, scale_of=None):
    """A loaded ``PIL.Image`` from a path or the file's bytes, turned upright by its EXIF orientation
    (a phone's portrait photo is stored sideways; ``ImageOps.exif_transpose``); an `ImageError` naming
    it otherwise: any decoder error is a bad image (Pillow's ``DecompressionBombError`` for a
    20000x20000 file included), never a traceback.

    `scale_of`: ``(height, width) -> a``, the scale (`JPEG_SCALES`) at which a JPEG of that upright
    size is decoded (``Image.draft``: libjpeg's DCT scaling, the pixels of ``tf.io.decode_jpeg``'s
    ``ratio``); the image then has ``ceil(height / a)`` x ``ceil(width / a)`` pixels. Other formats
    decode whole."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(os.fspath(source))
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        if scale_of is not None and image.format == "JPEG":
            w, h = image.size
            upright = (w, h) if image.getexif().get(0x0112) in ROTATED else (h, w)
            scale = scale_of(*upright)
            if scale > 1:
                image.draft(image.mode, (w // scale, h // scale))
        image.load()
        image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image: not a format Pillow identifies") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"{name}: not a readable image: {reason}") from None
    except Exception as e:  # noqa: BLE001 (a decoder's own errors: each is a bad image, named)
        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__
        raise ImageError(f"{name}: not a readable image: {reason}") from None
    return image


def is_colour(mode):
    """Whether a Pillow mode holds colour (``P`` counts: a palette is colour unless all its entries
    are gray, which `read_image` does not check)."""
    return mode not in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def to_array(image, channels=None):
    """A ``PIL.Image`` -> uint8 ``(H, W, C)`` by the rules of the module docstring; ``channels`` 1 or 3
    forces grayscale (ITU-R 601 luma, Pillow's ``convert("L")``) or RGB (gray repeated)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        gray, image = np.clip(np.asarray(image).astype(np.int64) >> 8, 0, 255).astype(np.uint8), None
    elif mode == "F":
        gray, image = np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), None
    elif not is_colour(mode):
        gray, image = np.asarray(image.convert("L"), np.uint8), None
    if image is None:
        return np.repeat(gray[..., None], 3, -1) if channels == 3 else gray[..., None]
    if channels == 1:
        return np.asarray(image.convert("RGB").convert("L"), np.uint8)[..., None]
    return np.asarray(image.convert("RGB"), np.uint8)


def read_image(source, channels=None, scale_of=None):
    """Decodes an image file (a path or its bytes) to uint8 ``(H, W, C)``: C = 1 for grayscale files,
    3 for colour ones, or `channels` when given; a JPEG at the scale `scale_of` chooses (`open_image`).
    Raises `ImageError` naming the file."""
    return to_array(open_image(source, scale_of), channels)


def read_crop(source, u, size, channels=None):
    """The photo recipe's training crop of an image file through Pillow, before its resize: the window
    of `crop_window` (draws `u`, in the upright full-resolution image's coordinates), decoded at the
    `decode_scale` of the window for an output of `size` (the graph's rule, so both give the same
    pixels). Raises `ImageError` naming the file."""
    drawn = {}

    def scale_of(height, width):
        drawn["window"] = crop_window(height, width, u)
        return decode_scale(*drawn["window"][2:], size)

    image = open_image(source, scale_of)
    full = drawn.get("window")
    pixels = to_array(image, channels)
    if full is None:  # decoded whole
        full = crop_window(*pixels.shape[:2], u)
        scale = 1
    else:
        scale = decode_scale(*full[2:], size)
    top, left, h, w = scaled_window(full, scale, *pixels.shape[:2])
    return np.ascontiguousarray(pixels[top:top + h, left:left + w])


def read_for_eval(source, size, transform="small", crop_fraction=CROP_FRACTION, channels=None):
    """An image file at `size` by the evaluation transform (`eval_transform`), a JPEG decoded at its
    `eval_scale`: the pixels ``evaluate``, ``export`` and ``predict`` see. Raises `ImageError`."""
    def scale_of(height, width):
        return eval_scale(height, width, size, transform, crop_fraction)

    return eval_transform(read_image(source, channels, scale_of), size, transform, crop_fraction)


def to_pil(pixels):
    from PIL import Image

    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def _back(image, channels):
    return np.asarray(image, np.uint8).reshape(image.size[1], image.size[0], channels)


def resize(pixels, size):
    """uint8 ``(H, W, C)`` -> ``size`` ``(height, width)``, bilinear (antialiased when shrinking): the
    small-image recipe's only transform."""
    if tuple(pixels.shape[:2]) == tuple(size):
        return pixels
    from PIL import Image

    return _back(to_pil(pixels).resize((size[1], size[0]), Image.Resampling.BILINEAR), pixels.shape[-1])


def center_crop(pixels, size, crop_fraction=CROP_FRACTION):
    """The photo recipe's evaluation transform: the shorter side resized to ``int(side /
    crop_fraction)`` (side: the larger of ``size``), bicubic and antialiased, then the centre ``size``
    ``(height, width)``. For a square `size` this is torchvision's ``Resize(int(side / crop_fraction),
    BICUBIC)`` + ``CenterCrop(side)``."""
    from PIL import Image

    h, w = pixels.shape[:2]
    th, tw = size
    short = int(max(th, tw) / crop_fraction)
    if h <= w:
        nh, nw = short, int(short * w / h)
    else:
        nh, nw = int(short * h / w), short
    image = to_pil(pixels)
    if (nh, nw) != (h, w):
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    nh, nw = max(nh, th), max(nw, tw)  # never smaller than the crop (Pillow pads a larger box)
    top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
    return _back(image.crop((left, top, left + tw, top + th)), pixels.shape[-1])


def eval_transform(pixels, size, transform="small", crop_fraction=CROP_FRACTION):
    """The run's evaluation transform (``"small"``: `resize`; ``"photo"``: `center_crop`)."""
    return center_crop(pixels, size, crop_fraction) if transform == "photo" else resize(pixels, size)


def crop_window(height, width, u):
    """Random-resized-crop's window ``(top, left, h, w)`` of an image from uniform draws ``u``
    ``(CROP_ATTEMPTS, 4)``: torchvision's ``RandomResizedCrop.get_params`` (area 8-100 %, aspect
    3/4-4/3 log-uniform, ten attempts, then the centre crop of the whole image with the aspect
    clamped to the range). The NumPy reference of `keras_resnet.data.streams`'s TensorFlow version."""
    area = height * width
    lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for a, r, t, s in np.asarray(u, np.float64)[:CROP_ATTEMPTS]:
        target = area * (CROP_AREA[0] + (CROP_AREA[1] - CROP_AREA[0]) * a)
        ratio = math.exp(lo + (hi - lo) * r)
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(t * (height - h + 1)), int(s * (width - w + 1)), h, w
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif ratio > CROP_RATIO[1]:
        h, w = height, int(round(height * CROP_RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
