"""Data-parallel training across processes and machines: Keras's distribution API on JAX.

One model trains on the devices of every process of a job: each process holds a replica of the
weights, feeds its share of each global batch, and JAX all-reduces the gradients (gloo between CPUs,
NCCL between GPUs). A process learns that it belongs to a job from Keras's variables

    KERAS_DISTRIBUTION_JOB_ADDRESSES   host:port of process 0 (the coordinator), or all addresses
    KERAS_DISTRIBUTION_NUM_PROCESSES   how many processes the job has
    KERAS_DISTRIBUTION_PROCESS_ID      this process's index, 0 .. N-1

or, without them, from a Slurm job step of several tasks, whose coordinator JAX finds itself.
`initialize` joins the job with ``jax.distributed.initialize`` (what ``keras.distribution.initialize``
calls, here with a time limit: ``KERAS_RESNET_COORDINATOR_TIMEOUT`` seconds, default 300), and
`keras_resnet.training.devices.data_parallel_scope` sets ``keras.distribution.DataParallel`` over ``keras.distribution.list_devices()``
(every device of the job). A process that trains alone gets the same scope over its own devices, so
the same command runs unchanged on one machine or many.

A lost process does not hang the job: when a process dies, the others fail at their next collective
operation (its connections close), and `stop_if_a_process_is_lost` turns that failure into one
`LostProcessError` naming it; the command line then leaves at once (`leave_after_loss`) rather than
wait at JAX's shutdown barrier. A process that stops answering without dying is declared lost by JAX's
coordination service after ``KERAS_RESNET_HEARTBEAT_TIMEOUT`` seconds (default 60); a finished process
waits at most ``KERAS_RESNET_SHUTDOWN_TIMEOUT`` seconds (default 120) for the others at exit.

Inputs: under a multi-process ``DataParallel``, Keras's JAX trainer turns what each process yields
into one global batch with ``jax.make_array_from_process_local_data``: each process must yield its
own rows, not the global batch. `process_datasets` gives each process rows ``p*B/N .. (p+1)*B/N`` of
every global batch of the recipe's seeded NumPy pipeline, with the same per-image augmentation draws,
so the job sees every training image once per epoch and trains as one process would with batch B.
BatchNorm statistics are computed over the global batch (the jitted step is one program over the
global arrays).
"""

import contextlib
import dataclasses
import os
import socket
import sys
import threading
import time
import zlib

import keras
import numpy as np

from keras_resnet.data.pipelines import NUMPY_OPS, NumpyDataset, augment_batch, normalize

ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
TIMEOUT = "KERAS_RESNET_COORDINATOR_TIMEOUT"
DEFAULT_TIMEOUT = 300
# A process that stops answering (hung, or its machine gone) is declared lost by JAX's coordination
# service after this many seconds, and the others are stopped; a process that dies is noticed at once,
# by the next collective operation (its connections close).
HEARTBEAT_TIMEOUT = "KERAS_RESNET_HEARTBEAT_TIMEOUT"
DEFAULT_HEARTBEAT_TIMEOUT = 60
# At exit, how long a process waits for the others to reach JAX's shutdown barrier.
SHUTDOWN_TIMEOUT = "KERAS_RESNET_SHUTDOWN_TIMEOUT"
DEFAULT_SHUTDOWN_TIMEOUT = 120
# What a collective operation says when a process of the job is gone (gloo on CPUs, NCCL on GPUs, JAX's
# coordination service).
_LOST_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket closed",
               "remote process exited", "heartbeat", "coordination service")
# The variables JAX's Slurm detection reads (a task of an `srun` step has them all).
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


@dataclasses.dataclass(frozen=True)
class Job:
    """A multi-process job as this process sees it.

    coordinator: ``host:port`` of process 0, or None where JAX finds it (Slurm).
    source: where the description came from, for messages.
    """

    num_processes: int
    process_id: int
    coordinator: str = None
    source: str = "Keras's variables"


def _env_int(env, name, low, high=None):
    text = env.get(name)
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < low or (high is not None and value > high):
        allowed = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
        got = "it is not set" if text is None else f"Received: {name}={text!r}"
        raise ValueError(f"{name} must be {allowed} in a multi-process job; {got}.")
    return value


