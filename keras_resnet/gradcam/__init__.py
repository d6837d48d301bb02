"""Where a model looks: Grad-CAM heat maps over the input (`heatmap`; the TensorFlow gradients in
`tf_gradients`)."""

from keras_resnet.gradcam.heatmap import explain, heatmaps, overlay, target_layer  # noqa: F401
