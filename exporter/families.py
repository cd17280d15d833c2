"""Which model families export for which task, and why the others do not.

A family is exportable as a decoder-only LM when transformers implements it with the standard Cache API
(`DynamicCache` with one key/value tensor pair per layer). The families listed in TESTED are covered by
tests on tiny random checkpoints; others that follow the Cache API export too (`modelkiln validate`
proves each one). Families known not to fit carry the reason the user sees.
"""

from __future__ import annotations

from modelkiln.runtime.errors import ModelkilnError

# Covered by tests/exporter/test_decoder_families.py on tiny random checkpoints.
TESTED_DECODERS = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2")

# Families whose generation state is not a per-layer key/value cache, with the reason the user sees.
UNSUPPORTED_DECODERS = {
    "mamba": "its state is a recurrent SSM state, not a key/value cache",
    "mamba2": "its state is a recurrent SSM state, not a key/value cache",
    "falcon_mamba": "its state is a recurrent SSM state, not a key/value cache",
    "rwkv": "its state is a recurrent RWKV state, not a key/value cache",
    "recurrent_gemma": "it mixes recurrent blocks and local attention with a custom cache",
    "jamba": "its hybrid attention/Mamba layers need a hybrid cache",
    "zamba": "its hybrid attention/Mamba layers need a hybrid cache",
    "zamba2": "its hybrid attention/Mamba layers need a hybrid cache",
    "xlstm": "its state is a recurrent xLSTM state, not a key/value cache",
    "lfm2": "its short-convolution layers keep a convolution state beside the key/value cache",
}


def check_decoder_family(config) -> None:
    """Raise a clear error for configs that cannot become a decoder-only graph with a KV cache."""
    model_type = getattr(config, "model_type", None) or "unknown"
    if model_type in UNSUPPORTED_DECODERS:
        raise ModelkilnError(
            f"model family {model_type!r} cannot be exported for text-generation: {UNSUPPORTED_DECODERS[model_type]}")
    if getattr(config, "is_encoder_decoder", False):
        raise ModelkilnError(
            f"model family {model_type!r} is encoder-decoder; --task text-generation needs a decoder-only model "
            "(seq2seq export is not supported yet)")
