"""The written file as a graph: its operators, the BatchNorm check, and the edits made after conversion.

`analyze` reads a ``.tflite`` FlatBuffer with LiteRT's generated schema code. `rewrite` is the one
place that changes a converted model: it reads the whole model into LiteRT's object API
(``schema_py_generated.ModelT``, every table and field of the schema), changes what is asked, and packs
it again, as LiteRT's own ``flatbuffer_utils`` and the TFLite metadata populators do (with the
buffers 16-byte aligned, as the converter writes them); a test reads every field of a written file
back and compares the whole model with the converter's.
"""

import collections
import os
from pathlib import Path

import numpy as np

from keras_resnet.export.options import EDGE_OPS, ExportError

_PRODUCERS_OF_FOLDABLE_BN = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


def analyze(tflite_model):
    """Operators of a ``.tflite`` file (a path or its bytes) and how its BatchNorms were converted.

    Returns:
        A dict: ``ops`` (operator name -> count, Flex and custom operators as ``CUSTOM:<name>``),
        ``conv_ops`` (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED), ``bn_unfolded`` (MUL by a
        constant on the output of a convolution that feeds nothing else: a BatchNorm the converter
        should have folded), ``bn_standalone`` (other MULs by a constant: BatchNorms that cannot fold,
        such as those of pre-activation blocks, which follow an addition) and ``float_tensors``
        (float32 and float16 tensors).
    """
    from ai_edge_litert import schema_py_generated as schema

    if isinstance(tflite_model, (str, os.PathLike)):
        data = Path(tflite_model).read_bytes()
    else:
        data = bytes(tflite_model)
    m = schema.ModelT.InitFromPackedBuf(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    float_types = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16}
    ops, unfolded, standalone, float_tensors = collections.Counter(), 0, 0, 0
    for graph in m.subgraphs:
        kinds, producer, consumers = [], {}, collections.Counter()
        for op in graph.operators:
            code = m.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "UNKNOWN")
            if name == "CUSTOM":
                name = "CUSTOM:" + (code.customCode or b"?").decode(errors="replace")
            kinds.append(name)
            for t in op.outputs if op.outputs is not None else ():
                producer[int(t)] = name
            consumers.update(int(t) for t in (op.inputs if op.inputs is not None else ()))
        for op, name in zip(graph.operators, kinds):
            ops[name] += 1
            if name != "MUL":
                continue
            inputs = [int(t) for t in op.inputs]
            # A MUL on the output of a convolution that feeds nothing else is a BatchNorm the converter
            # should have folded (its scale may be a constant or, with unfrozen variables, computed).
            # A pre-activation block's identity shortcut also reads the raw output: that one cannot fold.
            if any(producer.get(t) in _PRODUCERS_OF_FOLDABLE_BN and consumers[t] == 1 for t in inputs):
                unfolded += 1
            elif any(_is_constant(m, graph, t) for t in inputs):
                standalone += 1
        float_tensors += sum(t.type in float_types for t in graph.tensors)
    conv = sum(ops[k] for k in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"))
    return {"ops": dict(ops.most_common()), "conv_ops": conv, "bn_unfolded": unfolded,
            "bn_standalone": standalone, "float_tensors": int(float_tensors)}


def _is_constant(m, graph, t):
    if t < 0:
        return False
    buffer = m.buffers[graph.tensors[t].buffer]
    if buffer is None:
        return False
    return (buffer.data is not None and len(buffer.data) > 0) or (buffer.size or 0) > 0


def check_graph(graph, path, edge):
    """Raises `ExportError` for non-built-in operators, unfolded BatchNorms, or (edge) operators
    outside `EDGE_OPS` and float tensors."""
    ops = graph["ops"]
    foreign = sorted(k for k in ops if k.startswith(("CUSTOM", "UNKNOWN")) or k.startswith("Flex"))
    if foreign:
        raise ExportError(f"{path}: the converted model holds non-built-in operators {foreign}; only "
                          "LiteRT built-in operators are allowed. Nothing was written.")
    if graph["bn_unfolded"]:
        raise ExportError(
            f"{path}: {graph['bn_unfolded']} BatchNorm(s) were not folded into the convolution before "
            f"them (MUL on a convolution's output); operators: {ops}. Nothing was written.")
    if edge:
        outside = sorted(set(ops) - EDGE_OPS)
        if outside:
            raise ExportError(
                f"{path}: edge profile: operators {outside} are outside the Edge TPU / NPU allow-list "
                f"{sorted(EDGE_OPS)} and would run on the CPU. Nothing was written.")
        if graph["float_tensors"]:
            raise ExportError(f"{path}: edge profile: {graph['float_tensors']} float tensors remain; "
                              "the model must be integer end to end. Nothing was written.")


def read_model(buffer):
    """The whole model as LiteRT's object API (``ModelT``)."""
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(buffer))


