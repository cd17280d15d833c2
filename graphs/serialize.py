"""Write a graph with its weights in one external-data file beside it.

Always external data: the 2 GB protobuf limit then never matters, the graph file stays small enough to
inspect, and ONNX Runtime memory-maps the weights. Returns the file names written, relative to the folder.
"""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir


def save_with_external_data(model: ir.Model, folder: Path, name: str = "model.onnx") -> list[str]:
    data_name = f"{name}.data"
    # alignment: weights start on 64-byte boundaries, which lets ORT mmap them without copies on any platform.
    ir.save(model, folder / name, external_data=data_name, size_threshold_bytes=1024, alignment=64)
    return [name, data_name] if (folder / data_name).exists() else [name]
