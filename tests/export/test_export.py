import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_resnet import build, cli, export
from keras_resnet.export import EDGE_OPS, ExportError, ExportOptions, analyze, graph, to_tflite

MEAN, STD = 0.2, 0.25
CLASSES = [f"class_{k}" for k in range(10)]
# blocks=(1, 1, 1): the stem, two convolutions per block, and the projections of stages 2 and 3;
# a camera-ready file (RGB pixels in) has one more, the 1x1 convolution in front.
CONVS, BATCH_NORMS, BLOCKS = 9, 9, 3


def synthetic(n, seed):
    """uint8 28x28 images of noise with one bright bar whose place on a 2 x 5 grid is the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 80, (n, 28, 28, 1)).astype(np.uint8)
    for image, k in zip(x, y):
        r, c = divmod(int(k), 5)
        image[2 + 13 * r:12 + 13 * r, 1 + 5 * c:5 + 5 * c] = rng.integers(180, 256)
    return x, y


def normalize(x):
    return ((x / 255 - MEAN) / STD).astype(np.float32)


def randomize_batch_norms(model, seed=0):
    """Non-trivial BatchNorm statistics, so that folding them into the convolutions is put to the test."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            layer.set_weights([rng.uniform(0.5, 1.5, shapes[0]), rng.normal(0, 0.1, shapes[1]),
                               rng.normal(0, 0.1, shapes[2]), rng.uniform(0.5, 2.0, shapes[3])])


@pytest.fixture(scope="module")
def trained():
    """A small ResNet trained to confident predictions on the synthetic task, and its data."""
    keras.utils.set_random_seed(0)
    x, y = synthetic(640, seed=0)
    model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.25, num_classes=10)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(normalize(x), y, batch_size=32, epochs=5, verbose=0)
    x_val, y_val = synthetic(200, seed=1)
    return model, normalize(x[:200]), normalize(x_val), y_val


def test_float32_file_takes_rgb_pixels_matches_keras_within_1e_4_and_writes_sidecar(tmp_path):
    keras.utils.set_random_seed(1)
    model = build(depth=8, input_shape=(32, 32, 3), width=0.5, num_classes=10)
    randomize_batch_norms(model)
    mean, std = np.array([0.5, 0.4, 0.3]), 0.25
    pixels = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
    x = ((pixels / 255 - mean) / std).astype(np.float32)
    path = tmp_path / "model.tflite"
    info = to_tflite(model, path, verify_data=x, mean=mean, std=std, class_names=CLASSES)

    # the file normalises 0-255 pixels inside, as training normalised them
    diff = np.abs(export.run(path, pixels) - model.predict(x, verbose=0)).max()
    assert diff < 1e-4
    sidecar = json.loads((tmp_path / "model.json").read_text())
    assert sidecar == info
    assert sidecar["input"]["shape"] == [-1, 32, 32, 3] and sidecar["input"]["dtype"] == "float32"
    assert sidecar["input"]["color_space"] == "RGB" and sidecar["input"]["normalized_inside"] is True
    assert sidecar["input"]["normalization"] == {"mean": [0.0] * 3, "std": [1.0] * 3}
    assert sidecar["input"]["range"] == [0.0, 255.0]
    assert sidecar["output"]["shape"] == [-1, 10] and sidecar["output"]["range"] == [0.0, 1.0]
    assert sidecar["normalization"]["mean"] == [0.5, 0.4, 0.3]
    assert sidecar["normalization"]["std"] == [0.25, 0.25, 0.25]
    assert sidecar["class_names"] == CLASSES
    assert sidecar["architecture"]["depth"] == 8 and sidecar["architecture"]["width"] == 0.5
    assert sidecar["file_size"] == path.stat().st_size
    assert sidecar["ops"]["CONV_2D"] == CONVS + 1 and "MUL" not in sidecar["ops"]
    assert sidecar["verification"]["max_abs_diff"] < 1e-4
    assert sidecar["verification"]["images"] == 16


@pytest.mark.slow
def test_grayscale_model_without_rgb_input_keeps_its_normalised_input(trained, tmp_path):
    model, _, x_val, _ = trained
    path = tmp_path / "gray.tflite"
    info = to_tflite(model, path, ExportOptions(rgb_input=False), verify_data=x_val, mean=MEAN, std=STD)

    assert info["input"]["shape"] == [-1, 28, 28, 1] and info["input"]["color_space"] == "GRAYSCALE"
    assert info["input"]["normalization"] == {"mean": [255 * MEAN], "std": [255 * STD]}
    assert info["ops"]["CONV_2D"] == CONVS
    np.testing.assert_allclose(export.run(path, x_val), model.predict(x_val, verbose=0), atol=1e-4)


