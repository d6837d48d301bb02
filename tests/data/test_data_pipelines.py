"""The input pipelines of keras_resnet.data.pipelines (also importable from keras_resnet.data)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from keras_resnet import data
from keras_resnet.data import pipelines

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def subset():
    (x, y), _, info = data.load("fashion_mnist")
    return x[:1000], y[:1000], info


def _first_batch(ds):
    if isinstance(ds, data.NumpyDataset):
        return ds[0]
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def _all_images(ds):
    if isinstance(ds, data.NumpyDataset):
        return np.concatenate([ds[i][0] for i in range(len(ds))])
    return np.concatenate([x.numpy() for x, _ in ds])


PIPELINES = [data.tf_dataset, data.numpy_dataset]



# --- normalisation ---------------------------------------------------------------------------------


def test_normalize_numpy_and_tensorflow_agree(subset):
    import tensorflow as tf

    x, _, info = subset
    out = data.normalize(x, info)
    assert out.dtype == np.float32
    expected = (x / 255 - info["mean"][0]) / info["std"][0]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(data.normalize(tf.constant(x), info).numpy(), out, atol=1e-6)


def test_calibration_images_are_a_seeded_normalised_sample(subset):
    x, _, info = subset
    calib = data.calibration_images(x, info, count=50, seed=3)
    assert calib.shape == (50, 28, 28, 1) and calib.dtype == np.float32
    assert np.array_equal(calib, data.calibration_images(x, info, count=50, seed=3))
    assert not np.array_equal(calib, data.calibration_images(x, info, count=50, seed=4))
    assert len(data.calibration_images(x[:10], info, count=50)) == 10
    with pytest.raises(ValueError, match="Received: count=0"):
        data.calibration_images(x, info, count=0)


# --- pipelines -------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", PIPELINES)
def test_pipeline_batches_have_right_shapes_and_normalised_statistics(make, subset):
    x, y, info = subset
    evaluation = make(x, y, info, batch_size=128)
    sizes = [len(b[1]) for b in (evaluation if make is data.tf_dataset else
                                 (evaluation[i] for i in range(len(evaluation))))]
    assert sizes == [128] * 7 + [104]
    images = _all_images(evaluation)
    assert images.shape == (1000, 28, 28, 1) and images.dtype == np.float32
    assert abs(images.mean()) < 0.05 and abs(images.std() - 1) < 0.05
    bx, by = _first_batch(make(x, y, info, batch_size=128, training=True, erase=0.5))
    assert bx.shape == (128, 28, 28, 1) and bx.dtype == np.float32 and by.dtype == np.int64
    assert len(_all_images(make(x, y, info, batch_size=128, training=True))) == 7 * 128  # drop remainder


@pytest.mark.parametrize("make", PIPELINES)
def test_pipeline_is_deterministic_for_a_seed_and_differs_for_another(make, subset):
    x, y, info = subset
    a = _first_batch(make(x, y, info, batch_size=64, training=True, seed=1, erase=0.5))
    b = _first_batch(make(x, y, info, batch_size=64, training=True, seed=1, erase=0.5))
    c = _first_batch(make(x, y, info, batch_size=64, training=True, seed=2, erase=0.5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_tf_dataset_reshuffles_and_reaugments_every_epoch(subset):
    x, y, info = subset
    ds = data.tf_dataset(x, y, info, batch_size=64, training=True, seed=0)
    first, second = _first_batch(ds), _first_batch(ds)
    assert not np.array_equal(first[1], second[1]) and not np.array_equal(first[0], second[0])


def test_numpy_dataset_reshuffles_on_epoch_end(subset):
    x, y, info = subset
    ds = data.numpy_dataset(x, y, info, batch_size=64, training=True, seed=0)
    first = ds[0]
    assert np.array_equal(first[0], ds[0][0])  # same epoch, same batch
    ds.on_epoch_end()
    assert not np.array_equal(first[1], ds[0][1])


def _gradient_images(n=256, side=28):
    """Images whose pixel value grows from left to right: a flip reverses the order."""
    row = np.arange(side, dtype=np.uint8)[None, None, :, None] * 8
    return np.broadcast_to(row, (n, side, side, 1)).copy()


@pytest.mark.parametrize("make", PIPELINES)
def test_flip_is_applied_only_when_info_allows_it(make, subset):
    x = _gradient_images()
    y = np.zeros(len(x), np.int64)
    info = dict(subset[2])
    for flip in (False, True):
        info["flip"] = flip
        images = _all_images(make(x, y, info, batch_size=64, training=True, seed=0))
        increasing = images[:, 14, 15, 0] > images[:, 14, 12, 0]  # the centre stays inside after the crop
        assert increasing.all() if not flip else 0.3 < increasing.mean() < 0.7


@pytest.mark.parametrize("make", PIPELINES)
def test_crop_shifts_by_at_most_an_eighth_of_the_side(make, subset):
    x, info = _gradient_images(), dict(subset[2], flip=False)
    images = _all_images(make(x, np.zeros(len(x), np.int64), info, batch_size=64, training=True))
    level = np.rint((images[:, 14, 14, 0] * info["std"][0] + info["mean"][0]) * 255 / 8)  # source column
    assert set(level) == set(range(14 - 3, 14 + 4))


@pytest.mark.parametrize("make", PIPELINES)
def test_random_erasing_blanks_one_box_per_image(make, subset):
    x, y, info = subset
    batch = _first_batch(make(x, y, info, batch_size=64, training=True, erase=1.0))[0][..., 0]
    for image in batch:  # no Fashion-MNIST pixel normalises to exactly 0: the zeros are the box
        rows, cols = np.nonzero(np.any(image == 0, axis=1))[0], np.nonzero(np.any(image == 0, axis=0))[0]
        box = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert (box == 0).all() and (image == 0).sum() == box.size
        assert 0.01 * 28 * 28 <= box.size <= 0.45 * 28 * 28
    clean = _first_batch(make(x, y, info, batch_size=64, training=True, erase=0.0))[0]
    assert not (clean == 0).any()


def test_tf_and_numpy_augmentations_agree_for_the_same_draws(subset):
    x, _, info = subset
    u = np.random.default_rng(0).random((64, 8), np.float32)
    expected = pipelines.augment_batch(x[:64], u, info, 0.5, pipelines.NUMPY_OPS)
    got = pipelines.augment_batch(x[:64], u, info, 0.5, pipelines.tf_ops()).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("make", PIPELINES)
@pytest.mark.parametrize("bad", [{"x": "float"}, {"batch_size": 0}, {"erase": 1.5}])
def test_pipeline_rejects_bad_input(make, subset, bad):
    x, y, info = subset
    args = {"x": x, "y": y, "info": info, "batch_size": 32, "erase": 0.0, **bad}
    if bad.get("x") == "float":
        args["x"] = x.astype(np.float32)
    with pytest.raises(ValueError, match=f"Received: {next(iter(bad))}"):
        make(**args)


@pytest.mark.slow
def test_numpy_dataset_trains_on_jax_without_tensorflow():
    pytest.importorskip("jax")
    script = textwrap.dedent("""
        import sys
        sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
        import keras
        from keras_resnet import data
        (x, y), _, info = data.load("fashion_mnist")
        ds = data.numpy_dataset(x[:256], y[:256], info, batch_size=64, training=True, erase=0.5)
        bx, by = ds[0]
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(ds, epochs=2, verbose=0)
        print(keras.backend.backend(), bx.shape, bx.dtype, len(history.history["loss"]))
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-2] == "jax (64, 28, 28, 1) float32 2"


