"""modelkiln.graphs: passes over ONNX graphs (never torch).

Exported names: `run_passes`, `EXPORT_PASSES`, `PASSES`, `PassContext`, `register_pass`, `io_signature`,
`rename_dims`, `save_with_external_data`. Importing a pass module registers its passes in `PASSES`.
"""

from modelkiln.graphs import (  # noqa: F401  (registers their passes)
    decoder_fusions,
    encoder_fusions,
    encoder_quantization,
    float16,
    matmul_merge,
    weight_quantization,
)
from modelkiln.graphs.passes import EXPORT_PASSES, PASSES, PassContext, register_pass, run_passes
from modelkiln.graphs.serialize import save_with_external_data
from modelkiln.graphs.signature import io_signature, rename_dims

__all__ = ["EXPORT_PASSES", "PASSES", "PassContext", "io_signature", "register_pass", "rename_dims", "run_passes",
           "save_with_external_data"]