def rewrite(buffer, *, pixel_input=False, strip_names=False, metadata=None):
    """The converted model with the asked edits, packed again (bytes).

    Args:
        buffer: a ``.tflite`` FlatBuffer from the converter.
        pixel_input: the integer input carries 0-255 pixels: its quantization becomes scale 1, zero
            point 0. The converter puts a QUANTIZE operator after an integer input whose type differs
            from the graph's; that operator requantizes from the input's parameters, whatever they
            are, into the calibrated range, so the graph computes the same.
        strip_names: drop the names of the inner tensors and the description; the input, the output
            and the signature keep theirs.
        metadata: bytes of TFLite Model Metadata to store as the buffer named ``TFLITE_METADATA``
            (replacing one already there).
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from keras_resnet.export.metadata import METADATA_NAME

    m = read_model(buffer)
    graph = m.subgraphs[0]
    if pixel_input:
        _set_pixel_quantization(m, graph)
    if strip_names:
        m.description = None
        keep = set(graph.inputs) | set(graph.outputs)
        for g in m.subgraphs:
            for i, tensor in enumerate(g.tensors):
                if g is not graph or i not in keep:
                    tensor.name = None
    if metadata is not None:
        entry = next((e for e in m.metadata or () if e.name in (METADATA_NAME, METADATA_NAME.encode())), None)
        if entry is None:
            entry = schema.MetadataT(name=METADATA_NAME)
            m.metadata = (m.metadata or []) + [entry]
            m.buffers.append(schema.BufferT())
            entry.buffer = len(m.buffers) - 1
        m.buffers[entry.buffer].data = np.frombuffer(bytes(metadata), np.uint8)
    for buffer in m.buffers:
        if buffer.data is not None and len(buffer.data):
            buffer.Pack = _aligned(buffer.Pack, len(buffer.data))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def _aligned(pack, size):
    """A buffer's `pack` that first pads the builder so that the `size` data bytes it writes first start
    16-byte aligned, as the converter writes them (the object API aligns them to 4 bytes only)."""

    def aligned_pack(builder):
        builder.Prep(16, size)
        return pack(builder)

    return aligned_pack


def _set_pixel_quantization(m, graph):
    from ai_edge_litert import schema_py_generated as schema

    tensor = graph.tensors[graph.inputs[0]]
    consumers = [op for op in graph.operators if graph.inputs[0] in list(op.inputs)]
    codes = [m.operatorCodes[op.opcodeIndex] for op in consumers]
    quantize = schema.BuiltinOperator.QUANTIZE
    if tensor.quantization is None or not consumers or any(
            max(c.builtinCode, c.deprecatedBuiltinCode) != quantize for c in codes):
        raise ExportError("the converter gave the integer input no QUANTIZE operator to requantize 0-255 "
                          "pixels with; export with rgb_input=False. Nothing was written.")
    tensor.quantization.scale = [1.0]
    tensor.quantization.zeroPoint = [0]
