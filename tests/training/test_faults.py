"""Real faults during a run: a full disk, kill -9 inside a checkpoint, truncated model files, and a
resume that must not lose the best model. After each, the same command finishes the run, the history
has each epoch once, and no earlier good file is lost."""

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import pytest

from keras_resnet import training
from keras_resnet.training import callbacks, history
from keras_resnet.utils import io_utils
from keras_resnet.training import Recipe

TINY = dict(depth=8, width=0.25)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def _train(run_dir, epochs=3, extra=(), learning_rate=0.05, **kwargs):
    data = training.load_run_data(recipe=Recipe(seed=1), train_size=2000, test_size=500)
    model = keras_resnet_build(data)
    recipe = Recipe(epochs=epochs, batch_size=64, learning_rate=learning_rate, seed=1)
    return training.fit_run(model, recipe, data, run_dir, verbose=0, callbacks=extra, **kwargs)


def keras_resnet_build(data):
    from keras_resnet import build

    keras.utils.set_random_seed(1)
    return build(input_shape=data.info["input_shape"], num_classes=data.info["num_classes"], **TINY)


def _epochs(run_dir):
    return history.read_history(os.path.join(run_dir, "history.csv")).get("epoch", [])


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


class _StopAfter(keras.callbacks.Callback):
    """A crash right after epoch `epoch` was committed (an exception out of fit)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


@pytest.mark.slow
def test_resumed_run_keeps_the_best_model_of_before_the_interruption(tmp_path, monkeypatch):
    run_dir = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(run_dir, epochs=4, extra=[_StopAfter(1)])
    state = callbacks.RunState(run_dir)
    best_before = max(history.read_history(state.history_path)["val_accuracy"])
    digest = _digest(state.best_path)

    # The resumed epochs are made worse on purpose: a learning rate far too high for this network.
    monkeypatch.setattr(training.recipe, "learning_rate_schedule",
                        lambda recipe, steps: keras.optimizers.schedules.CosineDecay(40.0, 10**6))
    result = _train(run_dir, epochs=4)
    val = history.read_history(state.history_path)["val_accuracy"]
    assert _epochs(run_dir) == [0, 1, 2, 3]
    assert max(val[2:]) < best_before, "the resumed epochs were meant to be worse"
    assert result["best_val_accuracy"] == pytest.approx(best_before)
    assert _digest(state.best_path) == digest, "a worse epoch after the resume replaced best.keras"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only); skipped where this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


class _FillDisk(keras.callbacks.Callback):
    """After epoch 0 is committed, fills the filesystem up to `leave` free bytes."""

    def __init__(self, path, leave):
        super().__init__()
        self.path, self.leave = path, leave

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            st = os.statvfs(os.path.dirname(self.path))
            with open(self.path, "wb") as f:
                f.write(b"\0" * max(st.f_bavail * st.f_frsize - self.leave, 0))


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_then_the_same_run_resumes(small_disk):
    run_dir = str(small_disk / "run")
    filler = str(small_disk / "filler")
    with pytest.raises(OSError, match="no space left on the device while writing") as err:
        _train(run_dir, extra=[_FillDisk(filler, leave=20_000)])
    assert run_dir in str(err.value)
    assert _epochs(run_dir) == [0], "history.csv should hold the epoch committed before the disk filled"
    assert [os.path.basename(f) for f in callbacks.RunState(run_dir).committed()] == ["epoch-0001"]

    os.remove(filler)  # space freed: the same run again
    result = _train(run_dir)
    assert _epochs(run_dir) == [0, 1, 2]
    assert result["epochs_run"] == 3
    assert callbacks.readable_keras_file(os.path.join(run_dir, "model.keras"))
    assert not [f for f in os.listdir(os.path.join(run_dir, "state")) if "partial" in f]


# The run of the kill -9 test: a process runs it and is killed; the test's own process runs it again.
THREE_EPOCHS = ("training.train(depth=8, width=0.25, recipe=training.Recipe(epochs=3, batch_size=64, seed=1), "
                "train_size=600, test_size=500, run_dir=run_dir, verbose=2)")
KILLED_WHILE_COMMITTING = textwrap.dedent("""
    import os, signal, sys
    from keras_resnet import training
    from keras_resnet.utils import io_utils

    real_write_json = io_utils.write_json

    def write_json(path, obj, **kwargs):
        # kill -9 between the two files of the second epoch's checkpoint: weights written, state not
        if path.endswith("state.json") and obj["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write_json(path, obj, **kwargs)

    io_utils.write_json = write_json
    run_dir = sys.argv[1]
""") + THREE_EPOCHS


@pytest.mark.slow
def test_kill_9_inside_a_checkpoint_then_the_same_command_resumes(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_COMMITTING, run_dir], env=ENV,
                            capture_output=True, text=True, timeout=400)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _epochs(run_dir) == [0]
    assert [f for f in os.listdir(os.path.join(run_dir, "state")) if "partial" in f], \
        "the kill should leave a half-written checkpoint behind"

    again = eval(THREE_EPOCHS, {"training": training, "run_dir": run_dir})  # the same call, in this process
    out = capsys.readouterr().out
    assert "Epoch 1/3" not in out and "Epoch 2/3" in out
    assert again["epochs_run"] == 3
    assert _epochs(run_dir) == [0, 1, 2]
    assert not [f for f in os.listdir(os.path.join(run_dir, "state")) if "partial" in f]


@pytest.mark.slow
def test_truncated_model_files_and_state_are_set_aside_and_the_run_finishes(tmp_path):
    run_dir = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(run_dir, epochs=4, extra=[_StopAfter(1)])
    state = callbacks.RunState(run_dir)
    newest = state.committed()[0]
    for path in (state.best_path, os.path.join(newest, callbacks.WEIGHTS_FILE)):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    with pytest.warns(UserWarning, match="could not be read") as warned:
        result = _train(run_dir, epochs=4)
    set_aside = sorted(os.path.basename(p) for p in os.listdir(tmp_path / "run") if ".unreadable-" in p)
    assert sum("could not be read" in str(w.message) for w in warned) == 2
    assert set_aside and set_aside[0].startswith("best.keras.unreadable-")
    assert [f for f in os.listdir(state.state_dir) if ".unreadable-" in f], "the bad state was deleted"
    # The newest state was unreadable: the run went back to the one before and redid that epoch.
    assert _epochs(run_dir) == [0, 1, 2, 3] and result["epochs_run"] == 4
    for name in ("best.keras", "model.keras"):
        assert callbacks.readable_keras_file(os.path.join(run_dir, name))


@pytest.mark.slow
def test_finished_run_with_a_truncated_final_model_writes_it_again_with_its_averaged_weights(tmp_path):
    """A finished run whose model.keras was cut short: the same run again writes it anew, from the
    weight average (EMA) the run ended with, and trains nothing."""
    data = training.load_run_data(recipe=Recipe(seed=1), train_size=1000, test_size=500)
    recipe = Recipe(epochs=1, batch_size=64, learning_rate=0.05, ema=0.9, seed=1)
    first = training.fit_run(keras_resnet_build(data), recipe, data, tmp_path, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    with open(path, "r+b") as f:
        f.truncate(100)
    again = training.fit_run(keras_resnet_build(data), recipe, data, tmp_path, verbose=0)
    assert callbacks.readable_keras_file(path)
    assert again["test_loss"] == pytest.approx(first["test_loss"], rel=1e-5)
    assert again["test_accuracy"] == pytest.approx(first["test_accuracy"])
    assert _epochs(tmp_path) == [0]


# --- one writer per folder ---------------------------------------------------------------------------


def _hold_lock(folder, pid):
    """Locks `folder` the way another process would (a lock on its own open file), claiming `pid`."""
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, io_utils.LOCK_FILE), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{pid}\n".encode())
    return fd


def test_a_second_writer_of_a_run_folder_is_refused_before_it_writes_naming_folder_and_holder(tmp_path):
    run_dir = str(tmp_path / "run")
    fd = _hold_lock(run_dir, 4242)
    try:
        with pytest.raises(io_utils.FolderInUseError,
                           match=rf"run folder {run_dir} is in use by another process \(pid 4242\)"):
            training.fit_run(None, Recipe(), None, run_dir)  # refused before the model or data are touched
    finally:
        os.close(fd)
    assert os.listdir(run_dir) == [io_utils.LOCK_FILE]
    with io_utils.folder_lock(run_dir):  # free again once its holder has gone
        assert io_utils.lock_holder(run_dir) == os.getpid()


def test_a_second_search_on_a_search_folder_is_refused_and_overwrite_keeps_the_lock(tmp_path):
    from keras_resnet import tuning

    setup = tuning.SearchSetup(directory=str(tmp_path), search_name="s", overwrite=True)
    fd = _hold_lock(tmp_path / "s", 4343)
    try:
        with pytest.raises(io_utils.FolderInUseError, match=r"search folder .*/s is in use by another process "
                                                            r"\(pid 4343\).*worker"):
            tuning.run_search(setup=setup)
    finally:
        os.close(fd)
    (tmp_path / "s" / "old.json").write_text("{}")
    with io_utils.folder_lock(tmp_path / "s"):
        tuning.search._clear(str(tmp_path / "s"))
    assert os.listdir(tmp_path / "s") == [io_utils.LOCK_FILE]


@pytest.mark.slow
def test_two_train_processes_on_one_run_folder_one_is_refused_and_the_other_killed_with_sigkill_resumes(
        tmp_path, capsys):
    """Bound: two short CLI processes of a depth-8 network, then the resume in this process: under a minute."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "keras_resnet.cli", "train", "--depth", "8", "--width", "0.25", "--epochs",
               "4", "--train-size", "2000", "--test-size", "500", "--batch-size", "64", "--verbose", "2",
               "--run-dir", str(run_dir)]
    both = [subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    try:
        deadline = time.monotonic() + 400
        while all(p.poll() is None for p in both):  # the refused one ends as soon as the other holds the folder
            assert time.monotonic() < deadline, "neither process was refused"
            time.sleep(0.1)
        refused = next(p for p in both if p.poll() is not None)
        holder = next(p for p in both if p is not refused)
        err = refused.communicate(timeout=60)[1].strip().splitlines()
        assert refused.returncode == 1, err
        assert err == [f"keras-resnet train: error: the run folder {run_dir} is in use by another process "
                       f"(pid {holder.pid}); two writers would mix their files; {training.RUN_DIR_IN_USE}"]
        while not (run_dir / "state" / "epoch-0001").exists():
            assert time.monotonic() < deadline and holder.poll() is None, holder.communicate()[1][-2000:]
            time.sleep(0.05)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        for p in both:
            if p.poll() is None:
                p.kill()
                p.wait()
    done = _epochs(str(run_dir))
    assert 1 <= len(done) < 4, "the holder should be killed in the middle of its run"
    assert not (run_dir / "model.keras").exists()
    # The killed run resumes from its last finished epoch: the same command, run in this process.
    from keras_resnet import cli

    capsys.readouterr()
    assert cli.main(command[3:]) == 0
    out = capsys.readouterr().out
    assert f"Epoch {len(done) + 1}/4" in out and "Epoch 1/4" not in out
    assert "Epoch 4/4" in out
    assert _epochs(str(run_dir)) == [0, 1, 2, 3]
    assert json.loads((run_dir / "run.json").read_text())["epochs_run"] == 4
