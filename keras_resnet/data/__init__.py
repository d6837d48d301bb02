"""The data package: sources list examples and read them, transforms make pixels, pipelines batch.

- Sources: `idx` (Fashion-MNIST, MNIST), `tfds` (tensorflow-datasets), `folders` (a folder of class
  folders); `sources.folder_of` decides what a `dataset` string names, once. `common` holds what they
  share: the error, the bad-images policy, channel statistics and the held-out split rule.
- Pixels: `images` (the one decoder and the evaluation transforms).
- Pipelines: `arrays` (any source held as uint8 arrays), `pipelines` (normalisation, augmentation,
  tf.data and NumPy batches of arrays), `streams` and `tfds_streams` (folders and tfds sets streamed
  from disk through tf.data).
- Prepared once: `prepared` (a folder written as tfds shards of bounded photos, read as a tfds set)
  and `records` (TFRecord shards read without TensorFlow).

The names of the old ``keras_resnet.data`` module are importable from here. TensorFlow is imported
inside the functions that need it, never at module import.
"""

from keras_resnet.data.arrays import load, resized  # noqa: F401
from keras_resnet.data.common import (  # noqa: F401
    BAD_IMAGES, DataSource, DatasetError, DatasetInfo, ExampleDigest, channel_stats, held_out_name, resize_images,
    split_indices, split_name, split_validation, subset_index)
from keras_resnet.data.idx import FASHION_MNIST_CLASSES, IDX_FILES, IDX_SETS, read_idx  # noqa: F401
from keras_resnet.data.images import CROP_FRACTION, IMAGE_EXTENSIONS, TRANSFORM_CHOICES, describe  # noqa: F401
from keras_resnet.data.opening import (  # noqa: F401
    open_dataset, open_folder_test, open_for_model, streamed_test_folder, subset)
from keras_resnet.data.pipelines import (  # noqa: F401
    NumpyDataset, calibration_images, check_batch_size, normalize, numpy_dataset, start_at_epoch, tf_dataset)
from keras_resnet.data.sources import folder_of  # noqa: F401
from keras_resnet.data.tfds import NO_FLIP, tfds_features, tfds_info, tfds_split  # noqa: F401
