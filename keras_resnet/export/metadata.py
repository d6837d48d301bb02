"""TFLite Model Metadata inside the ``.tflite`` file: what MediaPipe Tasks and Android Studio read.

The metadata is a FlatBuffer of the TFLite metadata schema (``metadata_schema.fbs``, file identifier
``M001``; schema 1.5, every field written here exists since 1.0.0) stored in a buffer of the model
and named ``TFLITE_METADATA``; the label file it refers to is a zip archive appended to the model
(stored, not compressed), as the TFLite Support populator does.

Why not the schema's generated object API (``ModelMetadataT(...).Pack(builder)``): it can write, but
it ships only inside MediaPipe's wheel (a dependency far larger than this package, of the test extra
only) and tflite-support's, which pins protobuf 3 that TensorFlow no longer runs with. So the writer
here is small and on the ``flatbuffers`` runtime alone, and names every field as the schema does
(`FIELDS`, each table's field name -> slot number). The tests check `FIELDS` against the slots of
MediaPipe's generated code, read every written field back with its object API (``ModelMetadataT``)
and load the files with MediaPipe's ImageClassifier.

Everything written comes from the sidecar dict (`keras_resnet.export` writes both from the same facts).
"""

import io
import zipfile

import numpy as np

METADATA_NAME = "TFLITE_METADATA"
LABEL_FILE = "labels.txt"
MIN_PARSER_VERSION = "1.0.0"
# Enum values of metadata_schema.fbs.
_COLOR_SPACES = {"RGB": 1, "GRAYSCALE": 2}
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
# The fields written, by table, with their slots (field ids) in metadata_schema.fbs.
FIELDS = {
    "ModelMetadata": {"name": 0, "description": 1, "version": 2, "subgraphMetadata": 3, "minParserVersion": 7},
    "SubGraphMetadata": {"inputTensorMetadata": 2, "outputTensorMetadata": 3},
    "TensorMetadata": {"name": 0, "description": 1, "content": 3, "processUnits": 4, "stats": 5,
                       "associatedFiles": 6},
    "Content": {"contentPropertiesType": 0, "contentProperties": 1},
    "ImageProperties": {"colorSpace": 0, "defaultSize": 1},
    "ImageSize": {"width": 0, "height": 1},
    "FeatureProperties": {},
    "ProcessUnit": {"optionsType": 0, "options": 1},
    "NormalizationOptions": {"mean": 0, "std": 1},
    "Stats": {"max": 0, "min": 1},
    "AssociatedFile": {"name": 0, "description": 1, "type": 2},
}


def metadata_buffer(info):
    """The metadata FlatBuffer (bytes) for the sidecar dict `info`."""
    import flatbuffers

    b = flatbuffers.Builder(1024)
    inp, out = info["input"], info["output"]
    inputs = _vector(b, [_input_tensor(b, inp)])
    outputs = _vector(b, [_output_tensor(b, out, info["class_names"] is not None)])
    subgraph = _vector(b, [_table(b, "SubGraphMetadata", inputTensorMetadata=inputs, outputTensorMetadata=outputs)])
    name, description, version, parser = (b.CreateString(s) for s in (
        info["model"], _model_description(info), info["version"], MIN_PARSER_VERSION))
    root = _table(b, "ModelMetadata", name=name, description=description, version=version,
                  subgraphMetadata=subgraph, minParserVersion=parser)
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def label_archive(class_names):
    """``labels.txt`` (one class name a line) as a zip archive to append to the model."""
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(LABEL_FILE, "".join(f"{name}\n" for name in class_names))
    return stream.getvalue()


def append_archive(model_bytes, archive_bytes):
    """`model_bytes` followed by the members of the zip `archive_bytes`, their offsets counted from
    the start of the model (readers such as MediaPipe's open the whole file as the archive)."""
    stream = io.BytesIO(model_bytes)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as src, zipfile.ZipFile(stream, "a") as dst:
        for member in src.infolist():
            dst.writestr(member, src.read(member))
    return stream.getvalue()


def _model_description(info):
    quantize = info["quantize"] if info["quantize"] != "float32" else "float32, not quantized"
    names = info["class_names"]
    return (f"Image classifier ({info['model']}, {quantize}) of {info['output']['shape'][-1]} classes"
            + (f": {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}" if names else "")
            + ". Exported and verified against Keras by keras_resnet.")


def _input_tensor(b, inp):
    h, w, _ = inp["shape"][1:]
    size = _table(b, "ImageSize", width=("uint32", w), height=("uint32", h))
    image = _table(b, "ImageProperties", colorSpace=("int8", _COLOR_SPACES[inp["color_space"]]), defaultSize=size)
    fields = {"content": _table(b, "Content", contentPropertiesType=("uint8", _IMAGE_PROPERTIES),
                                contentProperties=image), **_stats(b, inp)}
    norm = inp["normalization"]
    if norm is not None:
        options = _table(b, "NormalizationOptions", mean=_floats(b, norm["mean"]), std=_floats(b, norm["std"]))
        fields["processUnits"] = _vector(b, [_table(b, "ProcessUnit", optionsType=("uint8", _NORMALIZATION_OPTIONS),
                                                    options=options)])
    fields["name"] = b.CreateString("image")
    fields["description"] = b.CreateString(
        f"{inp['color_space']} image, {w}x{h}, {inp['dtype']}: pixels 0-255"
        + (", normalised as (pixels - mean) / std" if norm is not None else "") + _quantization_text(inp))
    return _table(b, "TensorMetadata", **fields)


def _output_tensor(b, out, labelled):
    fields = {"content": _table(b, "Content", contentPropertiesType=("uint8", _FEATURE_PROPERTIES),
                                contentProperties=_table(b, "FeatureProperties")), **_stats(b, out)}
    if labelled:
        label = _table(b, "AssociatedFile", name=b.CreateString(LABEL_FILE),
                       description=b.CreateString("Class names, one a line."), type=("int8", _TENSOR_AXIS_LABELS))
        fields["associatedFiles"] = _vector(b, [label])
    fields["name"] = b.CreateString("probability")
    fields["description"] = b.CreateString(f"Scores of the classes, {out['dtype']}" + _quantization_text(out))
    return _table(b, "TensorMetadata", **fields)


def _quantization_text(tensor):
    if tensor["dtype"] == "float32":
        return "."
    return (f"; quantized by the converter with scale {tensor['scale']:.9g} and zero point "
            f"{tensor['zero_point']} (value = scale * (q - zero_point)).")


def _stats(b, tensor):
    """``{"stats": Stats}``, the range of the tensor's real values (the quantized range for integer
    tensors), or nothing when it is unknown."""
    if tensor["range"] is None:
        return {}
    low, high = tensor["range"]
    return {"stats": _table(b, "Stats", max=_floats(b, [high]), min=_floats(b, [low]))}


def _floats(b, values):
    return b.CreateNumpyVector(np.asarray(values, np.float32))


def _vector(b, offsets):
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _table(b, table, **fields):
    """A `table` of the schema from its fields by name: an offset, or ``(kind, number)`` for a scalar."""
    slots = {FIELDS[table][name]: value for name, value in fields.items()}
    b.StartObject(max(FIELDS[table].values(), default=-1) + 1)
    for slot, value in sorted(slots.items()):
        if isinstance(value, tuple):
            kind, number = value
            {"int8": b.PrependInt8Slot, "uint8": b.PrependUint8Slot,
             "uint32": b.PrependUint32Slot}[kind](slot, number, 0)
        else:
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
    return b.EndObject()
