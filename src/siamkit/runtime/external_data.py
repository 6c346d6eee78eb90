"""The files an ONNX graph makes ONNX Runtime read besides itself, found without ``onnx``.

A tensor of an ONNX model may keep its bytes in another file (``external
data``), named by a ``location`` inside the graph. ONNX Runtime opens those
files itself, so a checksum of the ``.onnx`` file alone does not cover the
weights: :func:`external_data_files` lists every such location, wherever the
tensor sits (initializers, sparse initializers, constants in node attributes,
subgraphs of control flow, functions, training graphs), by walking the
protobuf wire format directly. It never recurses (a hostile file may nest
subgraphs without end) and it needs neither ``onnx`` nor ``protobuf``.
"""

from __future__ import annotations

from collections.abc import Iterator

# The messages of onnx.proto that can hold a tensor, and for each the fields
# (by number) that embed another of them.
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION, _TRAINING, _ENTRY = range(9)
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _TENSOR: {13: _ENTRY},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _ENTRY: {},
}
_DATA_LOCATION = 14  # TensorProto.data_location; 1 is EXTERNAL
_EXTERNAL = 1


def external_data_files(data: bytes | memoryview) -> list[str]:
    """The ``location`` of every tensor of the serialized model ``data`` kept in another file.

    Each location appears once, in the order first met.

    Raises:
        ValueError: ``data`` is not a well-formed protobuf message, or a tensor
            is marked external without a location.

    Examples:
        >>> external_data_files(b"")
        []
        >>> # ModelProto.graph { initializer { external_data { "location": "w.data" } } }
        >>> entry = b"\\x0a\\x08location\\x12\\x06w.data"
        >>> tensor = b"\\x6a" + bytes([len(entry)]) + entry + b"\\x70\\x01"
        >>> graph = b"\\x2a" + bytes([len(tensor)]) + tensor
        >>> external_data_files(b"\\x3a" + bytes([len(graph)]) + graph)
        ['w.data']
    """
    buffer = memoryview(data)
    found: dict[str, None] = {}
    pending = [(_MODEL, 0, len(buffer))]
    while pending:
        kind, start, end = pending.pop()
        if kind == _TENSOR:
            location = _tensor_location(buffer, start, end, pending)
            if location is not None:
                found.setdefault(location)
            continue
        children = _CHILDREN[kind]
        for number, wire, value, stop in _fields(buffer, start, end):
            if wire == 2 and number in children:
                pending.append((children[number], value, stop))
    return list(found)


def _tensor_location(
    buffer: memoryview, start: int, end: int, pending: list[tuple[int, int, int]]
) -> str | None:
    location, external = None, False
    for number, wire, value, stop in _fields(buffer, start, end):
        if number == _DATA_LOCATION and wire == 0:
            external = value == _EXTERNAL
        elif number == 13 and wire == 2:
            key, text = _entry(buffer, value, stop)
            if key == "location":
                location = text
    if external and location is None:
        raise ValueError("a tensor is stored outside the graph but names no file")
    return location


def _entry(buffer: memoryview, start: int, end: int) -> tuple[str, str]:
    """A ``StringStringEntryProto``: (key, value)."""
    parts = {1: "", 2: ""}
    for number, wire, value, stop in _fields(buffer, start, end):
        if number in parts and wire == 2:
            try:
                parts[number] = bytes(buffer[value:stop]).decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("an external-data entry is not UTF-8 text") from None
    return parts[1], parts[2]


def _fields(buffer: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field number, wire type, value, end)`` of each field of the message in ``[pos, end)``.

    For a length-delimited field (wire type 2) ``value`` is where its bytes
    start and ``end`` where they stop; for the others ``value`` is the number.
    """
    while pos < end:
        tag, pos = _varint(buffer, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("a protobuf field numbered 0")
        if wire == 0:
            value, pos = _varint(buffer, pos, end)
            yield number, wire, value, pos
        elif wire == 2:
            length, pos = _varint(buffer, pos, end)
            if length > end - pos:
                raise ValueError("a field runs past the end of its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise ValueError("a field runs past the end of its message")
        else:  # groups (3, 4) are not in onnx.proto; 6 and 7 do not exist
            raise ValueError(f"unexpected protobuf wire type {wire}")


def _varint(buffer: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        byte = buffer[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            break
    raise ValueError("a truncated or overlong protobuf varint")
