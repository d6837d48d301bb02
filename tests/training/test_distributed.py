"""Data-parallel training across processes (keras_resnet.training.distributed): real jobs of two processes on
localhost, one CPU device each, on the JAX backend, talking through gloo; every launch is bounded."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_resnet import training
from keras_resnet.training import distributed, process_data
from keras_resnet.data import folder_streams
from keras_resnet.data import numpy_dataset

pytestmark = pytest.mark.slow

# Runs the CLI, keeping the weights each process starts and ends with (process 1 writes no run folder).
DRIVER = """
import sys
import numpy as np
from keras_resnet import cli
from keras_resnet.training import run as training  # the module whose train() calls fit_run
weights_path, argv = sys.argv[1], sys.argv[2:]
fit_run = training.fit_run
def fit_and_keep_weights(model, *args, **kwargs):
    np.savez(weights_path.replace(".npz", "_start.npz"), *model.get_weights())
    result = fit_run(model, *args, **kwargs)
    np.savez(weights_path, *model.get_weights())
    return result
training.fit_run = fit_and_keep_weights
from keras_resnet.data import folder_streams  # record the files each process reads in each epoch of a stream
epoch_order = folder_streams.epoch_order
def recorded(n, batch_size, seed, epoch, process=0, processes=1):
    rows = epoch_order(n, batch_size, seed, epoch, process, processes)
    with open(weights_path.replace(".npz", "_files.txt"), "a") as f:
        f.write(" ".join(map(str, [epoch, *rows])) + "\\n")
    return rows
folder_streams.epoch_order = recorded
sys.exit(cli.main(argv))
"""
TINY = ["train", "--depth", "8", "--width", "0.25", "--train-size", "320", "--test-size", "2000", "--batch-size", "32",
        "--distribute", "data-parallel", "--verbose", "2"]
LAUNCH_TIMEOUT = 420  # seconds for one launch of a job, on a shared 2-core machine


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Compiled XLA programs are kept between the launches of this file (JAX's persistent cache, in a folder
# of the run's): a relaunch and the second process of a job skip the compilations of the first.
COMPILATION_CACHE = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    COMPILATION_CACHE["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))


def job_env(port, process, processes=2, **extra):
    env = {**os.environ, **COMPILATION_CACHE, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONUNBUFFERED": "1", distributed.ADDRESSES: f"127.0.0.1:{port}",
           distributed.NUM_PROCESSES: str(processes), distributed.PROCESS_ID: str(process), **extra}
    env.pop("XLA_FLAGS", None)
    return env


def start(tmp_path, name, env, args):
    """A process running the CLI through DRIVER; its output goes to <name>.log."""
    log = open(tmp_path / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / f"{name}.npz"), *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = tmp_path / f"{name}.log"
    return proc


def finish(procs, timeout=LAUNCH_TIMEOUT):
    """Waits for every process; kills them all if one runs past `timeout`. Returns their outputs."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        pytest.fail("a process of the job ran past the time limit:\n" + "\n".join(
            p.log_path.read_text()[-2000:] for p in procs))
    return [p.log_path.read_text() for p in procs]


def weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def epochs_started(log):
    return [int(line.split()[1].split("/")[0]) for line in log.splitlines() if line.startswith("Epoch ")]


@pytest.fixture(scope="module")
def two_and_one(tmp_path_factory):
    """One epoch (9 steps of a global batch of 32) by a job of two processes, each given its own run
    folder, and by one process alone with the same command."""
    tmp = tmp_path_factory.mktemp("dp")
    port = free_port()
    procs = [start(tmp, f"p{i}", job_env(port, i),
                   TINY + ["--epochs", "1", "--run-dir", str(tmp / f"run{i}")]) for i in range(2)]
    env = {k: v for k, v in job_env(port, 0).items() if not k.startswith("KERAS_DISTRIBUTION")}
    alone = start(tmp, "alone", env, TINY + ["--epochs", "1", "--run-dir", str(tmp / "run_alone")])
    logs = finish(procs + [alone])
    for p, log in zip(procs + [alone], logs):
        assert p.returncode == 0, log[-3000:]
    return tmp