def _coordinator(addresses, num_processes):
    parts = [a.strip() for a in addresses.split(",") if a.strip()]
    if not parts:
        raise ValueError(f"{ADDRESSES} must name process 0's host:port (e.g. 10.0.0.1:1234) when "
                         f"{NUM_PROCESSES}={num_processes}; it is not set.")
    if len(parts) > 1 and len(parts) != num_processes:
        raise ValueError(f"Inconsistent process counts: {ADDRESSES} lists {len(parts)} addresses but "
                         f"{NUM_PROCESSES}={num_processes}. Give one address per process, or only "
                         "process 0's.")
    host, _, port = parts[0].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{ADDRESSES} must start with host:port (e.g. 10.0.0.1:1234). Received: "
                         f"{ADDRESSES}={addresses!r}")
    return parts[0]


def job_from_env(environ=None):
    """The job this process belongs to according to `environ` (default ``os.environ``), or None when
    it trains alone. Raises a ValueError naming the variable when the description is incomplete or
    inconsistent."""
    env = os.environ if environ is None else environ
    if any(name in env for name in (ADDRESSES, NUM_PROCESSES, PROCESS_ID)):
        n = _env_int(env, NUM_PROCESSES, 1)
        if n == 1:
            return None
        process_id = _env_int(env, PROCESS_ID, 0, n - 1)
        return Job(n, process_id, _coordinator(env.get(ADDRESSES, ""), n))
    if all(name in env for name in SLURM_VARS):
        # Tasks of this step (SLURM_NTASKS can be the allocation's, larger than an `srun -n` step).
        n = _env_int(env, "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS", 1)
        if n > 1:
            return Job(n, _env_int(env, "SLURM_PROCID", 0, n - 1), None, "Slurm's variables")
    return None


def _timeout(timeout, variable=TIMEOUT, default=DEFAULT_TIMEOUT):
    if timeout is None:
        timeout = os.environ.get(variable, default)
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        value = 0
    if not 0 < value < float("inf"):
        raise ValueError(f"{variable} must be a number of seconds > 0. Received: {variable}={timeout!r}")
    return value


def _split_address(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _wait_for_coordinator(job, timeout):
    """Waits until process 0's port accepts connections; a clear TimeoutError after `timeout` s."""
    host, port = _split_address(job.coordinator)
    deadline, why = time.monotonic() + timeout, None
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout)):
                return
        except OSError as e:
            why = e
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"Process {job.process_id} of {job.num_processes} could not reach the coordinator at "
                f"{job.coordinator} (the first address of {ADDRESSES}) within {timeout:g} s "
                f"({type(why).__name__}: {why}). Start process 0 ({PROCESS_ID}=0) on that host, check "
                f"the address and port and the firewall, or raise {TIMEOUT}.")
        time.sleep(0.5)


def _check_port_free(job):
    _, port = _split_address(job.coordinator)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as e:
            raise OSError(e.errno, f"Process 0 serves the job on port {port} ({ADDRESSES}="
                                   f"{job.coordinator}), but that port is in use ({e.strerror}): "
                                   "choose another port, or stop the process holding it.") from e


def _warn_before_abort(job, timeout):
    """JAX ends the process (SIGABRT) when the job does not assemble in time; say why first."""
    where = job.coordinator or "the address JAX derives from Slurm's variables"
    print(f"keras-resnet: process {job.process_id}: the job at {where} did not assemble within "
          f"{timeout:g} s ({TIMEOUT}); it needs {job.num_processes} processes with the same "
          f"{NUM_PROCESSES} and each its own {PROCESS_ID} in 0..{job.num_processes - 1}. JAX stops "
          "this process now.", file=sys.stderr, flush=True)


def initialize(job=None, timeout=None):
    """Joins this process to its job (`job_from_env` by default); returns the `Job`, or None when the
    process trains alone. Call it before any JAX computation; a second call returns at once.

    Args:
        job: a `Job`, or None to read the environment.
        timeout: seconds to wait for the coordinator and for every process to connect (default
            ``KERAS_RESNET_COORDINATOR_TIMEOUT``, else 300).
    """
    job = job_from_env() if job is None else job
    if job is None:
        return None
    check_backend(job)
    import jax

    if not jax.distributed.is_initialized():
        timeout = _timeout(timeout)
        if job.coordinator and job.process_id == 0:
            _check_port_free(job)
        elif job.coordinator:
            _wait_for_coordinator(job, timeout)
        watchdog = threading.Timer(max(timeout - 1, 0.5), _warn_before_abort, (job, timeout))
        watchdog.daemon = True
        watchdog.start()
        try:
            jax.distributed.initialize(
                job.coordinator, job.num_processes, job.process_id, initialization_timeout=max(int(timeout), 1),
                heartbeat_timeout_seconds=max(int(_timeout(None, HEARTBEAT_TIMEOUT, DEFAULT_HEARTBEAT_TIMEOUT)), 1),
                shutdown_timeout_seconds=max(int(_timeout(None, SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT)), 1))
        except RuntimeError as e:
            raise RuntimeError(f"Process {job.process_id} could not join its job: {e} Start the "
                               "program with keras_resnet.training.distributed.initialize(), before any JAX "
                               "computation.") from e
        finally:
            watchdog.cancel()
    declared = _allgather([job.num_processes])[:, 0]
    if jax.process_count() != job.num_processes or len(set(declared.tolist())) > 1:
        raise ValueError(f"Inconsistent process counts: the job at {job.coordinator} has "
                         f"{jax.process_count()} processes, but they declare {NUM_PROCESSES}="
                         f"{declared.tolist()} (by process). Give every process the same {NUM_PROCESSES}.")
    return job


