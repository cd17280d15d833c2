"""modelkiln.runtime.tokenizer: a pure-Python reimplementation of tokenizer.json (see issue 3).

    >>> from modelkiln.runtime.tokenizer import AutoTokenizer, Tokenizer
    >>> tok = Tokenizer.from_file("artifact/tokenizer.json")           # doctest: +SKIP
    >>> tok.encode("Hello world").ids                                  # doctest: +SKIP
    >>> hf = AutoTokenizer.from_pretrained("artifact/")                # doctest: +SKIP
    >>> hf(["Hello", "world"], padding=True, return_tensors="np")      # doctest: +SKIP

`Tokenizer` has the `tokenizers.Tokenizer` API and gives exactly its output; `AutoTokenizer` adds
tokenizer_config.json and transformers' calling convention. Never imports torch, transformers,
tokenizers or sentencepiece: stdlib, `regex`, and numpy for `return_tensors="np"`.
"""

from modelkiln.runtime.tokenizer.added_vocabulary import AddedToken
from modelkiln.runtime.tokenizer.encoding import Encoding
from modelkiln.runtime.tokenizer.hf import AutoTokenizer, BatchEncoding, PreTrainedTokenizer
from modelkiln.runtime.tokenizer.streaming import DecodeStream
from modelkiln.runtime.tokenizer.tokenizer import Tokenizer

__all__ = [
    "AddedToken", "AutoTokenizer", "BatchEncoding", "DecodeStream", "Encoding", "PreTrainedTokenizer", "Tokenizer",
]
