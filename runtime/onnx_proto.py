"""Just enough of the ONNX protobuf wire format to list external-data locations, without the onnx package.

The runtime must refuse a graph whose tensors point outside the artifact (`location: "../../etc/passwd"`)
*before* onnxruntime opens it. We walk ModelProto → GraphProto → TensorProto.external_data (and nested
graphs in node attributes), skipping every other field, raw weight bytes included, without decoding it.

Field numbers (onnx.proto3): ModelProto.graph=7, ModelProto.functions=25; GraphProto.node=1, initializer=5,
sparse_initializer=15; NodeProto.attribute=5; AttributeProto t=5, g=6, tensors=10, graphs=11,
sparse_tensor=22, sparse_tensors=23; TensorProto.external_data=13; StringStringEntryProto key=1 value=2;
FunctionProto.node=7; SparseTensorProto values=1, indices=2.
"""

from __future__ import annotations

from collections.abc import Iterator


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, memoryview | int]]:
    """Yield (field_number, wire_type, value) for one message; length-delimited values stay unparsed."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = 0, pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = 0, pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("truncated protobuf message")
        yield field, wire, value


def _submessages(buf: memoryview, number: int) -> Iterator[memoryview]:
    for field, wire, value in _fields(buf):
        if field == number and wire == 2:
            yield value


def _tensor_locations(tensor: memoryview) -> Iterator[str]:
    for entry in _submessages(tensor, 13):
        kv = {f: bytes(v).decode("utf-8", "replace") for f, w, v in _fields(entry) if w == 2}
        if kv.get(1) == "location":
            yield kv.get(2, "")


def _sparse_locations(sparse: memoryview) -> Iterator[str]:
    for number in (1, 2):
        for tensor in _submessages(sparse, number):
            yield from _tensor_locations(tensor)


def _node_locations(node: memoryview) -> Iterator[str]:
    for attr in _submessages(node, 5):
        for field, wire, value in _fields(attr):
            if wire != 2:
                continue
            if field in (5, 10):
                yield from _tensor_locations(value)
            elif field in (6, 11):
                yield from _graph_locations(value)
            elif field in (22, 23):
                yield from _sparse_locations(value)


def _graph_locations(graph: memoryview) -> Iterator[str]:
    for field, wire, value in _fields(graph):
        if wire != 2:
            continue
        if field == 5:
            yield from _tensor_locations(value)
        elif field == 15:
            yield from _sparse_locations(value)
        elif field == 1:
            yield from _node_locations(value)


def external_data_locations(model_bytes: bytes) -> set[str]:
    """All `location` values of external-data tensors in a serialized ModelProto."""
    buf = memoryview(model_bytes)
    locations: set[str] = set()
    for field, wire, value in _fields(buf):
        if wire != 2:
            continue
        if field == 7:
            locations.update(_graph_locations(value))
        elif field == 25:
            for node in _submessages(value, 7):
                locations.update(_node_locations(node))
    return locations