def test_processes_start_and_end_with_identical_weights(two_and_one):
    for when in ("_start", ""):
        w0, w1 = weights(two_and_one / f"p0{when}.npz"), weights(two_and_one / f"p1{when}.npz")
        assert len(w0) == len(w1) > 10
        for a, b in zip(w0, w1):
            np.testing.assert_array_equal(a, b)


def test_two_processes_train_like_one_with_the_same_global_batch(two_and_one):
    """Gradients are all-reduced and BatchNorm's batch statistics cover the global batch (each
    process holds 16 of the 32 images): every weight of the job ends where one process with the same
    batch of 32 puts it, within 2% of how far training moved it (float32 sums in another order, over
    9 steps; statistics of 16 images instead of 32 would move the weights differently altogether)."""
    job, alone = weights(two_and_one / "p0.npz"), weights(two_and_one / "alone.npz")
    start = weights(two_and_one / "alone_start.npz")
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(alone, start)) > 0.05
    for j, a, s in zip(job, alone, start):
        assert np.max(np.abs(j - a)) <= 0.02 * np.max(np.abs(a - s)) + 1e-6


def test_only_process_zero_writes_the_run_folder(two_and_one):
    assert (two_and_one / "run0" / "model.keras").exists()
    assert (two_and_one / "run0" / "state").is_dir()
    assert not (two_and_one / "run1").exists()


def test_run_json_records_processes_devices_and_batches(two_and_one):
    job = json.loads((two_and_one / "run0" / "run.json").read_text())
    alone = json.loads((two_and_one / "run_alone" / "run.json").read_text())
    assert {k: job[k] for k in ("processes", "devices", "global_batch", "per_process_batch")} == {
        "processes": 2, "devices": 2, "global_batch": 32, "per_process_batch": 16}
    assert {k: alone[k] for k in ("processes", "devices", "global_batch", "per_process_batch")} == {
        "processes": 1, "devices": 1, "global_batch": 32, "per_process_batch": 32}
    assert job["test_accuracy"] == pytest.approx(alone["test_accuracy"], abs=3e-3)  # 6 of 2,000 images


def _photo_folder(folder, classes=3, per_class=110):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 60 * c, 40, (5, 5, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).resize((40, 40), Image.Resampling.BILINEAR).save(folder / f"c{c}" / f"{i}.jpg")
    return folder


def _files_read(path):
    """{epoch: file indices} that a process read, from the DRIVER's record."""
    read = {}
    for line in path.read_text().splitlines():
        epoch, *rows = map(int, line.split())
        read[epoch] = rows
    return read


LOST_BOUND = 30  # seconds from a process's kill -9 to the other's exit (it notices at the next collective)


