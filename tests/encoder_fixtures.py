"""Tiny random encoder checkpoints (one per family and head) with trained tokenizers, and their artifacts.

    encoder_checkpoint("bert", "token-classification") -> Path   (BertForTokenClassification, WordPiece)
    encoder_artifact("roberta", "question-answering")   -> Path   (exported once per session, validated)
    minilm_artifact("sentence-similarity")              -> Path   (the real all-MiniLM-L6-v2)

Each family gets the tokenizer it has in the wild, trained here with the `tokenizers` library: WordPiece
(BERT, DistilBERT, ELECTRA, MPNet), byte-level BPE (RoBERTa), Unigram with Metaspace (XLM-RoBERTa, ALBERT,
DeBERTa-v2). The caches are module-level, so the conftests that import these fixtures share one build per session.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "deberta-v2", "mpnet", "albert")
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
# Which family each task is tested on: every family at least once, each task on several tokenizer kinds
# (WordPiece, byte-level BPE, Unigram). MODELKILN_FULL_MATRIX=1 runs every family for every task.
MATRIX = {
    "text-classification": ["bert", "distilbert", "deberta-v2"],
    "token-classification": ["bert", "roberta", "albert", "electra"],
    "question-answering": ["bert", "distilbert", "xlm-roberta"],
    "fill-mask": ["roberta", "mpnet", "electra"],
    "feature-extraction": ["distilbert", "mpnet"],
}
if os.environ.get("MODELKILN_FULL_MATRIX") == "1":
    MATRIX = {task: list(FAMILIES) for task in MATRIX}
MAX_LENGTH = 64  # model_max_length of the tiny tokenizers: small, so the long-input cases truncate/stride

CORPUS = [
    "My name is Wolfgang and I live in Berlin. Sarah works for Microsoft in New York.",
    "The capital of France is Paris; it has a population of about two million people.",
    "Café crème, naïve résumé, Zürich, São Paulo and Kraków are full of accents.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Where do I live? What is the boiling point of water at sea level? Who founded the company?",
    "Once upon a time, in a small village by the sea, there lived a fisherman named Hans.",
    "The quick brown fox jumps over the lazy dog, 1234567890 times!",
] * 30


def _cls_sep_template(tok, cls: str, sep: str, pair_sep: int):
    """BERT-style `[CLS] A [SEP] (B [SEP])`, with a doubled separator between pairs when pair_sep == 2."""
    from tokenizers import processors

    pair = f"{cls} $A:0 {sep}:0 " + (f"{sep}:1 " if pair_sep == 2 else "") + f"$B:1 {sep}:1"
    return processors.TemplateProcessing(single=f"{cls} $A:0 {sep}:0", pair=pair,
                                         special_tokens=[(t, tok.token_to_id(t)) for t in (cls, sep)])


def _wordpiece(lowercase: bool, cls: str, sep: str, mask: str, pad: str, unk: str, pair_sep: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token=unk))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None, clean_text=True,
                                                handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    specials = [pad, unk, cls, sep, mask]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials,
                                                              show_progress=False))
    tok.post_processor = _cls_sep_template(tok, cls, sep, pair_sep)
    return tok, specials


def _bytelevel_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=500, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")), trim_offsets=True,
                                                      add_prefix_space=False)
    return tok, specials


def _unigram(lowercase: bool, cls: str, sep: str, mask: str, pad: str, unk: str, pair_sep: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    specials = [pad, unk, cls, sep, mask]
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token=unk,
                                                            show_progress=False))
    tok.post_processor = _cls_sep_template(tok, cls, sep, pair_sep)
    return tok, specials


# family -> (tokenizer builder, model_input_names, config class name, extra config)
_TYPED = ["input_ids", "token_type_ids", "attention_mask"]
_UNTYPED = ["input_ids", "attention_mask"]


def _family_tokenizer(family: str):
    bert_specials = dict(cls="[CLS]", sep="[SEP]", mask="[MASK]", pad="[PAD]", unk="[UNK]")
    roberta_specials = dict(cls="<s>", sep="</s>", mask="<mask>", pad="<pad>", unk="<unk>")
    if family in ("bert", "distilbert"):
        return _wordpiece(lowercase=True, pair_sep=1, **bert_specials), _TYPED if family == "bert" else _UNTYPED
    if family == "electra":
        return _wordpiece(lowercase=False, pair_sep=1, **bert_specials), _TYPED
    if family == "mpnet":
        return _wordpiece(lowercase=True, pair_sep=2, **roberta_specials), _UNTYPED
    if family == "roberta":
        return _bytelevel_bpe(), _UNTYPED
    if family == "xlm-roberta":
        return _unigram(lowercase=False, pair_sep=2, **roberta_specials), _UNTYPED
    if family in ("albert", "deberta-v2"):
        return _unigram(lowercase=family == "albert", pair_sep=1, **bert_specials), _TYPED
    raise KeyError(family)


def save_tokenizer(family: str, folder: Path):
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    (tok, specials), input_names = _family_tokenizer(family)
    pad, unk, cls, sep, mask = specials
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, cls_token=cls, sep_token=sep, pad_token=pad, unk_token=unk,
        # RoBERTa-style masks swallow the space before them, so "a <mask>." predicts " word"
        mask_token=AddedToken(mask, lstrip=mask == "<mask>", normalized=False, special=True),
        bos_token=cls if cls == "<s>" else None, eos_token=sep if sep == "</s>" else None,
        model_max_length=MAX_LENGTH, model_input_names=input_names)
    fast.save_pretrained(folder)
    return fast


def _config(family: str, vocab: int, pad_id: int, **head):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=MAX_LENGTH + 2, pad_token_id=pad_id, **head)
    if family == "bert":
        return tf.BertConfig(**common)
    if family == "distilbert":
        return tf.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                   max_position_embeddings=MAX_LENGTH, pad_token_id=pad_id, **head)
    if family == "roberta":
        return tf.RobertaConfig(**common, type_vocab_size=1)
    if family == "xlm-roberta":
        return tf.XLMRobertaConfig(**common, type_vocab_size=1)
    if family == "electra":
        return tf.ElectraConfig(**common, embedding_size=16)
    if family == "deberta-v2":  # relative attention with position buckets, like deberta-v3
        return tf.DebertaV2Config(**common, relative_attention=True, position_buckets=16, max_relative_positions=-1,
                                  pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0)
    if family == "mpnet":
        return tf.MPNetConfig(**common)
    if family == "albert":
        return tf.AlbertConfig(**common, embedding_size=16)
    raise KeyError(family)


_HEADS = {
    "feature-extraction": "AutoModel",
    "fill-mask": "AutoModelForMaskedLM",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
}


def build_checkpoint(family: str, task: str, folder: Path, seed: int = 0) -> Path:
    import torch
    import transformers

    tok = save_tokenizer(family, folder)
    head: dict = {}
    if task == "text-classification":
        head = dict(id2label={0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"},
                    label2id={"NEGATIVE": 0, "NEUTRAL": 1, "POSITIVE": 2})
    elif task == "token-classification":
        head = dict(id2label=dict(enumerate(NER_LABELS)), label2id={label: i for i, label in enumerate(NER_LABELS)})
    config = _config(family, len(tok), tok.pad_token_id, **head)
    torch.manual_seed(seed)
    model = getattr(transformers, _HEADS[task]).from_config(config)
    if task in ("token-classification", "question-answering", "text-classification"):
        # Random heads give near-uniform scores; sharper ones make entity groups and answer spans non-trivial.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith(("classifier", "qa_outputs", "pre_classifier")):
                    p.mul_(40.0 if "weight" in name else 1.0)
    model.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------- fixtures

_ROOT: Path | None = None
_CHECKPOINTS: dict[tuple[str, str], Path] = {}
_ARTIFACTS: dict[tuple[str, str], Path] = {}


def _root() -> Path:
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="modelkiln-encoders-"))
        atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
    return _ROOT


def get_checkpoint(family: str, task: str) -> Path:
    key = (family, task)
    if key not in _CHECKPOINTS:
        folder = _root() / f"ckpt-{family}-{task}"
        folder.mkdir()
        _CHECKPOINTS[key] = build_checkpoint(family, task, folder)
    return _CHECKPOINTS[key]


def get_artifact(family: str, task: str, validate: bool = True) -> Path:
    """family "minilm" is the real all-MiniLM-L6-v2; the others are tiny random checkpoints."""
    key = (family, task)
    if key not in _ARTIFACTS:
        from modelkiln.exporter import ExportOptions, export

        source = "embedded:all-minilm-l6-v2" if family == "minilm" else str(get_checkpoint(family, task))
        out = _root() / f"art-{family}-{task}"
        export(source, out, ExportOptions(task=task, quiet=True, validate=validate))
        _ARTIFACTS[key] = out
    return _ARTIFACTS[key]


@pytest.fixture(scope="session")
def encoder_checkpoint():
    return get_checkpoint


@pytest.fixture(scope="session")
def encoder_artifact():
    return get_artifact


@pytest.fixture(scope="session")
def minilm_artifact():
    return lambda task="sentence-similarity": get_artifact("minilm", task)