@pytest.mark.slow
def test_grayscale_model_gets_the_luminance_of_rgb_pixels(trained, tmp_path):
    model, _, x_val, _ = trained
    path = tmp_path / "rgb.tflite"
    to_tflite(model, path, verify_data=x_val, mean=MEAN, std=STD)
    rgb = np.random.default_rng(3).integers(0, 256, (8, 28, 28, 3)).astype(np.uint8)
    gray = rgb @ np.array(export.camera.LUMA)  # what Pillow's convert("L") computes, unrounded

    expected = model.predict(((gray[..., None] / 255 - MEAN) / STD).astype(np.float32), verbose=0)
    np.testing.assert_allclose(export.run(path, rgb), expected, atol=1e-4)


@pytest.mark.slow
def test_mixed_precision_model_is_exported_and_verified_as_float32(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(2)
        model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.25, num_classes=10)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    randomize_batch_norms(model)
    x = np.random.default_rng(0).standard_normal((8, 28, 28, 1)).astype(np.float32)
    model.save(tmp_path / "mixed.keras")
    float32 = export.float32_model(tmp_path / "mixed.keras")
    assert {layer.dtype_policy.name for layer in float32._flatten_layers(recursive=True)} == {"float32"}
    np.testing.assert_allclose(float32.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.05)
    info = to_tflite(tmp_path / "mixed.keras", tmp_path / "model.tflite", verify_data=x)

    assert info["trained_dtype_policy"] == "mixed_bfloat16"
    assert info["input"]["dtype"] == "float32" and "CAST" not in info["ops"]
    assert info["verification"]["max_abs_diff"] < 1e-4
    assert info["ops"]["CONV_2D"] == CONVS and "MUL" not in info["ops"]


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["float16", "dynamic"])
def test_weight_quantized_modes_write_builtin_ops_with_batchnorm_folded(trained, tmp_path, quantize):
    model, calibration, x_val, y_val = trained
    path = tmp_path / f"{quantize}.tflite"
    info = to_tflite(model, path, quantize, verify_data=x_val, verify_labels=y_val, mean=MEAN, std=STD)

    ops = analyze(path)
    assert not [op for op in ops["ops"] if op.startswith("CUSTOM")]
    assert ops["ops"]["CONV_2D"] == CONVS + 1 and ops["ops"]["ADD"] == BLOCKS and "MUL" not in ops["ops"]
    assert ops["bn_unfolded"] == 0 and info["batch_norm"]["keras_layers"] == BATCH_NORMS
    assert info["input"]["dtype"] == "float32"
    v = info["verification"]
    assert v["top1_agreement"] >= 0.99 and v["tflite_accuracy"] >= v["keras_accuracy"] - 0.01


@pytest.mark.slow
@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_int8_file_has_integer_io_and_sidecar_scale_and_zero_point(trained, tmp_path, io_dtype):
    from ai_edge_litert.interpreter import Interpreter

    model, calibration, x_val, y_val = trained
    path = tmp_path / "int8.tflite"
    info = to_tflite(model, path, ExportOptions(quantize="int8", io_dtype=io_dtype, rgb_input=False), calibration,
                     verify_data=x_val, verify_labels=y_val, mean=MEAN, std=STD)

    interpreter = Interpreter(model_path=str(path))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert np.dtype(inp["dtype"]).name == io_dtype and np.dtype(out["dtype"]).name == io_dtype
    assert (info["input"]["scale"], info["input"]["zero_point"]) == pytest.approx(inp["quantization"])
    assert (info["output"]["scale"], info["output"]["zero_point"]) == pytest.approx(out["quantization"])
    assert info["output"]["scale"] == pytest.approx(1 / 256)  # softmax output in [0, 1)
    assert info["output"]["zero_point"] == {"int8": -128, "uint8": 0}[io_dtype]
    # the input scale covers the calibration range of the normalised images
    lo, hi = calibration.min(), calibration.max()
    q = np.iinfo(io_dtype)
    scale, zero = info["input"]["scale"], info["input"]["zero_point"]
    assert (q.min - zero) * scale <= lo + scale and (q.max - zero) * scale >= hi - scale
    ops = analyze(path)
    assert not [op for op in ops["ops"] if op.startswith("CUSTOM")]
    assert ops["ops"]["CONV_2D"] == CONVS and "MUL" not in ops["ops"] and ops["bn_unfolded"] == 0
    assert info["calibration_images"] == len(calibration)
    v = info["verification"]
    assert v["top1_agreement"] >= 0.97 and v["tflite_accuracy"] >= v["keras_accuracy"] - 0.01


@pytest.mark.slow
def test_int8_camera_file_takes_uint8_pixels_and_gives_uint8_scores(trained, tmp_path):
    model, calibration, x_val, y_val = trained
    path = tmp_path / "int8.tflite"
    info = to_tflite(model, path, "int8", calibration, verify_data=x_val, verify_labels=y_val,
                     mean=MEAN, std=STD, class_names=CLASSES)

    assert info["input"] | {"range": None} == {
        "shape": [-1, 28, 28, 3], "dtype": "uint8", "scale": 1.0, "zero_point": 0, "color_space": "RGB",
        "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3}, "normalized_inside": True, "range": None}
    assert info["output"]["dtype"] == "uint8" and info["output"]["scale"] == pytest.approx(1 / 256)
    assert info["output"]["range"] == [0.0, pytest.approx(255 / 256)]
    v = info["verification"]
    assert v["top1_agreement"] >= 0.97 and v["tflite_accuracy"] >= v["keras_accuracy"] - 0.01
    # raw pixels in, the same classes out as Keras on the normalised images
    pixels = np.round((x_val * STD + MEAN) * 255).astype(np.uint8)
    lite = export.run(path, np.repeat(pixels, 3, axis=-1))
    assert np.mean(lite.argmax(-1) == model.predict(x_val, verbose=0).argmax(-1)) >= 0.97


@pytest.mark.slow
def test_failed_verification_writes_nothing_and_keeps_the_existing_file(trained, tmp_path):
    model, calibration, x_val, _ = trained
    path = tmp_path / "model.tflite"
    path.write_bytes(b"the previous model")
    (tmp_path / "model.json").write_text("{}")

    with pytest.raises(ExportError, match="max_abs_diff=1e-09.*Nothing was written"):
        to_tflite(model, path, ExportOptions(quantize="int8", max_abs_diff=1e-9), calibration, verify_data=x_val)
    assert path.read_bytes() == b"the previous model"
    assert (tmp_path / "model.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == ["model.json", "model.tflite"]  # no temporary file left


def test_bad_arguments_raise_value_errors_naming_them(tmp_path):
    model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.25, num_classes=10)
    path = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match="`quantize` must be .*Received: quantize='int4'"):
        to_tflite(model, path, "int4")
    with pytest.raises(ValueError, match="quantize='int8' needs `representative_data`"):
        to_tflite(model, path, "int8")
    with pytest.raises(ValueError, match="normalised float32 .*dtype=uint8"):
        to_tflite(model, path, "int8", np.zeros((4, 28, 28, 1), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(N, 28, 28, 1\).*\(4, 32, 32, 3\)"):
        to_tflite(model, path, "int8", np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="edge=True .*quantize='float16'"):
        to_tflite(model, path, ExportOptions(quantize="float16", edge=True))
    with pytest.raises(ValueError, match="io_dtype='uint8' needs quantize='int8'"):
        to_tflite(model, path, ExportOptions(quantize="dynamic", io_dtype="uint8"))
    with pytest.raises(ValueError, match="verify_data"):
        to_tflite(model, path, "dynamic")
    with pytest.raises(ValueError, match=r"one name per output \(10\)"):
        to_tflite(model, path, class_names=["only", "three", "names"])
    with pytest.raises(ValueError, match="ending in .tflite"):
        to_tflite(model, tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        to_tflite(tmp_path / "missing.keras", path)
    with pytest.raises(ValueError, match="rgb_input=True .*pass `mean` and `std`"):
        to_tflite(model, path, ExportOptions(rgb_input=True))
    with pytest.raises(TypeError, match="`rgb_input` must be None, True or False"):
        to_tflite(model, path, ExportOptions(rgb_input="yes"), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="`class_names` must be non-empty names without line breaks"):
        to_tflite(model, path, class_names=["a\nb"] + CLASSES[1:])
    assert os.listdir(tmp_path) == []


def test_other_backends_are_refused_before_converting(tmp_path, monkeypatch):
    model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.25, num_classes=10)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ExportError, match="TensorFlow backend.*'jax'.*KERAS_BACKEND=tensorflow"):
        to_tflite(model, tmp_path / "model.tflite")
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_predict_reads_png_files_and_returns_named_top_classes(trained, tmp_path, capsys):
    model, calibration, x_val, y_val = trained
    model.save(tmp_path / "model.keras")
    tflite = tmp_path / "model.tflite"
    to_tflite(str(tmp_path / "model.keras"), tflite, "int8", calibration, verify_data=x_val,
              verify_labels=y_val, mean=MEAN, std=STD, class_names=CLASSES)
    x, y = synthetic(4, seed=2)
    paths = []
    for i, image in enumerate(x):
        paths.append(str(tmp_path / f"image{i}.png"))
        Image.fromarray(image[..., 0]).save(paths[-1])
    # an RGB file of twice the size is converted to grayscale and resized
    Image.fromarray(np.repeat(x[0], 3, axis=-1)).resize((56, 56)).save(tmp_path / "big.png")

    images = export.load_images(paths + [str(tmp_path / "big.png")], (28, 28, 1))
    assert images.shape == (5, 28, 28, 1) and images.dtype == np.uint8
    assert np.array_equal(images[:4], x)
    result = export.predict(tflite, images, top=3)
    assert [top[0][0] for top in result] == list(y) + [y[0]]
    assert all(top[0][1] == CLASSES[top[0][0]] for top in result)
    assert all(len(top) == 3 and top[0][2] >= top[1][2] >= top[2][2] for top in result)

    assert cli.main(["predict", str(tflite), *paths, "--top", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == [CLASSES[k] for k in y]
    assert all(line.count(",") == 1 for line in lines)


@pytest.mark.slow
def test_edge_profile_writes_only_allowlisted_integer_ops_at_batch_1(trained, tmp_path):
    model, calibration, x_val, y_val = trained
    path = tmp_path / "edge.tflite"
    info = to_tflite(model, path, ExportOptions(edge=True, io_dtype="uint8"), representative_data=calibration,
                     verify_data=x_val, verify_labels=y_val, mean=MEAN, std=STD)

    ops = analyze(path)
    assert set(ops["ops"]) <= EDGE_OPS and ops["float_tensors"] == 0
    assert info["quantize"] == "int8" and info["edge"] is True
    assert info["input"]["shape"] == [1, 28, 28, 3] and info["input"]["dtype"] == "uint8"
    assert info["verification"]["images"] == len(x_val)  # run one image at a time


@pytest.mark.slow
def test_edge_profile_rejects_an_operator_outside_the_allowlist(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Activation("tanh"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).standard_normal((8, 8, 8, 1)).astype(np.float32)
    with pytest.raises(ExportError, match="TANH.*outside the Edge TPU"):
        to_tflite(model, tmp_path / "tanh.tflite", ExportOptions(edge=True, min_agreement=0), representative_data=x)
    assert os.listdir(tmp_path) == []


def test_analyze_finds_the_batchnorms_a_concrete_function_leaves_unfolded():
    import tensorflow as tf

    model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.25, num_classes=10)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, 28, 28, 1), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    ops = analyze(converter.convert())  # Keras 3 variables stay variables: no BatchNorm folds
    assert ops["bn_unfolded"] == BATCH_NORMS
    with pytest.raises(ExportError, match="9 BatchNorm"):
        graph.check_graph(ops, "unfolded.tflite", edge=False)


@pytest.mark.slow
def test_cli_export_without_a_run_folder_says_it_uses_fashion_mnist(tmp_path, capfd):
    data = pytest.importorskip("keras_resnet.data")
    model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.25, num_classes=10)
    model.save(tmp_path / "model.keras")
    out = tmp_path / "model_int8.tflite"
    code = cli.main(["export", str(tmp_path / "model.keras"), "--quantize", "int8", "--calibration-count",
                     "50", "--verify-count", "100", "--min-agreement", "0", "--max-accuracy-drop", "1"])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith("no config.json or run.json next to") and "using fashion_mnist" in lines[0]
    assert "verified on 100 fashion_mnist test images" in captured.out
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["class_names"] == data.FASHION_MNIST_CLASSES
    assert sidecar["normalization"]["mean"][0] == pytest.approx(0.286, abs=1e-3)
    assert sidecar["calibration_images"] == 50 and sidecar["verification"]["images"] == 100
    assert sidecar["input"]["dtype"] == "uint8" and sidecar["input"]["shape"] == [-1, 28, 28, 3]


QUIET_AND_VERBOSE = """
import sys
from keras_resnet import build, export
model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.25, num_classes=10)
for verbose in (False, True):
    print(f"--- verbose={verbose}", file=sys.stderr, flush=True)
    export.to_tflite(model, sys.argv[1] + f"/{verbose}.tflite", mean=0.3, std=0.3, verbose=verbose)
"""


@pytest.mark.slow
def test_to_tflite_keeps_native_conversion_logs_quiet_unless_verbose(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}  # TensorFlow's default: everything is logged
    result = subprocess.run([sys.executable, "-c", QUIET_AND_VERBOSE, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    quiet, verbose = result.stderr.split("--- verbose=False")[1].split("--- verbose=True")
    assert "reader.cc" not in quiet and "flatbuffer_export.cc" not in quiet
    assert "reader.cc" in verbose  # the converter's lines, passed through on request
