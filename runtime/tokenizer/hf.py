"""A transformers-style tokenizer over `Tokenizer`: read a saved tokenizer directory, call it like HF.

`PreTrainedTokenizer.from_pretrained(directory)` reads `tokenizer.json` plus `tokenizer_config.json`
(special tokens, `model_max_length`, padding/truncation side, `clean_up_tokenization_spaces`, chat
template) and behaves like `transformers.AutoTokenizer` on the same directory (transformers 5):

    >>> tok = AutoTokenizer.from_pretrained("artifact/")                        # doctest: +SKIP
    >>> out = tok(["Hello world", "Hi"], padding=True, return_tensors="np")    # doctest: +SKIP
    >>> out["input_ids"].shape, out["attention_mask"].tolist()                 # doctest: +SKIP
    ((2, 2), [[1, 1], [1, 0]])
    >>> tok.decode(out["input_ids"][0], skip_special_tokens=True)              # doctest: +SKIP
    'Hello world'

As in transformers, the padding/truncation written in tokenizer.json are not applied: each call says
what it wants, and `add_bos_token` / `add_eos_token` in tokenizer_config.json are ignored because
tokenizer.json's post-processor already decides which special tokens are added. The chat template is
kept as a string (`chat_template`); rendering it is not done here.
"""

from __future__ import annotations

import json
import numbers
import os
import threading
from typing import Any, Sequence

from modelkiln.runtime.tokenizer.added_vocabulary import AddedToken
from modelkiln.runtime.tokenizer.encoding import Encoding
from modelkiln.runtime.tokenizer.post_processors import build_post_processor
from modelkiln.runtime.tokenizer.tokenizer import Tokenizer

# transformers treats model_max_length above this as "no limit" (its LARGE_INTEGER).
LARGE_INTEGER = int(1e20)
SPECIAL_TOKENS_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# transformers' per-class `model_input_names` for the classes that differ from the default
# (input_ids + attention_mask); tokenizer_config.json's "model_input_names" overrides it.
_BERT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
_TYPED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MODEL_INPUT_NAMES = {
    "BertTokenizer": _BERT_INPUTS,
    "BertTokenizerFast": _BERT_INPUTS,
    "ConvBertTokenizer": _BERT_INPUTS,
    "MobileBertTokenizer": _BERT_INPUTS,
    "SqueezeBertTokenizer": _BERT_INPUTS,
    "DPRContextEncoderTokenizer": _BERT_INPUTS,
    "DPRQuestionEncoderTokenizer": _BERT_INPUTS,
    "MarkupLMTokenizer": _BERT_INPUTS,
    "CanineTokenizer": _TYPED_INPUTS,
    "DebertaTokenizer": _TYPED_INPUTS,
    "DebertaV2Tokenizer": _TYPED_INPUTS,
    "LayoutLMv2Tokenizer": _TYPED_INPUTS,
    "TapasTokenizer": _TYPED_INPUTS,
    "FNetTokenizer": ("input_ids", "token_type_ids"),
}
DEFAULT_MODEL_INPUT_NAMES = ("input_ids", "attention_mask")
# Classes whose default padding side is left (a "padding_side" in tokenizer_config.json overrides it).
LEFT_PADDING_CLASSES = frozenset(
    {"LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast", "CohereTokenizer",
     "CohereTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer", "XLNetTokenizer",
     "XLNetTokenizerFast"}
)

_PADDING = {False: "do_not_pad", "do_not_pad": "do_not_pad", True: "longest", "longest": "longest",
            "max_length": "max_length"}
_TRUNCATION = {None: "do_not_truncate", False: "do_not_truncate", "do_not_truncate": "do_not_truncate",
               True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
               "only_second": "only_second"}


class BatchEncoding(dict):
    """The dict a call returns (`input_ids`, `attention_mask`, ...), plus the underlying `encodings`."""

    def __init__(self, data: dict, encodings: list[Encoding]):
        super().__init__(data)
        self.encodings = encodings

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self.encodings[batch_index].tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self.encodings[batch_index].word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        return self.encodings[batch_index].sequence_ids

    @property
    def input_ids(self):
        return self["input_ids"]

    @property
    def attention_mask(self):
        return self["attention_mask"]


