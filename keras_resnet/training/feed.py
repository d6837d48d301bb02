"""How a run's data reach ``fit``: the run's splits (`load_run_data`), and the `Feed` that turns them
into the training and validation inputs: arrays through tf.data or NumPy (each process's rows under a
multi-process job), or a folder or tensorflow-datasets set streamed by `keras_resnet.data.streams`."""

import dataclasses

import keras
import numpy as np

from keras_resnet import data as data_lib
from keras_resnet.data.common import CACHE  # noqa: F401 (a name of keras_resnet.training)
from keras_resnet.data.images import CROP_FRACTION
from keras_resnet.training import distributed, process_data
from keras_resnet.training.evaluation import accuracies, predict_probs, stream_predictions, test_accuracies
from keras_resnet.training.recipe import Recipe
from keras_resnet.utils import checks


PIPELINES = ("auto", "tf", "numpy")


@dataclasses.dataclass
class RunData:
    """The data of a run: images (N, H, W, C) as loaded, or for a streamed folder the files' paths
    (``info["stream"]`` says how to read them), integer labels, and `data.load`'s info."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    info: dict
    x_test: np.ndarray = None
    y_test: np.ndarray = None


def load_run_data(dataset="fashion_mnist", recipe=None, *, data_dir=None, download=False, train_size=None,
                  test_size=None, bad_images="error", image_size=None, transform="auto",
                  crop_fraction=CROP_FRACTION, cache="auto", pipeline="auto"):
    """Opens `dataset` (`keras_resnet.data.open_dataset`: arrays, or a folder or tensorflow-datasets set
    streamed; ``train_size`` and ``test_size`` cut it) and splits the recipe's validation fraction off
    its training examples (stratified, seeded; drawn from the file list of a stream, so nothing reads
    the whole dataset before training), unless the dataset has a validation split of its own (an image
    folder's ``val/`` beside ``train/`` and ``test/``)."""
    recipe = recipe or Recipe()
    (x_train, y_train), (x_test, y_test), info = data_lib.open_dataset(
        dataset, data_dir=data_dir, download=download, train_size=train_size, test_size=test_size,
        bad_images=bad_images, image_size=image_size, transform=transform, crop_fraction=crop_fraction,
        cache=cache, stream=pipeline != "numpy")
    if "validation" in info:  # the dataset's own validation split: a folder's val/ beside test/
        (x_val, y_val) = info.pop("validation")
    else:
        (x_train, y_train), (x_val, y_val) = data_lib.split_validation(
            x_train, y_train, recipe.val_fraction, seed=recipe.seed)
        info["splits"] = {**(info.get("splits") or {}), "validation": data_lib.held_out_name(
            data_lib.split_name(info, "train"), recipe.val_fraction, recipe.seed)}
    return RunData(x_train, y_train, x_val, y_val, info, x_test, y_test)


def resolve_pipeline(pipeline):
    checks.check_choice("pipeline", pipeline, PIPELINES)
    return ("tf" if keras.backend.backend() == "tensorflow" else "numpy") if pipeline == "auto" else pipeline


def make_datasets(x_train, y_train, x_val, y_val, info, recipe, pipeline="auto"):
    """The training and validation inputs, with tf.data on TensorFlow and NumPy elsewhere."""
    train = array_pipeline(x_train, y_train, info, recipe, pipeline, training=True)
    val = array_pipeline(x_val, y_val, info, recipe, pipeline) if len(x_val) else None
    return train, val


def array_pipeline(x, y, info, recipe, pipeline="auto", training=False):
    """The training (shuffled, augmented) or evaluation input of arrays: tf.data on TensorFlow, NumPy
    elsewhere."""
    make = data_lib.tf_dataset if resolve_pipeline(pipeline) == "tf" else data_lib.numpy_dataset
    if training:
        return make(x, y, info, batch_size=recipe.batch_size, training=True, seed=recipe.seed, erase=recipe.erase)
    return make(x, y, info, batch_size=recipe.batch_size)


class Feed:
    """How a run's data reach ``fit``: arrays through `make_datasets` (each process's rows under a
    multi-process job), or a streamed folder through `keras_resnet.data.streams`."""

    def __init__(self, data, recipe, pipeline):
        self.data, self.recipe = data, recipe
        self.streamed = "stream" in data.info
        self.callbacks, self.steps = [], None
        if not self.streamed:
            self.kind, self.pipeline = "memory", pipeline
            val = array_pipeline(data.x_val, data.y_val, data.info, recipe, pipeline) if len(data.x_val) else None
            (self.val,) = process_data.process_datasets(val)  # each process's rows
            return
        from keras_resnet.data import streams

        self.kind = "stream"
        self.process, self.processes, _ = distributed.process_layout()
        self.bad = streams.BadFiles()
        self.check = streams.BadFileCheck(self.bad, data.info["stream"]["bad_images"],
                                          data.info["stream"]["folder"])
        self.callbacks, self.steps = [self.check], len(data.x_train) // recipe.batch_size
        self.val = self._eval(data.x_val, data.y_val, "train", recipe.batch_size,
                              self.process, self.processes) if len(data.x_val) else None

    def _eval(self, x, y, split, batch, process=0, processes=1):
        """The evaluation stream of a folder's files or a tensorflow-datasets split's examples."""
        from keras_resnet.data import streams

        return streams.eval_stream(x, y, self.data.info, batch, split=split, process=process,
                                   processes=processes, bad=self.bad)

    def train(self, epoch):
        """The training input of a fit that starts at `epoch`: what an uninterrupted run reads from that
        epoch on, so that a resumed run trains as the whole run did."""
        if not self.streamed:
            data = self.data
            train = array_pipeline(data.x_train, data.y_train, data.info, self.recipe, self.pipeline, training=True)
            (train,) = process_data.process_datasets(train)  # each process's rows
            return data_lib.start_at_epoch(train, epoch)
        from keras_resnet.data import streams

        data, recipe = self.data, self.recipe
        return streams.train_stream(data.x_train, data.y_train, data.info, recipe.batch_size,
                                    seed=recipe.seed, start_epoch=epoch, erase=recipe.erase,
                                    process=self.process, processes=self.processes, bad=self.bad)

    def test(self, model):
        """``(the test metrics of `test_accuracies`, the test images' probabilities)``, in this process
        alone; ``test_digest`` then identifies the images measured (`keras_resnet.data.ExampleDigest`)."""
        data = self.data
        self.test_digest = data_lib.ExampleDigest()  # what the test figures were measured on
        if not self.streamed:
            self.test_digest.add(data.x_test, data.y_test)
            x = data_lib.normalize(data.x_test, data.info)
            probs = predict_probs(model, x)
            return test_accuracies(model, x, data.y_test, data.info, probs=probs), probs
        batch = self.recipe.batch_size  # the training batch's activations fit; a larger one may not
        probs, flipped, self.test_labels, self.mistake_images = stream_predictions(
            model, self._eval(data.x_test, data.y_test, "test", batch), data.info, batch,
            mirror=bool(data.info.get("flip")), digest=self.test_digest)
        self.check.check()  # "error": one line naming the file; the run's epochs are in its state/
        self.check.report("in the test split (left out of the test figures)")
        return accuracies(probs, self.test_labels, flipped), probs