@pytest.mark.parametrize("make", [data.tf_dataset, data.numpy_dataset])
def test_a_fit_resumed_at_an_epoch_reads_the_batches_of_the_uninterrupted_fit(make):
    """`start_at_epoch` against Keras's own fit: a pipeline positioned at epoch 2 gives fit(initial_epoch=2)
    the shuffles and augmentations that epochs 2 and 3 of a fit from epoch 0 got (for tf.data this pins
    how many iterators fit makes per epoch, `FIT_ITERATORS_PER_EPOCH`)."""
    import keras

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (256, 8, 8, 1)).astype("uint8"), np.arange(256) % 10
    info = {"mean": [0.3], "std": [0.4], "flip": True}
    seen = []

    class Recorder(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (-1, 64)))

        def train_step(self, batch):
            seen.append(keras.ops.convert_to_numpy(batch[0]))
            return {"seen": keras.ops.sum(batch[0])}

    def fit(start):
        seen.clear()
        ds = pipelines.start_at_epoch(make(x, y, info, batch_size=64, training=True, seed=1, erase=0.5), start)
        model = Recorder()
        model.compile(run_eagerly=True)
        model.fit(ds, epochs=4, initial_epoch=start, verbose=0, shuffle=False)
        return list(seen)

    whole, resumed = fit(0), fit(2)
    assert len(whole) == 16 and len(resumed) == 8
    for a, b in zip(whole[8:], resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(whole[0], resumed[0])
