"""Post-processors against the `tokenizers` library, through a full encode.

Library side: `tokenizers.Tokenizer` with the post-processor (and truncation/padding) from JSON.
Our side: our model + the same pre-tokenization + our post-processor, glued like
`TokenizerImpl::post_process`. Compared: ids, tokens, type ids, offsets, masks, word and sequence
ids, and every overflowing encoding (which the processors must handle too).
"""

from __future__ import annotations

import itertools
import json

import _helpers_b as H
import pytest
from modelkiln.runtime.tokenizer.encoding import Encoding, PaddingParams, TruncationParams
from modelkiln.runtime.tokenizer.models import build_model
from modelkiln.runtime.tokenizer.post_processors import (
    BertProcessing,
    TemplateProcessing,
    build_post_processor,
    default_process,
)

MODEL = build_model(H.WORDLEVEL)


@pytest.mark.parametrize("name", sorted(H.POST_PROCESSORS))
def test_post_processor_matches_library(name):
    pp = H.POST_PROCESSORS[name]
    truncations = H.TRUNCATIONS
    if name == "template_repeat":  # sequences used twice multiply overflowing ones: ~13k nested at max_length 5
        truncations = [t for t in truncations if t is None or t["max_length"] in (0, 8)]
    for (a, b), trunc, pad, add in itertools.product(H.PAIRS, truncations, H.PADDINGS[:2], (True, False)):
        expected, got = H.run_both(MODEL, pp, a, b, add, trunc, pad)
        assert got == expected, (a, b, trunc, pad, add)


@pytest.mark.parametrize("name", sorted(H.POST_PROCESSORS))
def test_process_and_added_tokens_match_library_processor(name):
    """`PostProcessor.process` called directly, as `tokenizers.processors.X.process` is."""
    pp = H.POST_PROCESSORS[name] or {  # no special tokens at all
        "type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {}}
    lib_proc = H.lib_tokenizer(H.WORDLEVEL, post_processor=pp).post_processor
    mine = build_post_processor(pp)
    plain = H.lib_tokenizer(H.WORDLEVEL, pre_tokenizer=H.WHITESPACE_SPLIT)
    for is_pair in (False, True):
        assert mine.added_tokens(is_pair) == lib_proc.num_special_tokens_to_add(is_pair)
    for (a, b), add in itertools.product(H.PAIRS, (True, False)):
        expected = lib_proc.process(plain.encode(a), plain.encode(b) if b is not None else None, add)
        got = mine.process(H.glue_encode(MODEL, a, 0), H.glue_encode(MODEL, b, 0) if b is not None else None, add)
        assert H.encoding_fields(got) == H.encoding_fields(expected), (a, b, add)


# --- real checkpoints ---------------------------------------------------------------------------


def test_minilm_template_with_its_truncation_and_padding():
    tok = json.loads(H.minilm_json())
    model_cfg, pp = tok["model"], tok["post_processor"]
    trunc, pad = dict(tok["truncation"], max_length=12, stride=2), tok["padding"]
    lib = H.lib_tokenizer(model_cfg, pre_tokenizer=H.WHITESPACE_SPLIT, post_processor=pp, truncation=trunc,
                          padding=pad)
    model, proc = build_model(model_cfg), build_post_processor(pp)
    texts = [t.lower() for t in H.CORPUS[:4]] + ["unaffable tokenization", "hello world"]
    for a, b in itertools.product(texts, [None] + texts[-2:]):
        expected = H.encoding_fields(lib.encode(a, b))
        got = H.encoding_fields(H.glue_post_process(
            proc, H.glue_encode(model, a, 0), H.glue_encode(model, b, 1) if b is not None else None, True,
            TruncationParams.from_config(trunc), PaddingParams.from_config(pad)))
        assert got == expected, (a, b)


@pytest.fixture(scope="module")
def smollm2(request, tmp_path_factory) -> str:
    return H.smollm2_for(request, tmp_path_factory)


def _byte_level_cases(tok_json: str, processors: dict) -> None:
    base = json.loads(tok_json)
    model = build_model(base["model"])
    pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    texts = H.CORPUS + ["  two  spaces ", "\ttab\tand\nnewline ", " é 👋🏽 "]
    for name, pp in processors.items():
        lib = H.lib_tokenizer(base["model"], pre_tokenizer=pre, post_processor=pp,
                              truncation={"direction": "Right", "max_length": 24, "strategy": "LongestFirst",
                                          "stride": 3})
        proc = build_post_processor(pp) if pp else None
        for a, b in zip(texts, [None, texts[-1]] * len(texts)):
            expected = H.encoding_fields(lib.encode(a, b))
            got = H.encoding_fields(H.glue_post_process(
                proc, H.bytelevel_glue_encode(lib, model, a, 0),
                H.bytelevel_glue_encode(lib, model, b, 1) if b is not None else None, True,
                TruncationParams(24, 3)))
            assert got == expected, (name, a, b)


def test_smollm2_end_to_end_offsets(smollm2):
    """SmolLM2's own template, then byte-level offset trimming: byte-level BPE offsets back to text."""
    pp = json.loads(smollm2)["post_processor"]
    assert pp["type"] == "TemplateProcessing"
    _byte_level_cases(smollm2, {
        "smollm2": pp,
        "byte_level": H.BYTE_LEVEL,
        "byte_level_no_prefix_space": dict(H.BYTE_LEVEL, add_prefix_space=False),
        "roberta": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", 0], "cls": ["<|im_start|>", 1],
                    "trim_offsets": True, "add_prefix_space": False},
    })