class LostProcessError(RuntimeError):
    """A process of a multi-process job is gone (killed, crashed, its machine lost): the job cannot
    go on, and this process cannot leave it cleanly either (JAX's shutdown waits for everyone)."""


def lost_process_error(error):
    """A `LostProcessError` naming the lost process when `error`, raised inside a multi-process job,
    says that a process of the job is gone; None otherwise."""
    process, processes, _ = process_layout()
    text = " ".join(str(error).split())
    if processes < 2 or isinstance(error, LostProcessError) or not any(s in text for s in _LOST_SIGNS):
        return None
    # In a pair the lost one is the other; in a larger job the collective names only its address.
    lost = f"process {1 - process}" if processes == 2 else "a process"
    return LostProcessError(
        f"{lost} of the {processes}-process job was lost ({text[:300]}); process {process} stops. Start "
        "the same command on every process again: the run resumes from its last committed epoch.")


@contextlib.contextmanager
def stop_if_a_process_is_lost():
    """Inside the block, an error that says a process of the job is gone becomes a `LostProcessError`
    naming it (one line, instead of the collective's own message)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 -- XLA reports a lost peer as its own runtime error
        lost = lost_process_error(e)
        if lost is None:
            raise
        raise lost from e


def leave_after_loss():
    """Ends this process now, with exit status 1: after a `LostProcessError`, JAX's shutdown at exit
    would wait for the lost process until its shutdown timeout."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def check_backend(job):
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            f"Training across processes ({job.num_processes} processes, from {job.source}) needs the JAX "
            f"backend; this process runs Keras on {backend!r}. Set KERAS_BACKEND=jax on every process "
            "(TensorFlow's multi-worker strategy does not work with Keras 3), or run one process per "
            "machine without the job's variables to use that machine's GPUs.")


