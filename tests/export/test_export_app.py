"""The exported files as an app sees them: MediaPipe Tasks' ImageClassifier on real Fashion-MNIST
images, the TFLite Metadata read back with MediaPipe's generated schema code, and the whole model
read back field by field after the edits that follow conversion."""

import io
import json
import shutil
import zipfile

import numpy as np
import pytest

from keras_resnet import cli, export
from keras_resnet.export import camera, convert, graph, metadata

data = pytest.importorskip("keras_resnet.data")
mp = pytest.importorskip("mediapipe")
from mediapipe.tasks.metadata import metadata_schema_py_generated as metadata_schema  # noqa: E402
from mediapipe.tasks.python import BaseOptions, vision  # noqa: E402

TEST_IMAGES = 300
# The run folder's names differ from the dataset's, so a test can tell where they came from.
RUN_CLASSES = [name.upper() for name in data.FASHION_MNIST_CLASSES]


@pytest.fixture(scope="module")
def fmnist(fmnist_model):
    (x, y), (x_test, y_test), info = fmnist_model.data
    return x, y, x_test[:TEST_IMAGES], y_test[:TEST_IMAGES], info


@pytest.fixture(scope="module")
def run_folder(fmnist, fmnist_model, tmp_path_factory):
    """The session's tiny trained ResNet (conftest.fmnist_model), saved as a run folder would be."""
    _, _, _, _, info = fmnist
    folder = tmp_path_factory.mktemp("run")
    shutil.copy(fmnist_model.path, folder / "model.keras")
    config = {"dataset": "fashion_mnist", "normalization": {"mean": info["mean"], "std": info["std"]},
              "class_names": RUN_CLASSES}
    (folder / "config.json").write_text(json.dumps(config))
    return fmnist_model.model, folder


@pytest.fixture(scope="module")
def files(fmnist, run_folder):
    """The float32 and int8 files of the trained model, camera-ready (the default)."""
    x, _, x_test, y_test, info = fmnist
    model, folder = run_folder
    result = {}
    for mode in ("float32", "int8"):
        path = folder / f"{mode}.tflite"
        calibration = data.calibration_images(x, info) if mode == "int8" else None
        export.to_tflite(model, path, mode, calibration, verify_data=data.normalize(x_test, info),
                         verify_labels=y_test, mean=info["mean"], std=info["std"],
                         class_names=info["class_names"])
        result[mode] = path
    return result


def _mediapipe_top(path, images):
    """MediaPipe ImageClassifier's categories (all classes, best first) for uint8 RGB images."""
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                            max_results=10)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        return [classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB,
                                             data=np.ascontiguousarray(image))).classifications[0].categories
                for image in images]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_mediapipe_classifier_reads_the_file_and_agrees_with_predict_and_keras(fmnist, run_folder, files,
                                                                             mode):
    _, _, x_test, y_test, info = fmnist
    model, _ = run_folder
    rgb = np.repeat(x_test, 3, axis=-1)  # real test images, as a camera gives them
    categories = _mediapipe_top(files[mode], rgb)
    ours = export.predict(files[mode], x_test, top=10)
    keras_top = model.predict(data.normalize(x_test, info), verbose=0).argmax(-1)

    mp_top = np.array([c[0].index for c in categories])
    assert [c[0].category_name for c in categories] == [info["class_names"][k] for k in mp_top]
    mp_scores = np.array([[s for _, s in sorted((c.index, c.score) for c in cats)] for cats in categories])
    our_scores = np.array([[p for _, p in sorted((k, p) for k, _, p in top)] for top in ours])
    # every class's score, within the output's quantization step (float32: rounding only)
    step = export.read_sidecar(files[mode])["output"]["scale"] or 1e-5
    assert np.abs(mp_scores - our_scores).max() <= step
    # top-1: equal quantized scores have no order (MediaPipe lists the higher index first, predict the
    # lower), so a class counts as top-1 when it has the best score
    rows = np.arange(len(x_test))
    assert np.mean(our_scores[rows, mp_top] == our_scores.max(-1)) >= 0.99
    assert np.mean(mp_scores[rows, keras_top] == mp_scores.max(-1)) >= 0.99
    assert np.mean(mp_top == y_test) >= 0.7  # the model predicts meaningfully


