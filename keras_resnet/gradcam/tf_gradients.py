"""The backend-specific part of Grad-CAM: the gradient of a class score, on the TensorFlow backend.

`keras_resnet.gradcam` does the rest with `keras.ops`; only taking a gradient through a Keras model
needs the backend's own machinery (``tf.GradientTape`` here).
"""

import numpy as np
import tensorflow as tf


def features_and_gradients(features_model, head, x, class_indices=None):
    """The feature map of `x` and the gradient of each image's class score with respect to it.

    Args:
        features_model: a Keras model, images -> the feature map ``(N, h, w, C)``.
        head: a Keras model, the feature map -> the class scores before the softmax ``(N, K)``.
        x: normalised images ``(N, H, W, C)``; both models run in inference mode.
        class_indices: the class whose score is differentiated, one per image; None: each image's top
            class.

    Returns:
        ``(features, gradients, logits, class_indices)`` as float32 NumPy arrays (int64 indices).
    """
    features = features_model(tf.convert_to_tensor(np.asarray(x, np.float32)), training=False)
    # Only the head is recorded, with respect to the feature map alone (the weights are not watched):
    # the gradient needs nothing else.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(features)
        logits = tf.cast(head(features, training=False), tf.float32)
        if class_indices is None:
            chosen = tf.argmax(logits, axis=-1)
        else:
            chosen = tf.convert_to_tensor(np.asarray(class_indices, np.int64))
        # Images do not interact in inference mode: the gradient of the sum is each image's own.
        score = tf.reduce_sum(tf.gather(logits, chosen, axis=1, batch_dims=1))
    gradients = tape.gradient(score, features)
    as_numpy = lambda t: np.asarray(tf.cast(t, tf.float32))  # noqa: E731
    return as_numpy(features), as_numpy(gradients), as_numpy(logits), np.asarray(chosen, np.int64)
