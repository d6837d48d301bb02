"""Losses of the training recipe, registered at package import so that saved models load anywhere."""

import keras


@keras.saving.register_keras_serializable(package="keras_resnet")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy with label smoothing on integer labels (Szegedy et al. 2016)."""

    def __init__(self, label_smoothing=0.1, num_classes=10, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes

    def call(self, y_true, y_pred):
        y_true = keras.ops.one_hot(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)),
                                   self.num_classes)
        return keras.losses.categorical_crossentropy(
            y_true, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="keras_resnet")
class DistillationLoss(keras.losses.Loss):
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` per image (Hinton et al. 2015): the
    distillation term of a student trained with a teacher.

    ``y_true`` holds the teacher's logits; ``y_pred`` the student's class probabilities (the softmax
    of its logits, which the package's classifiers output), whose logarithm is the student's logits up
    to a shift per image that the tempered softmax cancels. ``T^2`` keeps the gradients' scale
    independent of the temperature.
    """

    def __init__(self, temperature=4.0, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = temperature

    def call(self, y_true, y_pred):
        t = self.temperature
        teacher = keras.ops.log_softmax(keras.ops.cast(y_true, "float32") / t, axis=-1)
        # 1e-30: a probability that underflowed to 0 must not give log(0); float32 holds it exactly
        student_logits = keras.ops.log(keras.ops.clip(keras.ops.cast(y_pred, "float32"), 1e-30, 1.0))
        student = keras.ops.log_softmax(student_logits / t, axis=-1)
        return t * t * keras.ops.sum(keras.ops.exp(teacher) * (teacher - student), axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