def test_a_process_killed_mid_epoch_stops_the_other_naming_it_and_the_streamed_job_resumes_on_every_process(
        tmp_path):
    """A two-process job streams an image folder from disk, each process reading its own rows of every
    global batch. Process 1 is killed with SIGKILL in the second epoch: process 0 stops within
    LOST_BOUND seconds with one line naming it, and the same command on both resumes at the next epoch,
    with the files of every epoch those of the seeded order."""
    folder = _photo_folder(tmp_path / "photos")
    port, run_dir = free_port(), tmp_path / "run"
    args = TINY + ["--epochs", "3", "--run-dir", str(run_dir), "--dataset", str(folder), "--image-size", "32",
                   "--transform", "photo"]
    bounds = {distributed.HEARTBEAT_TIMEOUT: "20", distributed.SHUTDOWN_TIMEOUT: "20"}
    procs = [start(tmp_path, f"first{i}", job_env(port, i, **bounds), args) for i in range(2)]
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not (run_dir / "state" / "epoch-0001").exists():  # the second epoch has begun
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            "\n".join(p.log_path.read_text()[-2000:] for p in procs)
        time.sleep(0.05)
    os.killpg(procs[1].pid, signal.SIGKILL)
    killed = time.monotonic()
    procs[1].wait()
    try:
        procs[0].wait(timeout=LOST_BOUND)
    except subprocess.TimeoutExpired:
        os.killpg(procs[0].pid, signal.SIGKILL)
        pytest.fail(f"process 0 still ran {LOST_BOUND} s after process 1 was killed:\n"
                    + procs[0].log_path.read_text()[-2000:])
    assert time.monotonic() - killed < LOST_BOUND
    log = procs[0].log_path.read_text()
    assert procs[0].returncode == 1, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("keras-resnet train: error: ")]
    assert len(errors) == 1 and "process 1 of the 2-process job was lost" in errors[0], log[-3000:]
    assert "Traceback" not in log
    done = max(int(name.split("-")[1]) for name in os.listdir(run_dir / "state") if name.startswith("epoch-"))
    assert 1 <= done < 3

    port = free_port()
    procs = [start(tmp_path, f"again{i}", job_env(port, i, **bounds), args) for i in range(2)]
    for p, log in zip(procs, finish(procs)):
        assert p.returncode == 0, log[-3000:]
        assert epochs_started(log) == list(range(done + 1, 4))
        assert "streamed from disk" in log
    with open(run_dir / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["epochs_run"] == 3 and run["data_feed"] == "stream"
    for a, b in zip(weights(tmp_path / "again0.npz"), weights(tmp_path / "again1.npz")):
        np.testing.assert_array_equal(a, b)
    # Each epoch: the processes' files are disjoint, cover the epoch's whole batches once, and are
    # the same before and after the kill (the order is a function of the seed and the epoch).
    steps = run["train_images"] // 32
    reads = [{**_files_read(tmp_path / f"first{i}_files.txt"), **_files_read(tmp_path / f"again{i}_files.txt")}
             for i in range(2)]
    for epoch in range(3):
        zero, one = reads[0][epoch], reads[1][epoch]
        assert len(zero) == len(one) == steps * 16 and not set(zero) & set(one)
        assert len(set(zero) | set(one)) == steps * 32
        assert zero == folder_streams.epoch_order(run["train_images"], 32, 0, epoch, 0, 2).tolist()


def run_job(tmp_path, envs, args, timeout=LAUNCH_TIMEOUT):
    procs = [start(tmp_path, f"p{i}", env, args) for i, env in enumerate(envs)]
    return [(p.returncode, log) for p, log in zip(procs, finish(procs, timeout))]


def test_a_process_that_cannot_reach_the_coordinator_says_where_and_which_variable(tmp_path):
    port = free_port()  # nothing listens there
    began = time.monotonic()
    [(code, log)] = run_job(tmp_path, [job_env(port, 1, **{distributed.TIMEOUT: "3"})],
                            TINY + ["--run-dir", str(tmp_path / "run")], timeout=120)
    assert code == 1
    assert f"could not reach the coordinator at 127.0.0.1:{port}" in log
    assert distributed.ADDRESSES in log and distributed.TIMEOUT in log
    assert time.monotonic() - began < 120
    assert not (tmp_path / "run").exists()


def test_process_zero_left_alone_says_what_the_job_needs_before_jax_stops_it(tmp_path):
    [(code, log)] = run_job(tmp_path, [job_env(free_port(), 0, **{distributed.TIMEOUT: "3"})],
                            TINY + ["--run-dir", str(tmp_path / "run")], timeout=120)
    assert code == -signal.SIGABRT
    assert "did not assemble within 3 s (KERAS_RESNET_COORDINATOR_TIMEOUT); it needs 2 processes" in log


def test_processes_that_declare_different_counts_all_stop_with_the_same_error(tmp_path):
    port = free_port()
    envs = [job_env(port, 0, **{distributed.TIMEOUT: "60"}),
            job_env(port, 1, processes=3, **{distributed.TIMEOUT: "60"})]
    results = run_job(tmp_path, envs, TINY + ["--run-dir", str(tmp_path / "run")], timeout=240)
    for code, log in results:
        assert code == 2, log[-3000:]
        assert f"Inconsistent process counts: the job at 127.0.0.1:{port} has 2 processes" in log
        assert f"{distributed.NUM_PROCESSES}=[2, 3]" in log


def test_a_global_batch_that_does_not_divide_across_the_devices_is_refused_by_every_process(tmp_path):
    port = free_port()
    args = [a if a != "32" else "33" for a in TINY] + ["--run-dir", str(tmp_path / "run")]
    for code, log in run_job(tmp_path, [job_env(port, i) for i in range(2)], args, timeout=240):
        assert code == 2, log[-3000:]
        assert ("`batch_size`=33 (the global batch) does not divide across the 2 devices of 2 "
                "process(es); use a multiple of 2, e.g. 32 or 34") in log
    assert not (tmp_path / "run").exists()


def test_tensorflow_backend_refuses_several_processes_and_mirrors_one(monkeypatch):
    import keras

    from keras_resnet.training.devices import distribution_scope

    assert keras.backend.backend() == "tensorflow"
    images = np.zeros((40, 28, 28, 1), np.uint8)
    data = training.RunData(images, np.zeros(40, int), images[:5], np.zeros(5, int), {})
    with distribution_scope("data-parallel") as replicas:  # no job: this machine's devices
        kept, layout = process_data.plan(data, training.Recipe(batch_size=33))
    assert layout == {"processes": 1, "devices": replicas, "global_batch": 33, "per_process_batch": 33}
    assert len(kept.x_val) == 5  # TensorFlow's strategies split any batch: nothing trimmed
    for name, value in {distributed.ADDRESSES: "127.0.0.1:1234", distributed.NUM_PROCESSES: "2",
                        distributed.PROCESS_ID: "0"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"needs the JAX backend; this process runs Keras on 'tensorflow'"):
        with distribution_scope("data-parallel"):
            pass


SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "4", "SLURM_PROCID": "1",
         "SLURM_LOCALID": "0"}


