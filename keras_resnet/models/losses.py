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
