"""`Tokenizer._encode_plain`, the fast path for text the normalizer leaves in place (BERT-style tokenizers on ASCII
text): taken where it applies, refused where it does not, and the same encodings as the `tokenizers` library."""

from __future__ import annotations

import pytest
from tokenizer_support import TEXTS, encoding_fields, tokenizer_json
from tokenizers import Tokenizer as LibTokenizer

from modelkiln.runtime.tokenizer import Tokenizer
from modelkiln.runtime.tokenizer.tokenizer import _into_encoding

TAKEN = ["", " ", "a", "Hello,world!!", "tabs\tand\nnew\r\nlines", "  leading and trailing  ",
         "UPPER lower MiXeD 123abc 4.5e-3 $100 #tag @user", "unknownwordzzzqqqxxx antidisestablishmentarianism",
         "x" * 120, "[mask] lower-case special", "semi;colon:quote'\"back`slash\\"]
# chars the normalizer removes (controls, \x0b and \x0c included), non-ASCII text, added tokens in the text
REFUSED = ["control\x01char", "del\x7fchar", "vt\x0bff\x0c", "café", "日本", "a [SEP] b [CLS]", "[MASK] is here",
           "ends with [UNK]"]
ASCII = TAKEN + REFUSED[:3] + REFUSED[5:] + [t for t in TEXTS.values() if t.isascii()]


@pytest.fixture(scope="module", params=["minilm", "bert_wordpiece"])
def pair(request, tokenizer_dirs, trained_pipelines):
    path = tokenizer_json(request.param, tokenizer_dirs, trained_pipelines)
    return LibTokenizer.from_file(str(path)), Tokenizer.from_file(path)


def test_plain_path_encodes_as_the_library(pair):
    lib, mine = pair
    for text in ASCII:
        assert encoding_fields(mine.encode(text)) == encoding_fields(lib.encode(text)), repr(text)
    batch = ASCII[:6]
    assert [encoding_fields(e) for e in mine.encode_batch(batch)] == [encoding_fields(e) for e in
                                                                      lib.encode_batch(batch)]
    words = ["Hello", "WORLD!", "it's", "x\ty"]
    assert encoding_fields(mine.encode(words, is_pretokenized=True)) == encoding_fields(
        lib.encode(words, is_pretokenized=True))


def test_plain_path_is_taken_only_where_it_holds(pair):
    _, mine = pair
    assert all(mine._encode_plain(t, 0, None) is not None for t in TAKEN)
    # control chars the normalizer removes, non-ASCII text, added tokens in the text: the full pipeline
    assert all(mine._encode_plain(t, 0, None) is None for t in REFUSED)
    for text in TAKEN:  # the plain path and the full pipeline agree field by field
        plain = mine._encode_plain(text, 1, None)
        pts = mine.added_vocabulary.extract_and_normalize(mine.normalizer, text)
        mine.pre_tokenizer.pre_tokenize(pts)
        pts.tokenize(mine.model.tokenize)
        assert encoding_fields(plain) == encoding_fields(_into_encoding(pts, text, 1, None)), repr(text)
