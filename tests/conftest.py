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


@pytest.fixture(scope="session")
def fmnist_model(tmp_path_factory, worker_id):
    """One tiny ResNet (three basic blocks, width 0.5) trained 300 steps on real Fashion-MNIST, to
    confident predictions, and saved as ``model.keras``: shared by every test that needs a trained model
    (export, the app's view of it, the docs). Fields: ``model``, ``path``, ``data`` (as `data.load`).

    Under pytest-xdist the first worker that needs it trains it, under a file lock, in the run's
    shared temporary folder; the others load that file."""
    from types import SimpleNamespace

    from filelock import FileLock

    from keras_resnet import data

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # the workers' folders are inside the run's own
        shared = shared.parent
    path = shared / "fmnist_model" / "model.keras"
    with FileLock(str(shared / "fmnist_model.lock"), timeout=900):
        if not path.exists():
            _train_fmnist_model(path)
    model = keras.saving.load_model(path)
    return SimpleNamespace(model=model, path=path, data=data.load("fashion_mnist"))


def _train_fmnist_model(path):
    from keras_resnet import build, data
    from keras_resnet.utils import io_utils

    (x, y), _, info = data.load("fashion_mnist")
    keras.utils.set_random_seed(0)
    model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.5, num_classes=10)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    n = 19200
    model.fit(data.normalize(x[:n], info), y[:n], batch_size=64, epochs=1, verbose=0)  # 300 steps
    path.parent.mkdir(parents=True, exist_ok=True)
    io_utils.save_model(model, path)


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


# The files whose tests take longest, longest first (from `make test`'s --durations): the workers of
# `pytest -n` take whole files (--dist loadfile) in this order, so that no long file starts last and
# leaves one worker running alone at the end. Every other file follows in its usual order.
LONGEST_FIRST = ("test_docs.py", "test_tuning.py", "test_faults.py", "test_distributed.py", "test_family.py",
                 "test_tuning_latency.py", "test_training.py", "test_finetune.py", "test_pretrained.py",
                 "test_export.py", "test_models.py", "test_cli.py", "test_export_app.py", "test_api.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept
