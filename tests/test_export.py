import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_resnet import build, cli, export
from keras_resnet.export import EDGE_OPS, ExportError, analyze, to_tflite

MEAN, STD = 0.2, 0.25
CLASSES = [f"class_{k}" for k in range(10)]
# blocks=(1, 1, 1): the stem, two convolutions per block, and the projections of stages 2 and 3.
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


def test_float32_file_matches_keras_within_1e_4_and_writes_sidecar(tmp_path):
    keras.utils.set_random_seed(1)
    model = build(depth=8, input_shape=(32, 32, 3), width=0.5, num_classes=10)
    randomize_batch_norms(model)
    x = np.random.default_rng(0).standard_normal((16, 32, 32, 3)).astype(np.float32)
    path = tmp_path / "model.tflite"
    info = to_tflite(model, path, verify_data=x, mean=[0.5, 0.4, 0.3], std=0.25, class_names=CLASSES)

    diff = np.abs(export.run(path, x) - model.predict(x, verbose=0)).max()
    assert diff < 1e-4
    sidecar = json.loads((tmp_path / "model.json").read_text())
    assert sidecar == info
    assert sidecar["input"] == {"shape": [-1, 32, 32, 3], "dtype": "float32", "scale": 0.0, "zero_point": 0}
    assert sidecar["output"]["shape"] == [-1, 10]
    assert sidecar["normalization"]["mean"] == [0.5, 0.4, 0.3]
    assert sidecar["normalization"]["std"] == [0.25, 0.25, 0.25]
    assert sidecar["class_names"] == CLASSES
    assert sidecar["file_size"] == path.stat().st_size
    assert sidecar["ops"]["CONV_2D"] == CONVS and "MUL" not in sidecar["ops"]
    assert sidecar["verification"]["max_abs_diff"] < 1e-4
    assert sidecar["verification"]["images"] == 16


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


@pytest.mark.parametrize("quantize", ["float16", "dynamic"])
def test_weight_quantized_modes_write_builtin_ops_with_batchnorm_folded(trained, tmp_path, quantize):
    model, calibration, x_val, y_val = trained
    path = tmp_path / f"{quantize}.tflite"
    info = to_tflite(model, path, quantize, verify_data=x_val, verify_labels=y_val, mean=MEAN, std=STD)

    graph = analyze(path)
    assert not [op for op in graph["ops"] if op.startswith("CUSTOM")]
    assert graph["ops"]["CONV_2D"] == CONVS and graph["ops"]["ADD"] == BLOCKS and "MUL" not in graph["ops"]
    assert graph["bn_unfolded"] == 0 and info["batch_norm"]["keras_layers"] == BATCH_NORMS
    assert info["input"]["dtype"] == "float32"
    v = info["verification"]
    assert v["top1_agreement"] >= 0.99 and v["tflite_accuracy"] >= v["keras_accuracy"] - 0.01


@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_int8_file_has_integer_io_and_sidecar_scale_and_zero_point(trained, tmp_path, io_dtype):
    from ai_edge_litert.interpreter import Interpreter

    model, calibration, x_val, y_val = trained
    path = tmp_path / "int8.tflite"
    info = to_tflite(model, path, "int8", calibration, verify_data=x_val, verify_labels=y_val,
                     io_dtype=io_dtype, mean=MEAN, std=STD)

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
    graph = analyze(path)
    assert not [op for op in graph["ops"] if op.startswith("CUSTOM")]
    assert graph["ops"]["CONV_2D"] == CONVS and "MUL" not in graph["ops"] and graph["bn_unfolded"] == 0
    assert info["calibration_images"] == len(calibration)
    v = info["verification"]
    assert v["top1_agreement"] >= 0.97 and v["tflite_accuracy"] >= v["keras_accuracy"] - 0.01


def test_failed_verification_writes_nothing_and_keeps_the_existing_file(trained, tmp_path):
    model, calibration, x_val, _ = trained
    path = tmp_path / "model.tflite"
    path.write_bytes(b"the previous model")
    (tmp_path / "model.json").write_text("{}")

    with pytest.raises(ExportError, match="max_abs_diff=1e-09.*Nothing was written"):
        to_tflite(model, path, "int8", calibration, verify_data=x_val, max_abs_diff=1e-9)
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
        to_tflite(model, path, "float16", edge=True)
    with pytest.raises(ValueError, match="io_dtype='uint8' needs quantize='int8'"):
        to_tflite(model, path, "dynamic", io_dtype="uint8")
    with pytest.raises(ValueError, match="verify_data"):
        to_tflite(model, path, "dynamic")
    with pytest.raises(ValueError, match=r"one name per output \(10\)"):
        to_tflite(model, path, class_names=["only", "three", "names"])
    with pytest.raises(ValueError, match="ending in .tflite"):
        to_tflite(model, tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        to_tflite(tmp_path / "missing.keras", path)
    assert os.listdir(tmp_path) == []


def test_other_backends_are_refused_before_converting(tmp_path, monkeypatch):
    model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.25, num_classes=10)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ExportError, match="TensorFlow backend.*'jax'.*KERAS_BACKEND=tensorflow"):
        to_tflite(model, tmp_path / "model.tflite")
    assert os.listdir(tmp_path) == []


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


