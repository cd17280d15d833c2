"""modelkiln.exporter: load a source (checkpoint dir, .gguf, Hub id), trace it to ONNX, write the artifact.

    from modelkiln.exporter import export, ExportOptions
    export("path/to/checkpoint", "artifact/", ExportOptions(task="text-generation", validate=True))
"""

from modelkiln.exporter.api import ExportOptions, export

__all__ = ["ExportOptions", "export"]
