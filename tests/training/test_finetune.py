"""Fine-tuning from a checkpoint: the classifier alone first (backbone frozen), then the whole network
at a lower learning rate; the checkpoint's normalisation travels into the run folder and the export."""

import json

import keras
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

import keras_resnet
from keras_resnet import build
from keras_resnet import training
from keras_resnet.weights.pretrained import to_state_dict
from keras_resnet.training import Recipe

# A torchvision-layout network small enough for a test: ImageNet stem and four stages, one block each.
ARCH = dict(blocks=(1, 1, 1, 1), width=0.25, input_shape=(64, 64, 1))
MEAN, STD = [0.3], [0.35]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A torchvision-layout checkpoint (safetensors + timm's config.json) of a network pretrained for
    one epoch on 4,000 Fashion-MNIST images resized to 64x64."""
    folder = tmp_path_factory.mktemp("pretrained")
    keras.utils.set_random_seed(3)
    data = training.load_run_data(recipe=Recipe(seed=3), train_size=4000, test_size=500, image_size=64)
    model = build(**ARCH, num_classes=1000)
    training.fit_run(model, Recipe(epochs=1, batch_size=64, learning_rate=0.05), data, folder / "run",
                     verbose=0)
    safetensors_numpy.save_file(to_state_dict(model), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(
        {"architecture": "resnet_tiny", "num_classes": 1000, "pretrained_cfg": {"mean": MEAN * 3, "std": STD * 3}}))
    return folder / "model.safetensors"


@pytest.fixture(scope="module")
def finetuned(checkpoint, tmp_path_factory):
    """The checkpoint fine-tuned from the command line: one frozen epoch, then two of the whole network."""
    from keras_resnet.cli import main

    run_dir = tmp_path_factory.mktemp("finetune") / "run"
    assert main(["train", "--weights", str(checkpoint), "--freeze-epochs", "1", "--epochs", "3",
                 "--image-size", "64", "--blocks", "1,1,1,1", "--width", "0.25", "--train-size", "1500",
                 "--test-size", "1000", "--batch-size", "64", "--learning-rate", "0.05", "--seed", "1", "--verbose", "0",
                 "--run-dir", str(run_dir)]) == 0
    return run_dir, json.loads((run_dir / "run.json").read_text())


def test_phases_train_the_head_then_everything_at_the_scaled_learning_rate():
    (a, b, head, head_only), (c, d, full, whole) = training.phases(
        Recipe(epochs=5, freeze_epochs=2, learning_rate=0.1, fine_tune_lr_scale=0.1))
    assert (a, b, head.epochs, head_only) == (0, 2, 2, True)
    assert (c, d, full.epochs, whole) == (2, 5, 3, False)
    assert full.learning_rate == pytest.approx(0.01) and head.learning_rate == 0.1
    assert training.phases(Recipe(epochs=5)) == [(0, 5, Recipe(epochs=5), False)]


@pytest.mark.slow
def test_frozen_phase_changes_only_the_classifier(checkpoint, tmp_path):
    data = training.load_run_data(recipe=Recipe(seed=1), train_size=600, test_size=100, image_size=64)
    model = build(**ARCH, num_classes=10, weights=str(checkpoint))
    before = {w.path: np.array(w.numpy()) for w in model.weights}
    with pytest.raises(RuntimeError, match="end of the frozen phase"):
        training.fit_run(model, Recipe(epochs=2, freeze_epochs=1, batch_size=64), data, tmp_path, verbose=0,
                         callbacks=[_CrashAfterEpoch0()])
    after = {w.path: np.array(w.numpy()) for w in model.weights}
    changed = sorted({p.split("/")[0] for p in before if not np.array_equal(before[p], after[p])})
    assert changed == ["logits"], f"the frozen epoch changed {changed}"


class _CrashAfterEpoch0(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("end of the frozen phase")


@pytest.mark.slow
def test_finetuning_improves_the_loss_and_records_the_checkpoint(finetuned, checkpoint):
    run_dir, result = finetuned
    history = training.read_history(str(run_dir / "history.csv"))
    assert history["epoch"] == [0, 1, 2]
    assert history["loss"][-1] < history["loss"][0]
    assert result["weights"]["kind"] == "safetensors" and result["weights"]["head_loaded"] is False
    assert result["test_accuracy"] > 0.25  # chance is 0.1


@pytest.mark.slow
def test_checkpoint_normalisation_replaces_the_dataset_statistics_in_the_run_folder(finetuned):
    run_dir, _ = finetuned
    config = json.loads((run_dir / "config.json").read_text())
    assert config["normalization"] == {"mean": pytest.approx(MEAN), "std": pytest.approx(STD)}
    assert config["recipe"]["freeze_epochs"] == 1


@pytest.mark.slow
def test_evaluate_reads_the_run_folder_and_reproduces_the_test_accuracy(finetuned):
    run_dir, result = finetuned
    evaluated = training.evaluate(str(run_dir / "model.keras"), test_size=1000)  # the run's test_size
    assert evaluated["test_images"] == result["test_images"] == 1000
    assert evaluated["test_accuracy"] == pytest.approx(result["test_accuracy"], abs=1e-9)


@pytest.mark.slow
def test_command_line_fine_tune_then_int8_export_then_predict(finetuned, tmp_path, capsys):
    from keras_resnet import export
    from keras_resnet.cli import main

    run_dir, _ = finetuned
    tflite = tmp_path / "m_int8.tflite"
    # Three short epochs leave near-uniform scores whose top class flips easily under int8: a looser check.
    assert main(["export", str(run_dir / "model.keras"), "--quantize", "int8", "--verify-count", "300",
                 "--min-agreement", "0.8", "--max-accuracy-drop", "0.05", "--output", str(tflite)]) == 0
    sidecar = export.read_sidecar(str(tflite))
    assert sidecar["normalization"]["mean"] == pytest.approx(MEAN)
    assert sidecar["normalization"]["std"] == pytest.approx(STD)
    image = tmp_path / "shirt.png"
    from PIL import Image

    (_, _), (x_test, _), _ = keras_resnet.data.load("fashion_mnist")
    Image.fromarray(x_test[0][..., 0]).save(image)
    capsys.readouterr()
    assert main(["predict", str(tflite), str(image), "--top", "1"]) == 0
    assert "shirt.png" in capsys.readouterr().out