def test_edge_profile_writes_only_allowlisted_integer_ops_at_batch_1(trained, tmp_path):
    model, calibration, x_val, y_val = trained
    path = tmp_path / "edge.tflite"
    info = to_tflite(model, path, representative_data=calibration, verify_data=x_val, verify_labels=y_val,
                     edge=True, io_dtype="uint8", mean=MEAN, std=STD)

    graph = analyze(path)
    assert set(graph["ops"]) <= EDGE_OPS and graph["float_tensors"] == 0
    assert info["quantize"] == "int8" and info["edge"] is True
    assert info["input"]["shape"] == [1, 28, 28, 1] and info["input"]["dtype"] == "uint8"
    assert info["verification"]["images"] == len(x_val)  # run one image at a time


def test_edge_profile_rejects_an_operator_outside_the_allowlist(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Activation("tanh"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).standard_normal((8, 8, 8, 1)).astype(np.float32)
    with pytest.raises(ExportError, match="TANH.*outside the Edge TPU"):
        to_tflite(model, tmp_path / "tanh.tflite", representative_data=x, edge=True, min_agreement=0)
    assert os.listdir(tmp_path) == []


def test_analyze_finds_the_batchnorms_a_concrete_function_leaves_unfolded():
    import tensorflow as tf

    model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.25, num_classes=10)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, 28, 28, 1), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    graph = analyze(converter.convert())  # Keras 3 variables stay variables: no BatchNorm folds
    assert graph["bn_unfolded"] == BATCH_NORMS
    with pytest.raises(ExportError, match="9 BatchNorm"):
        export._check_graph(graph, "unfolded.tflite", edge=False)


def test_cli_export_calibrates_and_verifies_on_the_dataset(tmp_path, capsys):
    data = pytest.importorskip("keras_resnet.data")
    model = build(blocks=(1, 1, 1), input_shape=(28, 28, 1), width=0.25, num_classes=10)
    model.save(tmp_path / "model.keras")
    out = tmp_path / "model_int8.tflite"
    code = cli.main(["export", str(tmp_path / "model.keras"), "--quantize", "int8", "--calibration-count",
                     "50", "--verify-count", "100", "--min-agreement", "0", "--max-accuracy-drop", "1"])
    assert code == 0, capsys.readouterr().err
    assert "verified on 100 fashion_mnist test images" in capsys.readouterr().out
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["class_names"] == data.FASHION_MNIST_CLASSES
    assert sidecar["normalization"]["mean"][0] == pytest.approx(0.286, abs=1e-3)
    assert sidecar["calibration_images"] == 50 and sidecar["verification"]["images"] == 100
    assert sidecar["input"]["dtype"] == "int8"


def _quantization_and_output(content, x):
    """Every tensor's (name, scales, zero points) and the output for `x` of a .tflite buffer."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    quantization = [(t["name"], t["quantization_parameters"]["scales"].tolist(),
                     t["quantization_parameters"]["zero_points"].tolist())
                    for t in interpreter.get_tensor_details()]
    inp = interpreter.get_input_details()[0]
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return quantization, interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


@pytest.mark.parametrize("quantize", ["dynamic", "int8"])
def test_quantized_file_stores_identical_zero_points_once_and_computes_the_same(trained, quantize):
    model, calibration, x_val, _ = trained
    int8 = quantize == "int8"
    raw = export._convert(model, quantize, calibration if int8 else None, "int8" if int8 else None,
                          (1, 28, 28, 1))
    compact = export._rewrite(raw, strip_names=False)

    raw_quantization, raw_output = _quantization_and_output(raw, x_val[:1])
    quantization, output = _quantization_and_output(compact, x_val[:1])
    assert quantization == raw_quantization
    np.testing.assert_array_equal(output, raw_output)
    # each int64 zero point took 8 bytes; one vector per distinct content is left
    zero_point_bytes = sum(8 * len(zero_points) for _, _, zero_points in raw_quantization)
    assert len(raw) - len(compact) >= zero_point_bytes // 2 > 0
