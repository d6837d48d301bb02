"""Knowledge distillation: a student learns from a frozen teacher's softened predictions as well as from
the labels (Hinton et al. 2015), the teacher fed the very batch the student gets, with the same crop,
flip and erasing (Beyer et al. 2022, "a good teacher is patient and consistent").

The loss of a training step is ``(1 - w) * CE(labels) + w * T^2 * KL(softmax(teacher / T) ||
softmax(student / T))`` (`keras_resnet.models.losses.DistillationLoss`), with ``w`` the recipe's
``distill_weight`` and ``T`` its ``temperature`` (0.9 and 4, the KD baseline of Tian et al. 2020);
the cross-entropy is the recipe's own (smoothed with ``label_smoothing``). Validation and test losses
are the cross-entropy alone, so that they compare with a run without a teacher.

A `Distiller` wraps the student for ``fit``: its variables are the student's, so the run's state
(weights and optimizer) is the student's and the teacher is never saved with it; ``model.keras`` and
``best.keras`` are the plain student (`student_of`). The teacher is any classifier file the package
wrote: another depth, width, family or input size (the batch is resized for it, bilinearly), with
the student's classes; its normalisation comes from its own run folder. Only `keras` and
`keras.ops` run in the step, so it trains on the TensorFlow, JAX and PyTorch backends.
"""

import os

import keras
import numpy as np

from keras_resnet.models.losses import DistillationLoss
from keras_resnet.training.run_folder import run_defaults
from keras_resnet.utils import io_utils

TEACHER_LAYER = "logits"  # the classifier's layer (keras_resnet.build names it): the teacher's logits


class Teacher:
    """A frozen teacher, ready for a student's batches: `__call__` takes the student's normalised
    images and returns the teacher's logits (float32, no gradient).

    A plain object, not a Keras layer, so that the `Distiller` holding it neither tracks nor saves it.
    Made by `load_teacher`.
    """

    def __init__(self, logits_model, scale, offset, channels, size, described):
        self.logits_model, self.scale, self.offset = logits_model, scale, offset
        self.channels, self.size, self.described = channels, size, described

    def __call__(self, x):
        x = keras.ops.cast(x, "float32")
        if x.shape[-1] != self.channels:  # a grayscale student, a colour teacher: the gray in every channel
            x = keras.ops.repeat(x, self.channels, axis=-1)
        x = x * self.scale + self.offset  # the student's normalisation -> the teacher's
        if tuple(x.shape[1:3]) != self.size:
            x = keras.ops.image.resize(x, self.size, interpolation="bilinear")
        return keras.ops.stop_gradient(keras.ops.cast(self.logits_model(x, training=False), "float32"))


def load_teacher(path, info, input_shape):
    """Loads the teacher of a student that takes `input_shape` images normalised with `info`'s
    ``mean`` and ``std`` into `info`'s ``num_classes`` classes.

    Args:
        path: a ``.keras`` classifier written by the package, in its run folder (``config.json`` or
            ``run.json`` beside it gives its normalisation and class names).
        info: the student's dataset info (``mean``, ``std``, ``num_classes``, ``class_names``).
        input_shape: the student's input, ``(height, width, channels)`` (a leading batch entry is
            ignored).

    Returns:
        A `Teacher`, frozen; its ``described`` is what the run folder records: the file's absolute
        path and SHA-256 fingerprint, input shape and normalisation.

    Raises:
        FileNotFoundError: no file at `path`. ValueError: not a readable ``.keras`` file, not a
            classifier, other classes than the student's, no run folder beside it, or channels that
            do not fit the student's images; each in one line naming ``teacher``.
    """
    path = os.fspath(path)
    model = io_utils.load_model(path, argument="teacher")
    names = [layer.name for layer in model.layers]
    if TEACHER_LAYER not in names or len(model.output_shape) != 2:
        raise ValueError(f"`teacher` must be a classifier (a model of keras_resnet.build with its `logits` "
                         f"layer, include_top=True). Received: teacher={path!r}, whose output has shape "
                         f"{tuple(model.output_shape)}")
    logits = model.get_layer(TEACHER_LAYER).output
    classes = int(logits.shape[-1])
    if classes != info["num_classes"]:
        raise ValueError(f"`teacher` must have the student's {info['num_classes']} classes. Received: "
                         f"teacher={path!r}, a classifier of {classes} classes")
    recorded = run_defaults(path)
    if recorded is None or recorded["normalization"] is None:
        raise ValueError(f"`teacher` needs its run folder, whose config.json gives the normalisation it was "
                         f"trained with: none beside it. Received: teacher={path!r}; pass the model.keras "
                         "(or best.keras) of a keras-resnet train run folder")
    theirs, ours = recorded["class_names"], info.get("class_names")
    if theirs and ours and list(map(str, theirs)) != list(map(str, ours)):
        first = next(i for i, (a, b) in enumerate(zip(list(theirs) + [None] * len(ours), ours)) if str(a) != str(b))
        raise ValueError(f"`teacher` must have the student's classes in the same order. Received: "
                         f"teacher={path!r}, whose class {first} is {theirs[first] if first < len(theirs) else None!r}, "
                         f"not {ours[first]!r}")
    channels, size = int(model.input_shape[-1]), tuple(int(s) for s in model.input_shape[1:3])
    ours_channels = int(input_shape[-1])
    if channels != ours_channels and ours_channels != 1:
        raise ValueError(f"`teacher` must take the student's {ours_channels}-channel images. Received: "
                         f"teacher={path!r}, which takes {channels} channels")
    norm = recorded["normalization"]
    mean_t, std_t = _per_channel(norm["mean"], channels), _per_channel(norm["std"], channels)
    mean_s, std_s = _per_channel(info["mean"], channels), _per_channel(info["std"], channels)
    described = {"path": os.path.abspath(path), "sha256": io_utils.sha256_of(path),
                 "input_shape": list(model.input_shape[1:]), "normalization": norm, "run_folder": recorded["source"]}
    model.trainable = False  # frozen, BatchNorm in inference mode
    logits_model = keras.Model(model.inputs, logits, name="teacher")
    return Teacher(logits_model, std_s / std_t, (mean_s - mean_t) / std_t, channels, size, described)