def _allgather(values):
    """(processes, len(values)) int32: `values` of every process, in process order."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(values, np.int32)))


def process_layout():
    """(this process's index, processes, devices) of Keras's current JAX distribution, or of the
    TensorFlow strategy in scope (one process)."""
    backend = keras.backend.backend()
    tf = sys.modules.get("tensorflow")  # no strategy can be in scope before TensorFlow is imported
    if backend == "tensorflow" and tf is not None:
        return 0, 1, tf.distribute.get_strategy().num_replicas_in_sync
    distribution = keras.distribution.distribution() if backend == "jax" else None
    if distribution is None:
        return 0, 1, 1
    import jax

    return jax.process_index(), distribution.num_processes, int(distribution.device_mesh.devices.size)


def is_chief():
    """True unless this process is one of a multi-process job's processes other than process 0."""
    return process_layout()[0] == 0


def plan(data, recipe):
    """Checks that the recipe's global batch divides across the job's devices and that every process
    runs the same command on the same data; trims the validation images to a multiple of the device
    count (each device evaluates whole rows) on JAX; TensorFlow's strategies split any batch. Returns
    ``(data, layout)``, where layout holds ``processes``, ``devices``, ``global_batch`` and
    ``per_process_batch`` for ``run.json``."""
    _, processes, devices = process_layout()
    batch = recipe.batch_size
    if keras.backend.backend() != "jax":
        return data, {"processes": 1, "devices": devices, "global_batch": batch, "per_process_batch": batch}
    if batch % devices:
        below, above = batch - batch % devices, batch - batch % devices + devices
        raise ValueError(f"`batch_size`={batch} (the global batch) does not divide across the {devices} "
                         f"devices of {processes} process(es); use a multiple of {devices}, e.g. "
                         f"{below or above} or {above}.")
    keep = len(data.x_val) - len(data.x_val) % devices
    data = dataclasses.replace(data, x_val=data.x_val[:keep], y_val=data.y_val[:keep])
    if processes > 1:
        check_same("the recipe", _crc(repr(sorted(dataclasses.asdict(recipe).items())).encode()))
        check_same("the training images", len(data.x_train))
        check_same("the training labels", _crc(np.ascontiguousarray(data.y_train).tobytes()))
    return data, {"processes": processes, "devices": devices, "global_batch": batch,
                  "per_process_batch": batch // processes}


def _crc(data):
    return zlib.crc32(data) & 0x7FFFFFFF  # fits the int32 of an all-gather


def check_same(what, value):
    """Raises the same ValueError on every process of the job unless all pass the same integer."""
    _, processes, _ = process_layout()
    if processes == 1:
        return value
    values = _allgather([int(value)])[:, 0].tolist()
    if len(set(values)) > 1:
        raise ValueError(f"The {processes} processes disagree on {what}: {values} (by process). Run "
                         "the same command on every process, with a run folder on storage they all see.")
    return value


def all_true(flag):
    """True when every process of the job passes a true `flag` (this process's flag alone otherwise)."""
    if process_layout()[1] == 1:
        return bool(flag)
    return bool(_allgather([int(bool(flag))]).min())


class ProcessShare(NumpyDataset):
    """The part of a data-parallel job's input that one process feeds: a NumPy pipeline
    (`numpy_dataset`) that yields, for every global batch, only this process's rows
    ``share*p .. share*(p+1)`` (share = batch / processes), augmented with the same random draws those
    rows get in the global batch, so that N processes together train exactly as one process would."""

    def __init__(self, dataset, process, processes):
        super().__init__(dataset.x, dataset.y, dataset.info, dataset.batch_size, dataset.training,
                         dataset.augment, dataset.seed, dataset.erase)
        self.process, self.processes = process, processes

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(f"batch index {i} out of range for {len(self)} batches")
        batch = self._order[i * self.batch_size:(i + 1) * self.batch_size]
        share = len(batch) // self.processes
        if share * self.processes != len(batch):
            raise ValueError(f"A batch of {len(batch)} images does not divide across {self.processes} "
                             "processes.")
        rows = slice(share * self.process, share * (self.process + 1))
        index = batch[rows]
        if not (self.training and self.augment):
            return normalize(self.x[index], self.info), self.y[index]
        u = np.random.default_rng((self.seed, 1, self.epoch, i)).random((len(batch), 8), np.float32)
        return augment_batch(self.x[index], u[rows], self.info, self.erase, NUMPY_OPS), self.y[index]


def process_datasets(*datasets):
    """Each NumPy pipeline as this process's share of its batches when Keras's current distribution
    spans several processes; unchanged otherwise (None stays None)."""
    process, processes, _ = process_layout()
    if processes == 1:
        return datasets
    for ds in datasets:
        if ds is not None and not isinstance(ds, NumpyDataset):
            raise ValueError("Training across processes feeds each process's rows from the NumPy "
                             f"pipeline; pass pipeline='numpy' (or 'auto'). Received: {type(ds).__name__}")
    return tuple(None if ds is None else ProcessShare(ds, process, processes) for ds in datasets)


@contextlib.contextmanager
def process_local():
    """A ``with`` block that runs as if this process were alone: Keras's distribution is unset inside
    it when the job spans several processes, so that `model.predict` returns this process's own NumPy
    arrays (each process predicts every row itself) and saving a file is no collective operation."""
    with keras_distribution(None) if process_layout()[1] > 1 else contextlib.nullcontext():
        yield


class ProcessLocal(keras.callbacks.Callback):
    """A callback wrapper for data-parallel jobs: runs `callback`'s hooks inside `process_local`, as if
    this process were alone. What process 0 alone writes (a ``.keras`` file creates variables while
    saving) must not become a collective that the other processes never join. Hooks that `callback`
    does not define stay Keras's defaults, so Keras still skips them."""

    def __init__(self, callback):
        super().__init__()
        self.callback = callback
        for name in dir(keras.callbacks.Callback):
            if name.startswith("on_") and getattr(type(callback), name) is not getattr(
                    keras.callbacks.Callback, name):
                setattr(self, name, _in_process_local(getattr(callback, name)))

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)


def _in_process_local(hook):
    def call(*args, **kwargs):
        with process_local():
            return hook(*args, **kwargs)

    return call


@contextlib.contextmanager
def keras_distribution(distribution):
    """Keras's global distribution set to `distribution` (None: unset) inside the block, and restored."""
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)