def _token_content(value: Any) -> str | None:
    """A special token from tokenizer_config.json: a string or a serialized AddedToken dict."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"tokenizer_config.json: a special token must be a string or an AddedToken object, got {value!r}")


def _added_token(value: Any) -> AddedToken:
    if isinstance(value, dict):
        return AddedToken(value["content"], bool(value.get("single_word", False)), bool(value.get("lstrip", False)),
                          bool(value.get("rstrip", False)), bool(value.get("normalized", False)), True)
    return AddedToken(value, special=True, normalized=False)


class PreTrainedTokenizer:
    """A tokenizer directory (tokenizer.json + tokenizer_config.json) with transformers' calling convention."""

    def __init__(self, tokenizer: Tokenizer, config: dict | None = None, chat_template: str | None = None,
                 name_or_path: str = ""):
        config = dict(config or {})
        self._tokenizer = tokenizer
        self._call_lock = threading.Lock()
        self.name_or_path = name_or_path
        self.init_kwargs = config
        self.tokenizer_class = config.get("tokenizer_class") or "TokenizersBackend"
        self.model_max_length = int(config.get("model_max_length") or int(1e30))
        default_side = "left" if self.tokenizer_class in LEFT_PADDING_CLASSES else "right"
        self.padding_side = config.get("padding_side", default_side)
        self.truncation_side = config.get("truncation_side", "right")
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        names = config.get("model_input_names")
        if names is None:
            names = MODEL_INPUT_NAMES.get(self.tokenizer_class, DEFAULT_MODEL_INPUT_NAMES)
        self.model_input_names = list(names)
        self.pad_token_type_id = int(config.get("pad_token_type_id", 0))
        self.chat_template = chat_template if chat_template is not None else config.get("chat_template")
        self._special: dict[str, str | None] = {a: _token_content(config.get(a)) for a in SPECIAL_TOKENS_ATTRIBUTES}
        extra = config.get("extra_special_tokens", config.get("additional_special_tokens")) or []
        if isinstance(extra, dict):  # transformers 5 may store named extras
            extra = list(extra.values())
        self.extra_special_tokens = [_token_content(t) for t in extra]
        # Special tokens the vocabulary lacks are added, as transformers does when it loads the directory.
        missing = [config.get(a) for a in SPECIAL_TOKENS_ATTRIBUTES if self._special[a] is not None]
        missing += list(extra)
        missing = [_added_token(t) for t in missing if tokenizer.token_to_id(_token_content(t)) is None]
        if missing:
            tokenizer.add_special_tokens(missing)
        if tokenizer.post_processor is None:
            # transformers then installs a template that only sets type ids 0/1 (no bos/eos: tokenizer.json wins).
            tokenizer.post_processor = build_post_processor({
                "type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {},
            })

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> PreTrainedTokenizer:
        """Load a directory written by `save_pretrained` (tokenizer.json is required)."""
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"tokenizer directory not found: {directory}")
        tokenizer = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        config: dict = {}
        config_path = os.path.join(directory, "tokenizer_config.json")
        if os.path.exists(config_path):
            with open(config_path, encoding="utf-8") as f:
                try:
                    config = json.load(f)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{config_path} is not valid JSON: {e.msg} at line {e.lineno}") from None
        template = None
        template_path = os.path.join(directory, "chat_template.jinja")
        if os.path.exists(template_path):
            with open(template_path, encoding="utf-8") as f:
                template = f.read()
        return cls(tokenizer, config, template, directory)

    # ------------------------------------------------------------------ vocabulary and special tokens
    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def _special_id(self, attr: str) -> int | None:
        token = self._special[attr]
        return None if token is None else self.convert_tokens_to_ids(token)

    bos_token = property(lambda self: self._special["bos_token"])
    eos_token = property(lambda self: self._special["eos_token"])
    unk_token = property(lambda self: self._special["unk_token"])
    sep_token = property(lambda self: self._special["sep_token"])
    pad_token = property(lambda self: self._special["pad_token"])
    cls_token = property(lambda self: self._special["cls_token"])
    mask_token = property(lambda self: self._special["mask_token"])
    bos_token_id = property(lambda self: self._special_id("bos_token"))
    eos_token_id = property(lambda self: self._special_id("eos_token"))
    sep_token_id = property(lambda self: self._special_id("sep_token"))
    pad_token_id = property(lambda self: self._special_id("pad_token"))
    cls_token_id = property(lambda self: self._special_id("cls_token"))
    mask_token_id = property(lambda self: self._special_id("mask_token"))

    @property
    def unk_token_id(self) -> int | None:
        token = self._special["unk_token"]
        return None if token is None else self._tokenizer.token_to_id(token)

    @property
    def all_special_tokens(self) -> list[str]:
        out: list[str] = []
        for t in [self._special[a] for a in SPECIAL_TOKENS_ATTRIBUTES] + self.extra_special_tokens:
            if t is not None and t not in out:
                out.append(t)
        return out

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        """Token strings to ids; unknown ones map to the unk token's id (None without one)."""
        if isinstance(tokens, str):
            tid = self._tokenizer.token_to_id(tokens)
            return tid if tid is not None else self.unk_token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False):
        if _is_scalar_id(ids):
            return self._tokenizer.id_to_token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._tokenizer.num_special_tokens_to_add(pair)

    # ------------------------------------------------------------------ encoding
    def _strategies(self, padding, truncation, max_length):
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # transformers: a bare max_length means truncation
        try:
            pad = _PADDING[padding]
            trunc = _TRUNCATION[truncation]
        except (KeyError, TypeError):
            raise ValueError(
                f"padding={padding!r} / truncation={truncation!r}: expected padding in True/False/'longest'/"
                f"'max_length'/'do_not_pad' and truncation in True/False/'longest_first'/'only_first'/'only_second'"
            ) from None
        if max_length is None:
            if pad == "max_length":
                if self.model_max_length > LARGE_INTEGER:
                    pad = "do_not_pad"
                else:
                    max_length = self.model_max_length
            if trunc != "do_not_truncate":
                if self.model_max_length > LARGE_INTEGER:
                    trunc = "do_not_truncate"
                else:
                    max_length = self.model_max_length
        if pad != "do_not_pad" and (self.pad_token is None or self.pad_token_id is None):
            raise ValueError(
                "asked to pad but this tokenizer has no pad_token; set one in tokenizer_config.json "
                "(e.g. \"pad_token\": the eos token)"
            )
        return pad, trunc, max_length

    def __call__(
        self,
        text,
        text_pair=None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
    ) -> BatchEncoding:
        """Tokenize one text, a pair, or a batch, the way a transformers tokenizer does."""
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors={return_tensors!r}: the runtime only returns numpy ('np') or lists")
        pad, trunc, max_length = self._strategies(padding, truncation, max_length)
        if is_split_into_words:
            batched = isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
        else:
            batched = isinstance(text, (list, tuple))
        if batched:
            if isinstance(text_pair, str):
                raise TypeError("when tokenizing a batch, `text_pair` must be a list as long as `text`")
            if text_pair is not None and len(text) != len(text_pair):
                raise ValueError(f"batch length of `text` ({len(text)}) does not match `text_pair` ({len(text_pair)})")
            inputs = list(zip(text, text_pair)) if text_pair is not None else list(text)
        else:
            inputs = [(text, text_pair)] if text_pair else [text]

        tok = self._tokenizer
        # The backend holds truncation/padding as state (the tokenizers API); this call sets it for itself, so
        # the set-then-encode pair runs under a lock: concurrent calls with other settings cannot interleave.
        with self._call_lock:
            if trunc == "do_not_truncate":
                tok.no_truncation()
            else:
                tok.enable_truncation(max_length, stride=stride, strategy=trunc, direction=self.truncation_side)
            if pad == "do_not_pad":
                tok.no_padding()
            else:
                tok.enable_padding(
                    direction=padding_side or self.padding_side, pad_id=self.pad_token_id,
                    pad_type_id=self.pad_token_type_id, pad_token=self.pad_token,
                    length=max_length if pad == "max_length" else None,
                    pad_to_multiple_of=pad_to_multiple_of,
                )
            encodings = tok.encode_batch(inputs, is_pretokenized=is_split_into_words,
                                         add_special_tokens=add_special_tokens)

        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        data: dict[str, list] = {"input_ids": []}
        if return_token_type_ids:
            data["token_type_ids"] = []
        if return_attention_mask:
            data["attention_mask"] = []
        if return_special_tokens_mask:
            data["special_tokens_mask"] = []
        if return_offsets_mapping:
            data["offset_mapping"] = []
        if return_length:
            data["length"] = []
        flat: list[Encoding] = []
        sample_map: list[int] = []
        for i, enc in enumerate(encodings):
            for e in [enc, *enc.overflowing] if return_overflowing_tokens else [enc]:
                flat.append(e)
                sample_map.append(i)
                data["input_ids"].append(e.ids)
                if return_token_type_ids:
                    data["token_type_ids"].append(e.type_ids)
                if return_attention_mask:
                    data["attention_mask"].append(e.attention_mask)
                if return_special_tokens_mask:
                    data["special_tokens_mask"].append(e.special_tokens_mask)
                if return_offsets_mapping:
                    data["offset_mapping"].append(e.offsets)
                if return_length:
                    data["length"].append(len(e.ids))
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_map
        if return_tensors == "np":
            data = {k: _to_numpy(k, v) for k, v in data.items()}
        elif not batched and not return_overflowing_tokens:
            # transformers unwraps the per-sequence lists only (`length` stays a one-element list).
            data = {k: v[0] if v and isinstance(v[0], list) else v for k, v in data.items()}
        return BatchEncoding(data, flat)

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
               max_length: int | None = None, stride: int = 0, **kwargs) -> list[int]:
        """The input ids of one text (or pair)."""
        out = self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                   max_length=max_length, stride=stride, **kwargs)
        return out["input_ids"]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        return self(text, pair, add_special_tokens=add_special_tokens).encodings[0].tokens

    # ------------------------------------------------------------------ decoding
    def decode(self, token_ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        if _is_scalar_id(token_ids):
            token_ids = [token_ids]
        ids = [int(i) for i in token_ids]
        text = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        cleanup = clean_up_tokenization_spaces
        if cleanup is None:
            cleanup = self.clean_up_tokenization_spaces
        # transformers skips the cleanup for BPE models: it would eat real spaces before punctuation.
        if cleanup and type(self._tokenizer.model).__name__ != "BPE":
            text = clean_up_tokenization(text)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        return [self.decode(s, skip_special_tokens, clean_up_tokenization_spaces) for s in sequences]


def _is_scalar_id(value: Any) -> bool:
    """An int, a numpy integer or a 0-d array (not a list or 1-d array of ids)."""
    return isinstance(value, numbers.Integral) or getattr(value, "ndim", None) == 0


def clean_up_tokenization(text: str) -> str:
    """transformers' cleanup of spaces before punctuation and English contractions: `"a , b"` -> `"a, b"`."""
    for old, new in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                     (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(old, new)
    return text


def _to_numpy(key: str, rows: list):
    import numpy as np

    if rows and not isinstance(rows[0], (list, tuple)):
        return np.asarray(rows, dtype=np.int64)
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise ValueError(
            f"cannot make a numpy array of {key!r}: the sequences have different lengths {sorted(lengths)}; "
            "pass padding=True (or 'max_length') and/or truncation=True"
        )
    return np.asarray(rows, dtype=np.int64)


AutoTokenizer = PreTrainedTokenizer

__all__ = ["AutoTokenizer", "BatchEncoding", "PreTrainedTokenizer", "clean_up_tokenization"]