def _per_channel(values, channels):
    values = np.asarray(values, dtype="float32").reshape(-1)
    return np.repeat(values, channels) if len(values) == 1 else values


class Distiller(keras.Model):
    """The student, trained with a `Teacher`: its call is the student's, its variables are the student's,
    and its loss adds the distillation term to the compiled cross-entropy in training steps.

    Args:
        student: the built model that learns (saved, evaluated and exported as itself: `student_of`).
        teacher: a `Teacher` (`load_teacher`).
        distill_weight: ``w`` of ``(1 - w) * CE + w * T^2 * KL``, in [0, 1].
        temperature: ``T``, > 0.
    """

    def __init__(self, student, teacher, distill_weight=0.9, temperature=4.0):
        super().__init__(name=student.name)
        self.student = student
        self.teacher = teacher  # a plain object: not tracked, so never in the run's state or files
        self.distill_weight = float(distill_weight)
        self.distillation = DistillationLoss(temperature)
        self.built = True  # its variables are the student's, built already

    @property
    def output_shape(self):
        return self.student.output_shape

    def call(self, x, training=None):
        return self.student(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if not training:  # validation: the cross-entropy alone, comparable with a run without a teacher
            return loss
        soft = self.distillation(self.teacher(x), y_pred, sample_weight=sample_weight)
        return (1.0 - self.distill_weight) * loss + self.distill_weight * soft


def distilled(model, teacher, recipe):
    """`model` wrapped to learn from `teacher` with `recipe`'s weight and temperature; `model` itself when
    `teacher` is None."""
    if teacher is None:
        return model
    return Distiller(model, teacher, recipe.distill_weight, recipe.temperature)


def student_of(model):
    """The student of a `Distiller`, else `model`: what is saved, evaluated and exported."""
    return model.student if isinstance(model, Distiller) else model


def check_same_teacher(run_dir, teacher, resuming):
    """Refuses to resume a run folder with another teacher than the one it was trained with (the
    fingerprint in its ``config.json``), or with a teacher where it had none, or none where it had one:
    its state holds the student's weights as that training laid them out. `teacher` is the one given
    now, or None."""
    config = io_utils.read_json(os.path.join(run_dir, "config.json")) if resuming else None
    if not isinstance(config, dict):
        return
    previous, again = config.get("teacher"), "or choose another run folder"
    if previous is None and teacher is not None:
        raise ValueError(f"the run folder {run_dir} was trained without a teacher; `teacher` is now "
                         f"{teacher.described['path']}: resume without it, {again}")
    if previous is not None and teacher is None:
        raise ValueError(f"the run folder {run_dir} was trained with the teacher {previous.get('path')}; `teacher` "
                         f"is now None: resume with the same teacher, {again}")
    if previous is not None and previous.get("sha256") != teacher.described["sha256"]:
        raise ValueError(f"the run folder {run_dir} was trained with the teacher {previous.get('path')} (sha256 "
                         f"{str(previous.get('sha256'))[:12]}...); `teacher` is now {teacher.described['path']} "
                         f"(sha256 {teacher.described['sha256'][:12]}...), another file: resume with the same "
                         f"teacher, {again}")