@pytest.mark.parametrize("env, job", [
    ({}, None),
    ({distributed.NUM_PROCESSES: "1"}, None),
    ({distributed.NUM_PROCESSES: "2", distributed.PROCESS_ID: "1", distributed.ADDRESSES: "10.0.0.1:1234"},
     distributed.Job(2, 1, "10.0.0.1:1234")),
    ({distributed.NUM_PROCESSES: "2", distributed.PROCESS_ID: "0",
      distributed.ADDRESSES: "10.0.0.1:1234, 10.0.0.2:2345"}, distributed.Job(2, 0, "10.0.0.1:1234")),
    (SLURM, distributed.Job(4, 1, None, "Slurm's variables")),
    ({**SLURM, "SLURM_STEP_NUM_TASKS": "2"}, distributed.Job(2, 1, None, "Slurm's variables")),
    ({**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, None),
])
def test_the_job_comes_from_kerass_or_slurms_variables(env, job):
    assert distributed.job_from_env(env) == job


@pytest.mark.parametrize("env, message", [
    ({distributed.NUM_PROCESSES: "2", distributed.PROCESS_ID: "0"},
     "KERAS_DISTRIBUTION_JOB_ADDRESSES must name process 0's host:port"),
    ({distributed.NUM_PROCESSES: "2", distributed.ADDRESSES: "h:1"},
     "KERAS_DISTRIBUTION_PROCESS_ID must be an integer from 0 to 1 in a multi-process job; it is not set"),
    ({distributed.NUM_PROCESSES: "2", distributed.PROCESS_ID: "2", distributed.ADDRESSES: "h:1"},
     "Received: KERAS_DISTRIBUTION_PROCESS_ID='2'"),
    ({distributed.NUM_PROCESSES: "two", distributed.PROCESS_ID: "0", distributed.ADDRESSES: "h:1"},
     "KERAS_DISTRIBUTION_NUM_PROCESSES must be an integer >= 1"),
    ({distributed.NUM_PROCESSES: "3", distributed.PROCESS_ID: "0", distributed.ADDRESSES: "a:1,b:2"},
     "Inconsistent process counts: KERAS_DISTRIBUTION_JOB_ADDRESSES lists 2 addresses but "
     "KERAS_DISTRIBUTION_NUM_PROCESSES=3"),
    ({distributed.NUM_PROCESSES: "2", distributed.PROCESS_ID: "0", distributed.ADDRESSES: "10.0.0.1"},
     "must start with host:port"),
])
def test_an_incomplete_or_inconsistent_job_is_refused_naming_the_variable(env, message):
    with pytest.raises(ValueError) as e:
        distributed.job_from_env(env)
    assert message in str(e.value)


@pytest.mark.parametrize("training", [True, False])
def test_the_processes_shares_of_a_batch_make_up_the_batch_of_one_process(rng, training):
    x = rng.integers(0, 256, (100, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 100)
    info = {"mean": [0.3], "std": [0.3], "flip": True}
    whole = numpy_dataset(x, y, info, batch_size=24, training=training, seed=3, erase=0.5)
    shares = [process_data.ProcessShare(whole, p, 4) for p in range(4)]
    for epoch in range(2):
        assert all(len(s) == len(whole) for s in shares)
        for i in range(len(whole)):  # the last validation batch has 4 images, one a process
            parts = [s[i] for s in shares]
            np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole[i][0])
            np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole[i][1])
        for ds in [whole, *shares]:
            ds.on_epoch_end()


