"""TFRecord files and ``tf.train.Example`` records read without TensorFlow: the framing (a length,
its CRC, the record, its CRC) and the few protobuf fields an Example has, in pure Python, so that a
prepared folder (`keras_resnet.data.prepared`) is read where only JAX or PyTorch is installed, and
its shards are counted without decoding them. The CRCs are not checked (TensorFlow's reader checks
them where it reads the same files)."""

import struct

HEADER = struct.Struct("<QI")  # the record's length, the length's masked CRC32C
FOOTER = 4  # the record's masked CRC32C


def read_records(path):
    """The records of a TFRecord file, in order (bytes); an `OSError` naming a truncated file."""
    with open(path, "rb") as f:
        while True:
            header = f.read(HEADER.size)
            if not header:
                return
            if len(header) < HEADER.size:
                raise OSError(f"{path}: truncated TFRecord file (a record header of {len(header)} bytes)")
            length, _ = HEADER.unpack(header)
            data = f.read(length)
            if len(data) < length or len(f.read(FOOTER)) < FOOTER:
                raise OSError(f"{path}: truncated TFRecord file (a record of {length} bytes ends early)")
            yield data


def count_records(path):
    """The number of records of a TFRecord file, from the headers alone."""
    count, size = 0, 0
    with open(path, "rb") as f:
        total = f.seek(0, 2)
        while size < total:
            f.seek(size)
            header = f.read(HEADER.size)
            if len(header) < HEADER.size:
                raise OSError(f"{path}: truncated TFRecord file")
            size += HEADER.size + HEADER.unpack(header)[0] + FOOTER
            count += 1
    if size != total:
        raise OSError(f"{path}: truncated TFRecord file")
    return count


def _varint(data, pos):
    result, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data):
    """``(field number, wire type, value)`` of a protobuf message: ints for varints, bytes for
    length-delimited fields (the only two kinds an Example's messages use, with 32-bit floats)."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        else:
            raise ValueError(f"not a tf.train.Example: protobuf wire type {wire}")
        yield number, wire, value


def _int64s(data):
    """An Int64List's values (packed or not), as Python ints (two's complement)."""
    values = []
    for number, wire, value in _fields(data):
        if number != 1:
            continue
        if wire == 2:  # packed
            pos = 0
            while pos < len(value):
                v, pos = _varint(value, pos)
                values.append(v)
        else:
            values.append(value)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def _floats(data):
    values = []
    for number, wire, value in _fields(data):
        if number == 1:
            values += list(struct.unpack(f"<{len(value) // 4}f", value)) if wire == 2 else list(
                struct.unpack("<f", value))
    return values


def parse_example(data):
    """A serialized ``tf.train.Example`` -> ``{feature name: list of bytes, ints or floats}``."""
    parsed = {}
    for number, _, features in _fields(data):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(features):
            if entry_number != 1:
                continue
            name, feature = b"", b""
            for n, _, v in _fields(entry):
                name, feature = (v, feature) if n == 1 else (name, v if n == 2 else feature)
            values = []
            for kind, _, content in _fields(feature):
                if kind == 1:
                    values = [v for n, _, v in _fields(content) if n == 1]
                elif kind == 2:
                    values = _floats(content)
                elif kind == 3:
                    values = _int64s(content)
            parsed[name.decode("utf-8")] = values
    return parsed
