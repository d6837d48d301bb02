"""Shared test set-up: the TensorFlow backend (unless chosen otherwise), quiet logs, a fixed seed."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

SEED = 1337


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same Python, NumPy and backend random state."""
    keras.utils.set_random_seed(SEED)
    return SEED


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


@pytest.fixture
def randomize_bn():
    """Gives every BatchNormalization non-trivial statistics and affine weights, in place.

    Freshly built blocks have gamma 1 (or 0), beta 0, mean 0, variance 1, under which many wiring
    mistakes produce the same numbers; random values make output comparisons meaningful.
    """

    def randomize(layer_or_model, seed=SEED):
        gen = np.random.default_rng(seed)
        for w in layer_or_model.weights:
            name = w.path.split("/")[-1]
            if name in ("gamma", "moving_variance"):
                w.assign(gen.uniform(0.5, 1.5, w.shape).astype(w.dtype))
            elif name in ("beta", "moving_mean"):
                w.assign(gen.normal(0.0, 0.2, w.shape).astype(w.dtype))
        return layer_or_model

    return randomize


def pytest_configure(config):
    # Keras's TensorFlow backend converts tensors with np.array(x), which NumPy 2 flags on every call.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    )


def kill_when(command, env, done, timeout):
    """Starts `command`, sends it SIGKILL as soon as ``done()`` is true (or after `timeout` seconds,
    or when it ends by itself), and waits for it: a real process killed at a chosen point."""
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not done() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    return process.wait()
