"""What each process of a data-parallel job feeds, checks and writes (`keras_resnet.training.distributed`
joins the job).

Under a multi-process ``DataParallel``, Keras's JAX trainer turns what each process yields into one
global batch with ``jax.make_array_from_process_local_data``: each process must yield its own rows,
not the global batch. `process_datasets` gives each process rows ``p*B/N .. (p+1)*B/N`` of every global
batch of the recipe's seeded NumPy pipeline (`keras_resnet.data.common.process_rows`, the rule of the
streams too), with the same per-image augmentation draws, so the job sees every training image once
per epoch and trains as one process would with batch B. BatchNorm statistics are computed over the
global batch (the jitted step is one program over the global arrays). `plan` checks that every
process runs the same command on the same data; `process_local` and `ProcessLocal` let process 0 write
alone.
"""

import contextlib
import dataclasses
import zlib

import keras
import numpy as np

from keras_resnet.data.pipelines import NUMPY_OPS, NumpyDataset, augment_batch, normalize
from keras_resnet.training.distributed import allgather, keras_distribution, process_layout


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
    values = allgather([int(value)])[:, 0].tolist()
    if len(set(values)) > 1:
        raise ValueError(f"The {processes} processes disagree on {what}: {values} (by process). Run "
                         "the same command on every process, with a run folder on storage they all see.")
    return value


def all_true(flag):
    """True when every process of the job passes a true `flag` (this process's flag alone otherwise)."""
    if process_layout()[1] == 1:
        return bool(flag)
    return bool(allgather([int(bool(flag))]).min())


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