def test_trained_byte_level_bpe_with_roberta():
    _byte_level_cases(H.trained_byte_level_bpe(), {
        "roberta": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1], "trim_offsets": True,
                    "add_prefix_space": True},
        "sequence": {"type": "Sequence", "processors": [H.BYTE_LEVEL, {"type": "BertProcessing",
                                                                        "sep": ["</s>", 2], "cls": ["<s>", 1]}]},
    })


# --- construction -------------------------------------------------------------------------------


def test_template_string_forms_match_json_form():
    """The Python constructor's strings (`"$A"`, `"[SEP]:1"`, `"$1"`) read like tokenizer.json's pieces."""
    from_strings = build_post_processor({
        "type": "TemplateProcessing", "single": "[CLS] $0 [SEP]", "pair": "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        "special_tokens": [("[CLS]", 1), ("[SEP]", 2)]})
    from_json = build_post_processor(json.loads(H.minilm_json())["post_processor"])
    assert from_strings.single == from_json.single and from_strings.pair == from_json.pair
    assert isinstance(from_strings, TemplateProcessing)


def test_bad_configs_name_the_problem():
    with pytest.raises(ValueError, match=r"post_processor.processors\[1\].type 'Nope'"):
        build_post_processor({"type": "Sequence", "processors": [H.BERT, {"type": "Nope"}]})
    with pytest.raises(ValueError, match=r"\['\[MASK\]'\]"):
        build_post_processor(dict(H.TEMPLATE_ODD, single=[{"SpecialToken": {"id": "[MASK]", "type_id": 0}}]))
    with pytest.raises(ValueError, match="sep"):
        build_post_processor({"type": "BertProcessing", "sep": "[SEP]", "cls": ["[CLS]", 1]})
    with pytest.raises(ValueError, match="template piece"):
        build_post_processor({"type": "TemplateProcessing", "single": "$C", "pair": "$A $B", "special_tokens": []})


def test_default_process_and_bert_doc_example():
    e = default_process(Encoding.from_tokens([(1, "a", (0, 1))]), None)
    assert e.ids == [1] and e.sequence_ranges == {}
    out = BertProcessing().process(Encoding.from_tokens([(7, "hi", (0, 2))]), Encoding.from_tokens([(8, "yo", (0, 2))], 1))
    assert out.ids == [101, 7, 102, 8, 102] and out.type_ids == [0, 0, 0, 1, 1]
    assert out.sequence_ids == [None, 0, None, 1, None]


def _pretokenized(words: list[str], type_id: int) -> Encoding:
    """`encode(words, is_pretokenized=True)`: every word's offsets start at 0 again."""
    toks, word_ids = [], []
    for w, word in enumerate(words):
        for t in MODEL.tokenize(word):
            toks.append(t)
            word_ids.append(w)
    e = Encoding.from_tokens(toks, type_id)
    e.word_ids = word_ids
    return e


@pytest.mark.parametrize("name", ["roberta", "roberta_no_prefix_space", "byte_level", "sequence_bytelevel_bert"])
def test_pretokenized_offsets_trimmed_like_library(name):
    """Each pre-tokenized word starts at offset 0, and counts as "first" for add_prefix_space."""
    pp = H.POST_PROCESSORS[name]
    lib = H.lib_tokenizer(H.WORDLEVEL, post_processor=pp)
    for words, pair in [(["Ġa", "Ġb", "ĠĠc", "dĠ"], None), (["ĠeĠ", "Ġ", "a"], ["Ġb", "ĠĠc"])]:
        expected = lib.encode(words, pair, is_pretokenized=True)
        got = build_post_processor(pp).process(_pretokenized(words, 0), _pretokenized(pair, 1) if pair else None)
        assert H.encoding_fields(got) == H.encoding_fields(expected), (words, pair)


@pytest.mark.parametrize("name", ["template", "template_repeat", "none"])
def test_template_single_sequence_fast_path_equals_the_generic_path(name):
    """One sequence without overflowing windows is built in one pass; every field (sequence ranges included) is
    what the generic per-piece merge gives."""
    from modelkiln.runtime.tokenizer.post_processors import PostProcessor

    pp = build_post_processor(H.POST_PROCESSORS[name] or {
        "type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {}})
    for (a, _), add in itertools.product(H.PAIRS, (True, False)):
        fast = pp.process(H.glue_encode(MODEL, a, 0), None, add)
        generic = PostProcessor.process(pp, H.glue_encode(MODEL, a, 0), None, add)
        assert fast == generic and fast.sequence_ranges == generic.sequence_ranges, (a, add)