def test_metadata_writer_field_slots_are_those_of_the_generated_schema():
    import inspect
    import re

    for table, fields in metadata.FIELDS.items():
        assert hasattr(metadata_schema, f"{table}T"), table
        for name, slot in fields.items():
            adder = getattr(metadata_schema, f"{table}Add{name[0].upper()}{name[1:]}")
            assert re.search(rf"Slot\({slot},", inspect.getsource(adder)), (table, name, slot)


def _read_metadata(path):
    """``(ModelMetadataT, label lines)`` of a file, read with MediaPipe's generated schema code."""
    from ai_edge_litert import schema_py_generated as schema

    content = path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    entry = next(e for e in model.metadata if e.name == b"TFLITE_METADATA")
    buffer = bytes(model.buffers[entry.buffer].data)
    assert metadata_schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    meta = metadata_schema.ModelMetadataT.InitFromPackedBuf(buffer, 0)
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        labels = archive.read(metadata.LABEL_FILE).decode().splitlines()
    return meta, labels


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_metadata_reads_back_with_labels_normalisation_and_image_properties(fmnist, files, mode):
    info = fmnist[-1]
    sidecar = export.read_sidecar(files[mode])
    meta, labels = _read_metadata(files[mode])

    assert labels == info["class_names"] == sidecar["class_names"]
    assert meta.name.decode() == sidecar["model"] and meta.minParserVersion == b"1.0.0"
    assert mode in meta.description.decode() and "of 10 classes: T-shirt/top" in meta.description.decode()
    assert meta.version.decode() == sidecar["version"]
    (subgraph,) = meta.subgraphMetadata
    (inp,), (out,) = subgraph.inputTensorMetadata, subgraph.outputTensorMetadata
    image = inp.content.contentProperties
    assert inp.content.contentPropertiesType == metadata_schema.ContentProperties.ImageProperties
    assert image.colorSpace == metadata_schema.ColorSpaceType.RGB
    assert (image.defaultSize.width, image.defaultSize.height) == (28, 28)
    (unit,) = inp.processUnits
    assert unit.optionsType == metadata_schema.ProcessUnitOptions.NormalizationOptions
    assert unit.options.mean.tolist() == [0.0] * 3 and unit.options.std.tolist() == [1.0] * 3
    assert [inp.stats.min[0], inp.stats.max[0]] == [0.0, 255.0]
    (label_file,) = out.associatedFiles
    assert label_file.name == b"labels.txt"
    assert label_file.type == metadata_schema.AssociatedFileType.TENSOR_AXIS_LABELS
    # the output's range is what the converter's quantization can represent
    q = sidecar["output"]
    low, high = ((0.0, 1.0) if mode == "float32"
                 else (q["scale"] * (0 - q["zero_point"]), q["scale"] * (255 - q["zero_point"])))
    assert [out.stats.min[0], out.stats.max[0]] == pytest.approx([low, high])
    if mode == "int8":
        assert f"scale {q['scale']:.9g} and zero point {q['zero_point']}" in out.description.decode()


@pytest.mark.slow
def test_metadata_of_a_file_without_rgb_input_states_the_model_normalisation(fmnist, run_folder, tmp_path):
    _, _, x_test, _, info = fmnist
    model, _ = run_folder
    path = tmp_path / "gray.tflite"
    export.to_tflite(model, path, export.ExportOptions(rgb_input=False), verify_data=data.normalize(x_test[:32], info),
                     mean=info["mean"], std=info["std"], class_names=info["class_names"])
    meta, _ = _read_metadata(path)
    (inp,) = meta.subgraphMetadata[0].inputTensorMetadata
    assert inp.content.contentProperties.colorSpace == metadata_schema.ColorSpaceType.GRAYSCALE
    options = inp.processUnits[0].options
    np.testing.assert_allclose(options.mean, [255 * info["mean"][0]], rtol=1e-6)
    np.testing.assert_allclose(options.std, [255 * info["std"][0]], rtol=1e-6)


