"""modelkiln.validate: eager-vs-compiled comparison, tolerances and parity reports.

    from modelkiln.validate import validate
    report = validate("smollm2/", "SmolLM2-135M-Instruct.Q4_1.gguf")   # -> ParityReport

torch and transformers are imported inside functions, so importing this package stays light.
"""

from modelkiln.validate.api import validate
from modelkiln.validate.compare import DEFAULT_TOLERANCES, Tolerance, compare_arrays, compare_tokens
from modelkiln.validate.report import CaseResult, ParityReport

__all__ = ["DEFAULT_TOLERANCES", "CaseResult", "ParityReport", "Tolerance", "compare_arrays", "compare_tokens",
           "validate"]
