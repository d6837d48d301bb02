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

What each process feeds and writes: `keras_resnet.training.process_data`.
"""

import contextlib
import dataclasses
import os
import socket
import sys
import threading
import time

import keras
import numpy as np


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
    declared = allgather([job.num_processes])[:, 0]
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


def allgather(values):
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


@contextlib.contextmanager
def keras_distribution(distribution):
    """Keras's global distribution set to `distribution` (None: unset) inside the block, and restored."""
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)
