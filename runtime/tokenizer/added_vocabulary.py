"""Added tokens (`"added_tokens"` of tokenizer.json): matched in the text before the model ever sees it.

As the library does, tokens with `normalized=False` are found first in the raw text, then tokens with
`normalized=True` are found in the normalized remaining pieces (their own content normalized the same
way); a match wins by leftmost start, then by longest length. `single_word` refuses a match glued to
a word char, `lstrip`/`rstrip` swallow the whitespace on that side into the token:

    >>> vocab = AddedVocabulary()
    >>> vocab.add_tokens([AddedToken("<mask>", lstrip=True, special=True)], _NoModel(), None)
    1
    >>> [(p.normalized.normalized, p.tokens) for p in vocab.extract_and_normalize(None, "Hi  <mask>!").splits]
    [('Hi', None), ('  <mask>', [Token(id=0, value='  <mask>', offsets=(0, 8))]), ('!', None)]

Matching uses one compiled regex per group, shaped like a trie (common prefixes factored out) so a
hundred special tokens cost about as much as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import regex

from modelkiln.runtime.tokenizer.models import Token
from modelkiln.runtime.tokenizer.normalized import WHITESPACE, NormalizedString
from modelkiln.runtime.tokenizer.pre_tokenizers import PreTokenizedString

_WORD_CHAR = regex.compile(r"\w")  # the Rust regex-syntax `is_word_character` (Unicode \w)


@dataclass
class AddedToken:
    """An added token and how it matches (the library's `AddedToken`; `normalized` defaults to `not special`)."""

    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool | None = None
    special: bool = False

    def __post_init__(self):
        if self.normalized is None:
            self.normalized = not self.special

    @classmethod
    def from_config(cls, c: dict, where: str = "added_tokens") -> AddedToken:
        if not isinstance(c, dict) or not isinstance(c.get("content"), str):
            raise ValueError(f"{where}: an added token needs a string 'content', got {c!r}")
        special = bool(c.get("special", False))
        return cls(
            c["content"],
            bool(c.get("single_word", False)),
            bool(c.get("lstrip", False)),
            bool(c.get("rstrip", False)),
            bool(c.get("normalized", not special)),
            special,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "single_word": self.single_word,
            "lstrip": self.lstrip,
            "rstrip": self.rstrip,
            "normalized": self.normalized,
            "special": self.special,
        }


class _NoModel:
    """Stand-in model with an empty vocabulary (for examples and tests)."""

    def token_to_id(self, token: str) -> int | None:
        return None

    def get_vocab_size(self) -> int:
        return 0


def trie_regex(words: list[str]) -> str:
    """A regex matching any of `words`, longest first at a given position, with shared prefixes factored.

    `trie_regex(["<s>", "</s>", "<sep>"])` -> `<(?:/s>|s(?:>|ep>))`.
    """
    trie: dict = {}
    for w in words:
        node = trie
        for c in w:
            node = node.setdefault(c, {})
        node[""] = True

    def build(node: dict) -> str:
        terminal = "" in node
        branches = [regex.escape(c) + build(child) for c, child in sorted(node.items()) if c != ""]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if terminal:
            # Greedy optional: the longer token wins, the shorter one is the fallback.
            return "(?:" + body + ")?"
        return body

    return build(trie)


class _MatchingSet:
    """The compiled matcher for one group of added tokens: pattern text -> token id."""

    __slots__ = ("pattern", "ids")

    def __init__(self, contents: list[str], ids: list[int]):
        self.ids: dict[str, int] = {}
        for c, i in zip(contents, ids):
            if c:
                # Two tokens with the same pattern (e.g. "ab" and "AB" once lowercased): the library
                # ends up matching the one added last.
                self.ids[c] = i
        self.pattern = regex.compile(trie_regex(list(self.ids))) if self.ids else None


class AddedVocabulary:
    """The added tokens of a tokenizer: ids, special flags, and splitting text on them."""

    def __init__(self):
        self.added_tokens_map: dict[str, int] = {}
        self.added_tokens_map_r: dict[int, AddedToken] = {}
        self.added_tokens: list[AddedToken] = []  # non-special, in insertion order
        self.special_tokens: list[AddedToken] = []
        self.special_tokens_set: set[str] = set()
        self.encode_special_tokens = False
        # id -> content as the normalizer turns it, for tokens ever added with normalized=True: the library
        # reports that string from `id_to_token` (so `decode` shows it, and does not recognize it as special).
        self._normalized_ids: dict[int, AddedToken] = {}
        self._normalized_content: dict[int, str] = {}
        self._split = _MatchingSet([], [])
        self._split_normalized = _MatchingSet([], [])

    def __len__(self) -> int:
        return len(self.added_tokens_map)

    # ------------------------------------------------------------------ vocabulary
    def token_to_id(self, token: str, model) -> int | None:
        tid = self.added_tokens_map.get(token)
        return tid if tid is not None else model.token_to_id(token)

    def id_to_token(self, id: int, model) -> str | None:
        content = self._normalized_content.get(id)
        if content is not None:
            return content
        tok = self.added_tokens_map_r.get(id)
        return tok.content if tok is not None else model.id_to_token(id)

    def is_special_token(self, token: str) -> bool:
        return token in self.special_tokens_set

    def get_added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(sorted(self.added_tokens_map_r.items()))

    def add_tokens(self, tokens: list[AddedToken], model, normalizer) -> int:
        """Add tokens (ignoring empty ones and exact duplicates); returns how many were added.

        An id comes from the vocabulary when the content is already there, else it is the next free one
        after the model's vocabulary -- the ids written in tokenizer.json are not consulted, as in the library.
        """
        for t in tokens:
            if t.special and t.content and t.content not in self.special_tokens_set:
                self.special_tokens.append(t)
                self.special_tokens_set.add(t.content)
        ignored = 0
        for t in tokens:
            if not t.content or any(v == t for v in self.added_tokens_map_r.values()):
                ignored += 1
                continue
            new_id = self.token_to_id(t.content, model)
            if new_id is None:
                vocab_size = model.get_vocab_size()
                if self.added_tokens_map:
                    top = max(self.added_tokens_map.values())
                    new_id = top + 1 if top >= vocab_size or vocab_size == 0 else vocab_size
                else:
                    new_id = vocab_size
            self.added_tokens_map[t.content] = new_id
            self.added_tokens_map_r[new_id] = t
            if t.normalized:
                self._normalized_ids[new_id] = t
            if t.content not in self.special_tokens_set:
                self.added_tokens.append(t)
        self.refresh(model, normalizer)
        return len(tokens) - ignored

    def refresh(self, model, normalizer) -> None:
        """Rebuild the matchers (after adding tokens, or when the normalizer changes).

        Each id matches as its latest `AddedToken` says (a re-added token replaces the earlier flags).
        """

        def normalize(content: str) -> str:
            if normalizer is None:
                return content
            n = NormalizedString(content)
            normalizer.normalize(n)
            return n.normalized

        raw, raw_ids, norm, norm_ids = [], [], [], []
        for tid, t in self.added_tokens_map_r.items():
            if t.normalized:
                norm.append(normalize(t.content))
                norm_ids.append(tid)
            else:
                raw.append(t.content)
                raw_ids.append(tid)
        self._normalized_content = {tid: normalize(t.content) for tid, t in self._normalized_ids.items()}
        self._split = _MatchingSet(raw, raw_ids)
        self._split_normalized = _MatchingSet(norm, norm_ids)

    # ------------------------------------------------------------------ matching
    def find_matches(self, sentence: str, matching: _MatchingSet) -> list[tuple[int | None, int, int]]:
        """Cover `sentence` with `(token id or None, start, end)` pieces (library `find_matches`)."""
        if not sentence:
            return [(None, 0, 0)]
        if matching.pattern is None:
            return [(None, 0, len(sentence))]
        out: list[tuple[int | None, int, int]] = []
        start_offset = 0
        n = len(sentence)
        for m in matching.pattern.finditer(sentence):
            start, stop = m.span()
            if start == stop:
                continue
            tid = matching.ids[m.group()]
            token = self.added_tokens_map_r[tid]
            if self.encode_special_tokens and token.content in self.special_tokens_set:
                continue
            if token.single_word:
                start_space = start == 0 or not _WORD_CHAR.match(sentence[start - 1])
                stop_space = stop == n or not _WORD_CHAR.match(sentence[stop])
                if not (start_space and stop_space):
                    continue
            if token.lstrip:
                # Back over the whitespace before the token, but never into the previous match.
                start = max(len(sentence[:start].rstrip(WHITESPACE)), start_offset)
            if token.rstrip:
                rest = sentence[stop:]
                stop += len(rest) - len(rest.lstrip(WHITESPACE))
            if start_offset < start:
                out.append((None, start_offset, start))
            out.append((tid, start, stop))
            start_offset = stop
        if start_offset != n:
            out.append((None, start_offset, n))
        return out

    def _split_with_indices(self, ns: NormalizedString, matching: _MatchingSet):
        pieces = []
        for tid, start, stop in self.find_matches(ns.normalized, matching):
            piece = ns.slice(start, stop)
            if piece is None:
                raise ValueError("added vocabulary: bad split (overlapping added-token matches)")
            if tid is None:
                pieces.append((piece, None))
            else:
                pieces.append((piece, [Token(tid, piece.normalized, (0, len(piece.normalized)))]))
        return pieces

    def occurs_in(self, sequence: str, normalized: str) -> bool:
        """Whether an added token would be split out: one with `normalized=False` in the raw `sequence`, or one
        with `normalized=True` in its `normalized` form (the searches `extract_and_normalize` starts with)."""
        raw, after = self._split.pattern, self._split_normalized.pattern
        return bool((raw is not None and raw.search(sequence)) or (after is not None and after.search(normalized)))

    def extract_and_normalize(self, normalizer, sequence: str) -> PreTokenizedString:
        """Split `sequence` on added tokens and normalize the rest, the library's way.

        1. tokens with `normalized=False` are found in the raw text;
        2. every other piece is normalized, then searched for tokens with `normalized=True`.
        """
        pts = PreTokenizedString(sequence)
        raw = self._split.pattern
        if raw is not None and raw.search(sequence):
            pts.split(lambda i, ns: self._split_with_indices(ns, self._split))
        normalized = self._split_normalized.pattern

        def normalize_then_split(i, ns):
            if normalizer is not None:
                normalizer.normalize(ns)
            if normalized is not None and normalized.search(ns.normalized):
                return self._split_with_indices(ns, self._split_normalized)
            if ns._align is None:
                return (ns,)  # re-slicing the whole of an identity-aligned string changes nothing
            # subtle: the library still re-slices the whole piece, which drops the original chars the
            # normalizer removed at the edges from its `original` (Metaspace's "first" looks at that).
            piece = ns.slice(0, len(ns.normalized))
            return (piece,) if piece is not None else ()

        pts.split(normalize_then_split)
        return pts


__all__ = ["AddedToken", "AddedVocabulary", "trie_regex"]
