"""Adding constant tensors to a graph: the one helper every pass that writes weights uses."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant contents (initializer or Constant node) as numpy, else None."""
    tensor = None if value is None else ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def unique_initializer_name(graph: ir.Graph, name: str) -> str:
    """`name`, or `name.1`, `name.2`, ... when it is taken."""
    taken = graph.initializers
    if name not in taken:
        return name
    i = 1
    while f"{name}.{i}" in taken:
        i += 1
    return f"{name}.{i}"


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register `array` as a new initializer (renamed if `name` is taken) and return its value."""
    name = unique_initializer_name(graph, name)
    array = np.ascontiguousarray(array)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def shared_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """The initializer called `name`, created from `array` the first time (shapes, axes, shared tables)."""
    return graph.initializers[name] if name in graph.initializers else add_initializer(graph, name, array)