def test_process_zero_refuses_a_port_in_use_naming_it():
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        port = holder.getsockname()[1]
        job = distributed.Job(2, 0, f"127.0.0.1:{port}")
        with pytest.raises(OSError, match=f"serves the job on port {port} .*{distributed.ADDRESSES}"):
            distributed._check_port_free(job)


def test_process_local_wraps_only_the_hooks_a_callback_defines():
    import keras

    class Epochs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(epoch)

    inner = Epochs()
    outer = process_data.ProcessLocal(inner)
    outer.on_epoch_end(3)
    assert inner.ends == [3]
    assert "on_epoch_end" in vars(outer) and "on_train_batch_end" not in vars(outer)


def test_an_error_of_a_collective_with_a_lost_peer_names_the_lost_process(monkeypatch):
    gloo = RuntimeError("UNKNOWN: Gloo all-reduce failed: [pair.cc:547] Connection closed by peer [127.0.0.1]:1")
    monkeypatch.setattr(distributed, "process_layout", lambda: (0, 2, 2))
    lost = distributed.lost_process_error(gloo)
    assert isinstance(lost, distributed.LostProcessError)
    assert str(lost).startswith("process 1 of the 2-process job was lost (UNKNOWN: Gloo all-reduce failed")
    assert distributed.lost_process_error(ValueError("`batch_size`=33 does not divide")) is None
    with pytest.raises(distributed.LostProcessError, match="process 1 of the 2-process job was lost"):
        with distributed.stop_if_a_process_is_lost():
            raise gloo
    monkeypatch.setattr(distributed, "process_layout", lambda: (1, 3, 3))
    assert str(distributed.lost_process_error(gloo)).startswith("a process of the 3-process job was lost")
    monkeypatch.setattr(distributed, "process_layout", lambda: (0, 1, 1))
    assert distributed.lost_process_error(gloo) is None  # alone, nobody can be lost