def _assert_same_tree(a, b, where="model"):
    """Every attribute of two object-API trees is equal (arrays by value)."""
    if hasattr(a, "__dict__") and not isinstance(a, (bytes, str)):
        assert type(a) is type(b), where
        assert vars(a).keys() == vars(b).keys(), where
        for key in vars(a):
            if key != "Pack":  # the aligned packer set on buffers
                _assert_same_tree(getattr(a, key), getattr(b, key), f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same_tree(u, v, f"{where}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert np.array_equal(np.asarray(a), np.asarray(b)), where
    else:
        assert a == b, where


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_rewrite_keeps_every_field_of_the_converted_model_and_aligns_buffers(fmnist, run_folder, mode):
    from ai_edge_litert import schema_py_generated as schema

    x, _, x_test, _, info = fmnist
    model, _ = run_folder
    norm = {"mean": info["mean"], "std": info["std"]}
    front = camera.front(1, True, norm)
    app = front.with_input_map(model)
    calibration = front.file_input(data.calibration_images(x, info, count=50)) if mode == "int8" else None
    raw = convert._convert(app, mode, calibration, ("uint8", "uint8"), (None, 28, 28, 3))
    written = graph.rewrite(raw, pixel_input=mode == "int8", metadata=b"M001 stand-in metadata")

    before, after = graph.read_model(raw), graph.read_model(written)
    entry = after.metadata.pop()
    assert entry.name == b"TFLITE_METADATA" and entry.buffer == len(after.buffers) - 1
    assert bytes(after.buffers.pop().data) == b"M001 stand-in metadata"
    if mode == "int8":  # the one intended change: the uint8 input carries pixels
        inp = after.subgraphs[0].tensors[after.subgraphs[0].inputs[0]].quantization
        assert (list(inp.scale), list(inp.zeroPoint)) == ([1.0], [0])
        before_inp = before.subgraphs[0].tensors[before.subgraphs[0].inputs[0]].quantization
        inp.scale, inp.zeroPoint = before_inp.scale, before_inp.zeroPoint
    _assert_same_tree(before, after)
    # every constant buffer starts 16-byte aligned, as the converter wrote it
    packed = schema.Model.GetRootAs(written, 0)
    for i in range(packed.BuffersLength()):
        if packed.Buffers(i).DataLength():
            tab = packed.Buffers(i)._tab
            assert tab.Vector(tab.Offset(4)) % 16 == 0
    # and it computes the same
    pixels = np.repeat(x_test[:16], 3, axis=-1).astype(np.float32)
    if mode == "float32":
        np.testing.assert_array_equal(export.run(written, pixels), export.run(raw, pixels))
    else:
        np.testing.assert_allclose(export.run(written, pixels), app.predict(pixels, verbose=0), atol=0.1)


@pytest.mark.slow
def test_cli_export_takes_dataset_normalisation_and_class_names_from_the_run_folder(run_folder, capsys):
    _, folder = run_folder
    out = folder / "from_run.tflite"
    code = cli.main(["export", str(folder / "model.keras"), "--quantize", "float16", "--verify-count", "200",
                     "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.splitlines()[0] == ("using dataset 'fashion_mnist', its normalisation and class "
                                            f"names from {folder / 'config.json'}")
    sidecar = export.read_sidecar(out)
    assert sidecar["class_names"] == RUN_CLASSES
    assert _read_metadata(out)[1] == RUN_CLASSES
    assert sidecar["verification"]["images"] == 200 and sidecar["verification"]["top1_agreement"] >= 0.99
