"""Where a run executes: precision and distribution, applied as scopes that restore what they found.

`precision_scope` sets Keras's global dtype policy and `distribution_scope` Keras's (JAX) or
TensorFlow's distribution for the body of a ``with`` block only: a library call leaves the global
state of the caller's process as it was.
"""

import contextlib
import warnings

import keras

from keras_resnet.training.distributed import check_backend, initialize, job_from_env, keras_distribution
from keras_resnet.utils import checks

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
DISTRIBUTE = ("auto", "none", "mirrored", "data-parallel")
_BF16_GPUS = ("A100", "H100", "H200", "L4", "L40", "RTX 30", "RTX 40")


def resolve_precision(precision):
    """The dtype policy that `precision` means on this machine.

    "auto": mixed precision on a GPU (bfloat16 on Ampere and newer, float16 before); on a CPU,
    bfloat16 where the TensorFlow backend can run it natively (AVX512-BF16 or AMX), else float32.
    An explicit mixed precision on a CPU that lacks native support warns: it is emulated there and
    trains several times slower than float32 (about 9x for a ResNet-20 at width 1.5 on an AVX2-only
    CPU).
    """
    checks.check_choice("precision", precision, PRECISIONS)
    gpus = gpu_names() if precision != "float32" else []
    if precision == "auto":
        if gpus:
            modern = any(any(t in g for t in _BF16_GPUS) for g in gpus)
            return "mixed_bfloat16" if modern else "mixed_float16"
        if keras.backend.backend() == "tensorflow" and cpu_has_native_bfloat16():
            return "mixed_bfloat16"
        return "float32"
    if precision != "float32" and not gpus and not (
            precision == "mixed_bfloat16" and cpu_has_native_bfloat16()):
        warnings.warn(
            f"precision={precision!r} on a CPU without native {precision[6:]} arithmetic is emulated and "
            "trains several times slower than float32; use precision='float32' or 'auto' here.",
            stacklevel=3)
    return precision


@contextlib.contextmanager
def precision_scope(precision):
    """Sets the global dtype policy of `precision` (see `resolve_precision`) inside the block only;
    yields the policy's name."""
    from keras_resnet.models.resnet import dtype_policy_scope

    with dtype_policy_scope(resolve_precision(precision)) as policy:
        yield policy.name


def cpu_has_native_bfloat16(cpuinfo="/proc/cpuinfo"):
    """True when the CPU advertises bfloat16 arithmetic (AVX512-BF16 or AMX-BF16); False if unknown."""
    return bool(set((cpu_info_field("flags", cpuinfo) or "").split()) & {"avx512_bf16", "amx_bf16"})


def cpu_info_field(name, cpuinfo="/proc/cpuinfo"):
    """The first CPU's `name` field of Linux's cpuinfo (e.g. "flags", "model name"); None if unknown."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def gpu_names():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    if backend == "tensorflow":
        import tensorflow as tf

        return [tf.config.experimental.get_device_details(g).get("device_name", "GPU")
                for g in tf.config.list_physical_devices("GPU")]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


@contextlib.contextmanager
def distribution_scope(distribute="auto"):
    """Spreads the training of one model over this machine's devices inside the block.

    TensorFlow: a `tf.distribute.MirroredStrategy` when several GPUs are visible, or over every
    visible device with ``"mirrored"`` (the logical CPUs where there is no GPU, which is how it is
    tested on one machine). JAX: Keras's `DataParallel` over several GPUs (or every device with
    ``"mirrored"``). ``"data-parallel"``: every device of every process of a multi-process JAX job
    (`keras_resnet.training.distributed`), or ``"mirrored"`` where the process trains alone. ``"none"`` uses
    one device. Yields the number of replicas; the caller must build
    and compile the model inside the block.
    """
    checks.check_choice("distribute", distribute, DISTRIBUTE)
    if distribute == "data-parallel":
        with data_parallel_scope() as replicas:
            yield replicas
        return
    backend = keras.backend.backend()
    if distribute == "none" or backend not in ("tensorflow", "jax"):
        yield 1
        return
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if len(gpus) > 1 or (distribute == "mirrored" and len(jax.devices()) > 1):
            with keras_distribution(keras.distribution.DataParallel()):
                yield len(gpus or jax.devices())
            return
        yield 1
        return
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if distribute == "mirrored" or len(gpus) > 1:
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            yield strategy.num_replicas_in_sync
        return
    yield 1


@contextlib.contextmanager
def data_parallel_scope():
    """Trains one model on every device of this process's job inside the block; yields the number of
    devices. Joins the job first (`initialize`). A process that trains alone uses its own devices:
    Keras's ``DataParallel`` on JAX, a ``MirroredStrategy`` on TensorFlow."""
    job = job_from_env()
    if job is not None:
        check_backend(job)
    if keras.backend.backend() != "jax":
        with distribution_scope("mirrored") as replicas:
            yield replicas
        return
    initialize(job)
    devices = keras.distribution.list_devices()
    if len(devices) == 1:
        yield 1
        return
    # Each process feeds its own rows (`process_datasets`): Keras must not shard the input again.
    with keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False).scope():
        yield len(devices)
