"""modelkiln.graphs: passes over ONNX graphs (never torch).

Exported names: `run_passes`, `EXPORT_PASSES`, `io_signature`, `save_with_external_data`.
"""

from modelkiln.graphs import decoder_fusions, matmul_merge, weight_quantization  # noqa: F401  (register passes)
from modelkiln.graphs.passes import EXPORT_PASSES, PASSES, PassContext, register_pass, run_passes
from modelkiln.graphs.serialize import save_with_external_data
from modelkiln.graphs.signature import io_signature, rename_dims

__all__ = ["EXPORT_PASSES", "PASSES", "PassContext", "io_signature", "register_pass", "rename_dims", "run_passes", "save_with_external_data"]
