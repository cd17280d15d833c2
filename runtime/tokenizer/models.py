"""Tokenization models of tokenizer.json (`"model"`): BPE, WordPiece, Unigram, WordLevel.

Each model turns one pre-tokenized word into `Token`s exactly like the Rust `tokenizers` crate
(`tokenizers/src/models/*`), with offsets in *characters* of the word:

    >>> bpe = build_model({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})
    >>> bpe.tokenize("aba")
    [Token(id=2, value='ab', offsets=(0, 2)), Token(id=0, value='a', offsets=(2, 3))]

The library computes byte offsets and converts them to characters at the end of the pipeline; a
token that covers only part of a character (byte fallback) then spans that whole character. The
offsets here are already in that final form, so the pipeline maps them through its character
alignments unchanged.
"""

from __future__ import annotations

import heapq
import random
import re
from collections.abc import Iterable
from typing import Any, NamedTuple


class Token(NamedTuple):
    """One model token: vocabulary id, its string, and `(start, end)` character offsets in the word."""

    id: int
    value: str
    offsets: tuple[int, int]


# `Token(...)` goes through a Python-level __new__; hot loops build the tuple directly.
_new_token = tuple.__new__


class Model:
    """Interface shared by the models: `tokenize` a word, and look tokens/ids up in the vocabulary."""

    vocab: dict[str, int]  # token -> id
    vocab_r: dict[int, str]  # id -> token

    def tokenize(self, sequence: str) -> list[Token]:
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, id: int) -> str | None:
        return self.vocab_r.get(id)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def get_vocab_size(self) -> int:
        return len(self.vocab)


# Words longer than this are tokenized without being cached (the library's cache stops at 256 bytes).
_CACHE_MAX_WORD = 256
_CACHE_CAPACITY = 100_000
# BPE: up to this many initial symbols, an O(n^2) scan in C beats a heap in Python.
_LIST_MERGE_MAX = 48
# BPE: words longer than this are merged piece by piece when the vocabulary allows it (`_segmenter`).
_SEGMENT_MIN_WORD = 24
_NO_MERGE = 1 << 62


def _utf8_len(ch: str) -> int:
    """Bytes of `ch` in UTF-8 (the library counts symbol lengths in bytes)."""
    o = ord(ch)
    return 1 if o < 0x80 else 2 if o < 0x800 else 3 if o < 0x10000 else 4


def _byte_to_char_offsets(word: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte spans in `word` → character spans, a partial character counting as the whole character.

    >>> _byte_to_char_offsets("é!", [(0, 1), (1, 2), (2, 3)])
    [(0, 1), (0, 1), (1, 2)]

    A span past the end of the word (byte fallback of a prefixed/suffixed piece) stays as it is, as
    the library leaves offsets it cannot convert.
    """
    b2c: list[int] = []
    for ci, ch in enumerate(word):
        b2c.extend([ci] * _utf8_len(ch))
    n_bytes = len(b2c)
    out = []
    for bs, be in spans:
        if be > n_bytes:
            out.append((bs, be))
        else:
            out.append((b2c[bs], b2c[be - 1] + 1) if be > bs else (b2c[bs], b2c[bs]))
    return out


def _vocab_dict(config: dict, where: str) -> dict[str, int]:
    vocab = config.get("vocab")
    if not isinstance(vocab, dict):
        raise ValueError(f"{where}.vocab must be an object mapping tokens to ids, got {type(vocab).__name__}")
    out = {str(k): int(v) for k, v in vocab.items()}
    negative = [k for k, v in out.items() if v < 0]
    if negative:
        raise ValueError(f"{where}.vocab: ids must be >= 0, got {negative[0]!r}: {out[negative[0]]}")
    return out


class BPE(Model):
    """Byte-Pair Encoding: split a word into characters, then apply merges lowest rank first.

    Mirrors `models/bpe/model.rs` + `word.rs`: unknown characters become `unk_token` (fused when
    `fuse_unk`), or `<0xXX>` byte tokens with `byte_fallback`, or are dropped when there is no unk
    token. `ignore_merges` returns a word that is itself in the vocabulary as one token.

    >>> m = BPE({"u": 0, "n": 1, "un": 2}, [("u", "n")])
    >>> [t.value for t in m.tokenize("unu")]
    ['un', 'u']
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        *,
        unk_token: str | None = None,
        continuing_subword_prefix: str | None = None,
        end_of_word_suffix: str | None = None,
        fuse_unk: bool = False,
        byte_fallback: bool = False,
        ignore_merges: bool = False,
        dropout: float | None = None,
        where: str = "model",
    ):
        if dropout is not None and not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{where}.dropout must be between 0 and 1, got {dropout}")
        self.vocab = vocab
        self.vocab_r = {v: k for k, v in vocab.items()}
        self.unk_token = unk_token
        self.continuing_subword_prefix = continuing_subword_prefix
        self.end_of_word_suffix = end_of_word_suffix
        self.fuse_unk = fuse_unk
        self.byte_fallback = byte_fallback
        self.ignore_merges = ignore_merges
        self.dropout = None if dropout in (None, 0.0) else dropout
        # Pair keys are packed into one int (a * stride + b): much cheaper to hash than tuples.
        self._stride = max(vocab.values(), default=0) + 1
        self._merge_rank: dict[int, int] = {}  # packed pair -> rank
        self._rank_new_id: list[int] = []  # rank -> id of the merged token
        prefix_bytes = len((continuing_subword_prefix or "").encode("utf-8"))
        for rank, (a, b) in enumerate(merges):
            a_id, b_id = vocab.get(a), vocab.get(b)
            if a_id is None or b_id is None:
                missing = a if a_id is None else b
                raise ValueError(f"{where}.merges[{rank}] uses {missing!r}, which is not in {where}.vocab")
            # subtle: the library strips the prefix *bytes* from `b` whether or not `b` starts with it.
            try:
                new_token = a + b.encode("utf-8")[prefix_bytes:].decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{where}.merges[{rank}] {b!r} cannot drop the continuing_subword_prefix") from None
            new_id = vocab.get(new_token)
            if new_id is None:
                raise ValueError(f"{where}.merges[{rank}] makes {new_token!r}, which is not in {where}.vocab")
            # A later duplicate of the same pair overwrites the earlier one, as in the library's HashMap.
            self._merge_rank[a_id * self._stride + b_id] = rank
            self._rank_new_id.append(new_id)
        self._byte_ids = [vocab.get(f"<0x{b:02X}>") for b in range(256)] if byte_fallback else []
        self._cache: dict[str, tuple[Token, ...]] = {}
        # The list-based merge below equals the library's heap unless two different pairs can yield
        # the same new id (only with a continuing_subword_prefix, or ids shared by several tokens):
        # then the heap may apply a stale entry, and only the heap reproduces that.
        self._list_merge_ok = not continuing_subword_prefix and len(set(vocab.values())) == len(vocab)
        self._segment_re = self._segmenter(merges)
        self._segment_cache: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...] | None]] = {}

    def _segmenter(self, merges: list[tuple[str, str]]) -> re.Pattern | None:
        """A splitter for long words (SentencePiece-style BPE sees a whole text as one word).

        If no merge joins a piece *not* ending with a word-start marker (`▁` or `Ġ`) to one starting
        with it, no token ever spans "x▁" with x != ▁: the word can be cut before such a `▁` and the
        pieces merged independently (and cached), with the same result as the whole word.
        """
        if self.continuing_subword_prefix is not None or self.end_of_word_suffix is not None:
            return None
        for mark in ("▁", "Ġ"):
            if mark not in self.vocab or (self.unk_token or "").endswith(mark):
                continue
            if not any(b.startswith(mark) and not a.endswith(mark) for a, b in merges):
                return re.compile(f"(?<=[^{mark}])(?={mark})")
        return None

    @classmethod
    def from_config(cls, config: dict, *, where: str = "model", allow_dropout: bool = False) -> BPE:
        vocab = _vocab_dict(config, where)
        merges = _parse_merges(config.get("merges"), where)
        dropout = config.get("dropout")
        if dropout not in (None, 0, 0.0) and not allow_dropout:
            raise ValueError(
                f"{where}.dropout is {dropout}: BPE dropout makes tokenization random; set it to null for "
                "inference, or pass allow_dropout=True to apply it"
            )
        return cls(
            vocab,
            merges,
            unk_token=config.get("unk_token"),
            continuing_subword_prefix=config.get("continuing_subword_prefix"),
            end_of_word_suffix=config.get("end_of_word_suffix"),
            fuse_unk=bool(config.get("fuse_unk", False)),
            byte_fallback=bool(config.get("byte_fallback", False)),
            ignore_merges=bool(config.get("ignore_merges", False)),
            dropout=None if dropout is None else float(dropout),
            where=where,
        )

    def tokenize(self, sequence: str) -> list[Token]:
        if not sequence:
            return []
        if self.dropout is not None:  # random: never cached
            return self._tokenize_word(sequence)
        if self.ignore_merges:
            tid = self.vocab.get(sequence)
            if tid is not None:
                return [Token(tid, sequence, (0, len(sequence)))]
        hit = self._cache.get(sequence)
        if hit is not None:
            return list(hit)
        tokens = self._tokenize_word(sequence)
        if len(sequence) <= _CACHE_MAX_WORD:
            if len(self._cache) >= _CACHE_CAPACITY:
                self._cache.clear()
            self._cache[sequence] = tuple(tokens)
        return tokens

    def _unk_id(self) -> int:
        uid = self.vocab.get(self.unk_token)
        if uid is None:
            raise ValueError(f"Unk token `{self.unk_token}` not found in the vocabulary")
        return uid

    def _segment(self, piece: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...] | None]:
        """One piece of a long word (see `_segmenter`), merged and cached: ids, lengths in
        characters, and lengths in UTF-8 bytes when the piece is irregular (else None)."""
        hit = self._segment_cache.get(piece)
        if hit is None:
            ids, lens, irregular = self._symbols(piece, in_bytes=False)
            ids, lens = self._merge_all(ids, lens)
            byte_lens = None
            if irregular:
                if piece.isascii():
                    byte_lens = tuple(lens)
                else:  # same ids, merged again with lengths counted in bytes
                    b_ids, b_lens, _ = self._symbols(piece, in_bytes=True)
                    byte_lens = tuple(self._merge_all(b_ids, b_lens)[1])
            hit = (tuple(ids), tuple(lens), byte_lens)
            if len(piece) <= _CACHE_MAX_WORD:
                if len(self._segment_cache) >= _CACHE_CAPACITY:
                    self._segment_cache.clear()
                self._segment_cache[piece] = hit
        return hit

    def _tokenize_segmented(self, word: str) -> list[Token]:
        pieces = self._segment_re.split(word)
        hits = [self._segment(p) for p in pieces]
        ids = [i for h in hits for i in h[0]]
        if word.isascii() or all(h[2] is None for h in hits):
            return self._tokens(word, ids, [n for h in hits for n in h[1]], in_bytes=False)
        # Some piece needs byte-counted offsets: count every piece in bytes (see `_tokenize_word`).
        byte_lens: list[int] = []
        for piece, (_, lens, piece_bytes) in zip(pieces, hits):
            if piece_bytes is not None:
                byte_lens.extend(piece_bytes)
                continue
            pos = 0
            for n in lens:
                byte_lens.append(len(piece[pos : pos + n].encode("utf-8", "surrogatepass")))
                pos += n
        return self._tokens(word, ids, byte_lens, in_bytes=True)

    def _tokenize_word(self, word: str) -> list[Token]:
        if self._segment_re is not None and self.dropout is None and len(word) > _SEGMENT_MIN_WORD:
            return self._tokenize_segmented(word)
        # Symbol lengths are counted in characters, except when a character is split into <0xXX>
        # tokens or dropped (no unk token): the library's offsets are then cumulative UTF-8 byte
        # lengths of the kept symbols (in their odd order: a pending unk lands after byte tokens),
        # which only byte counting reproduces.
        ids, lens, irregular = self._symbols(word, in_bytes=False)
        in_bytes = irregular and not word.isascii()
        if in_bytes:
            ids, lens, _ = self._symbols(word, in_bytes=True)
        if self.dropout is None:
            ids, lens = self._merge_all(ids, lens)
        else:
            ids, lens = self._merge_all_dropout(ids, lens)
        return self._tokens(word, ids, lens, in_bytes)

    def _tokens(self, word: str, ids: list[int], lens: list[int], in_bytes: bool) -> list[Token]:
        """Tokens of merged symbols: offsets are the running sum of their lengths."""
        spans = []
        pos = 0
        for n in lens:
            spans.append((pos, pos + n))
            pos += n
        if in_bytes:
            spans = _byte_to_char_offsets(word, spans)
        vocab_r = self.vocab_r
        return [_new_token(Token, (i, vocab_r[i], span)) for i, span in zip(ids, spans)]

    def _symbols(self, word: str, in_bytes: bool) -> tuple[list[int], list[int], bool]:
        """Initial symbols of `word` (`BPE::merge_word` before merging): ids, lengths (in characters,
        or UTF-8 bytes if `in_bytes`), and whether a character fell back to bytes or was dropped."""
        vocab = self.vocab
        prefix, suffix = self.continuing_subword_prefix, self.end_of_word_suffix
        if prefix is None and suffix is None and not in_bytes:
            ids = [vocab.get(ch) for ch in word]
            if None not in ids:  # the common case: every character is in the vocabulary
                return ids, [1] * len(ids), False
        ids = []
        lens: list[int] = []
        unk: list[int] | None = None  # pending [id, length], flushed before the next known symbol
        irregular = False
        last = len(word) - 1
        for i, ch in enumerate(word):
            n = _utf8_len(ch) if in_bytes else 1
            s = ch
            if i and prefix is not None:
                s = prefix + s
            if i == last and suffix is not None:
                s = s + suffix
            tid = vocab.get(s)
            if tid is not None:
                if unk is not None:
                    ids.append(unk[0])
                    lens.append(unk[1])
                    unk = None
                ids.append(tid)
                lens.append(n)
                continue
            if self.byte_fallback:
                byte_ids = [self._byte_ids[b] for b in s.encode("utf-8", "surrogatepass")]
                if None not in byte_ids:
                    # subtle: the library does not flush a pending unk here, so it lands after these bytes.
                    ids.extend(byte_ids)
                    lens.extend([1] * len(byte_ids))
                    irregular = True
                    continue
            if self.unk_token is not None:
                if unk is not None and self.fuse_unk:
                    unk[1] += n
                else:
                    if unk is not None:
                        ids.append(unk[0])
                        lens.append(unk[1])
                    unk = [self._unk_id(), n]
            else:  # no unk token: the character is silently dropped, as the library does
                irregular = True
        if unk is not None:
            ids.append(unk[0])
            lens.append(unk[1])
        return ids, lens, irregular

    def _merge_all(self, ids: list[int], lens: list[int]) -> tuple[list[int], list[int]]:
        """Apply merges: lowest rank first, leftmost first on ties (`Word::merge_all`)."""
        n = len(ids)
        if n < 2:
            return ids, lens
        if n <= _LIST_MERGE_MAX and self._list_merge_ok:
            return self._merge_list(ids, lens)
        return self._merge_heap(ids, lens)

    def _merge_list(self, ids: list[int], lens: list[int]) -> tuple[list[int], list[int]]:
        """Short words: keep the rank of every adjacent pair in a list; `min`/`index` run in C."""
        ranks, new_ids, stride = self._merge_rank, self._rank_new_id, self._stride
        never = _NO_MERGE
        get = ranks.get
        pair_ranks = [get(ids[i] * stride + ids[i + 1], never) for i in range(len(ids) - 1)]
        while pair_ranks:
            best = min(pair_ranks)
            if best == never:
                break
            i = pair_ranks.index(best)  # leftmost of the lowest rank
            new_id = new_ids[best]
            ids[i] = new_id
            del ids[i + 1]
            lens[i] += lens[i + 1]
            del lens[i + 1]
            del pair_ranks[i]
            if i < len(pair_ranks):
                pair_ranks[i] = get(new_id * stride + ids[i + 1], never)
            if i:
                pair_ranks[i - 1] = get(ids[i - 1] * stride + new_id, never)
        return ids, lens

    def _merge_heap(self, ids: list[int], lens: list[int]) -> tuple[list[int], list[int]]:
        """Long words: the library's heap of (rank, position) with lazily skipped stale entries."""
        n = len(ids)
        ranks, new_ids, stride = self._merge_rank, self._rank_new_id, self._stride
        # Heap entries pack (rank, position) into one int: rank-major, position-minor order.
        heap = []
        for i in range(n - 1):
            r = ranks.get(ids[i] * stride + ids[i + 1])
            if r is not None:
                heap.append((r << 32) | i)
        if not heap:
            return ids, lens
        heapq.heapify(heap)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            entry = pop(heap)
            rank, pos = entry >> 32, entry & 0xFFFFFFFF
            if lens[pos] == 0:  # merged into its left neighbour already
                continue
            right = nxt[pos]
            if right == -1:
                continue
            # Stale entry check exactly as the library: the pair now there must yield the same new id.
            current = ranks.get(ids[pos] * stride + ids[right])
            new_id = new_ids[rank]
            if current is None or new_ids[current] != new_id:
                continue
            ids[pos] = new_id
            lens[pos] += lens[right]
            lens[right] = 0
            after = nxt[right]
            nxt[pos] = after
            if after != -1:
                prv[after] = pos
            before = prv[pos]
            if before != -1:
                r = ranks.get(ids[before] * stride + new_id)
                if r is not None:
                    push(heap, (r << 32) | before)
            if after != -1:
                r = ranks.get(new_id * stride + ids[after])
                if r is not None:
                    push(heap, (r << 32) | pos)
        keep = [i for i in range(n) if lens[i]]
        return [ids[i] for i in keep], [lens[i] for i in keep]

    def _merge_all_dropout(self, ids: list[int], lens: list[int]) -> tuple[list[int], list[int]]:
        """`_merge_all` with BPE-dropout: each candidate merge is skipped with probability `dropout`."""
        n = len(ids)
        ranks, new_ids, stride = self._merge_rank, self._rank_new_id, self._stride
        heap = [(ranks[ids[i] * stride + ids[i + 1]], i) for i in range(n - 1) if ids[i] * stride + ids[i + 1] in ranks]
        heapq.heapify(heap)
        nxt = list(range(1, n + 1))
        if n:
            nxt[-1] = -1
        prv = list(range(-1, n - 1))
        skipped: list[tuple[int, int]] = []
        while heap:
            rank, pos = heapq.heappop(heap)
            if random.random() < self.dropout:
                skipped.append((rank, pos))
                continue
            for item in skipped:
                heapq.heappush(heap, item)
            skipped.clear()
            right = nxt[pos]
            if lens[pos] == 0 or right == -1:
                continue
            current = ranks.get(ids[pos] * stride + ids[right])
            new_id = new_ids[rank]
            if current is None or new_ids[current] != new_id:
                continue
            ids[pos] = new_id
            lens[pos] += lens[right]
            lens[right] = 0
            after = nxt[right]
            nxt[pos] = after
            if after != -1:
                prv[after] = pos
            before = prv[pos]
            if before != -1 and ids[before] * stride + new_id in ranks:
                heapq.heappush(heap, (ranks[ids[before] * stride + new_id], before))
            if after != -1 and new_id * stride + ids[after] in ranks:
                heapq.heappush(heap, (ranks[new_id * stride + ids[after]], pos))
        keep = [i for i in range(n) if lens[i]]
        return [ids[i] for i in keep], [lens[i] for i in keep]


def _parse_merges(merges: Any, where: str) -> list[tuple[str, str]]:
    """Both merges formats: `["a b", ...]` (legacy, `#version` lines skipped) or `[["a", "b"], ...]`."""
    if not isinstance(merges, list):
        raise ValueError(f"{where}.merges must be a list, got {type(merges).__name__}")
    out: list[tuple[str, str]] = []
    line = 0
    for item in merges:
        if isinstance(item, str):
            if item.startswith("#version"):
                continue
            line += 1
            parts = item.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{where}.merges: line {line} ({item!r}) is not two tokens separated by one space")
            out.append((parts[0], parts[1]))
        elif isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(p, str) for p in item):
            line += 1
            out.append((item[0], item[1]))
        else:
            raise ValueError(f"{where}.merges: entry {item!r} is neither \"a b\" nor [\"a\", \"b\"]")
    return out


def _prefix_table(entries: Iterable[str]) -> dict[str, bool]:
    """Every non-empty prefix of every entry → True if it is an entry itself.

    >>> _prefix_table(["ab", "abcd"])
    {'a': False, 'ab': True, 'abc': False, 'abcd': True}
    """
    table: dict[str, bool] = {}
    for e in entries:
        for k in range(1, len(e)):
            table.setdefault(e[:k], False)
        if e:
            table[e] = True
    return table


class WordPiece(Model):
    """Greedy longest-match-first WordPiece (`models/wordpiece/mod.rs`).

    A word that cannot be fully covered, or longer than `max_input_chars_per_word`, becomes one unk.

    >>> m = WordPiece({"ba": 0, "##na": 1, "[UNK]": 2})
    >>> [(t.value, t.offsets) for t in m.tokenize("banana")]
    [('ba', (0, 2)), ('##na', (2, 4)), ('##na', (4, 6))]
    """

    def __init__(
        self,
        vocab: dict[str, int],
        *,
        unk_token: str = "[UNK]",
        continuing_subword_prefix: str = "##",
        max_input_chars_per_word: int = 100,
    ):
        self.vocab = vocab
        self.vocab_r = {v: k for k, v in vocab.items()}
        self.unk_token = unk_token
        self.continuing_subword_prefix = continuing_subword_prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        # Every prefix of a vocabulary entry → whether it is an entry itself: the longest match is
        # then found walking forward, stopping as soon as no entry can start with the substring.
        # At a word start any entry can match; later only `prefix`-entries, looked up without it.
        self._first = _prefix_table(vocab)
        n = len(continuing_subword_prefix)
        self._cont = _prefix_table(k[n:] for k in vocab if k.startswith(continuing_subword_prefix))
        self._cache: dict[str, tuple[Token, ...]] = {}

    @classmethod
    def from_config(cls, config: dict, *, where: str = "model") -> WordPiece:
        return cls(
            _vocab_dict(config, where),
            unk_token=config.get("unk_token", "[UNK]"),
            continuing_subword_prefix=config.get("continuing_subword_prefix", "##"),
            max_input_chars_per_word=int(config.get("max_input_chars_per_word", 100)),
        )

    def _unk(self, sequence: str) -> list[Token]:
        uid = self.vocab.get(self.unk_token)
        if uid is None:
            raise ValueError("WordPiece error: Missing [UNK] token from the vocabulary")
        return [Token(uid, self.unk_token, (0, len(sequence)))]

    def tokenize(self, sequence: str) -> list[Token]:
        hit = self._cache.get(sequence)
        if hit is not None:
            return list(hit)
        tokens = self._tokenize(sequence)
        if len(sequence) <= _CACHE_MAX_WORD:
            if len(self._cache) >= _CACHE_CAPACITY:
                self._cache.clear()
            self._cache[sequence] = tuple(tokens)
        return tokens

    def _tokenize(self, sequence: str) -> list[Token]:
        n = len(sequence)
        if n > self.max_input_chars_per_word:
            return self._unk(sequence)
        vocab, prefix = self.vocab, self.continuing_subword_prefix
        tokens: list[Token] = []
        start = 0
        table = self._first
        while start < n:
            best = -1  # end of the longest entry starting at `start`
            end = start
            while end < n:
                end += 1
                is_entry = table.get(sequence[start:end])
                if is_entry is None:
                    break
                if is_entry:
                    best = end
            if best < 0:
                return self._unk(sequence)
            sub = sequence[start:best] if start == 0 else prefix + sequence[start:best]
            tokens.append(_new_token(Token, (vocab[sub], sub, (start, best))))
            start = best
            table = self._cont
        return tokens


class WordLevel(Model):
    """Whole-word lookup (`models/wordlevel/mod.rs`): the word's id, or `unk_token`.

    >>> WordLevel({"hi": 3, "<unk>": 0}).tokenize("yo")
    [Token(id=0, value='<unk>', offsets=(0, 2))]
    """

    def __init__(self, vocab: dict[str, int], *, unk_token: str = "<unk>"):
        self.vocab = vocab
        self.vocab_r = {v: k for k, v in vocab.items()}
        self.unk_token = unk_token

    @classmethod
    def from_config(cls, config: dict, *, where: str = "model") -> WordLevel:
        return cls(_vocab_dict(config, where), unk_token=config.get("unk_token", "<unk>"))

    def tokenize(self, sequence: str) -> list[Token]:
        tid = self.vocab.get(sequence)
        if tid is not None:
            return [Token(tid, sequence, (0, len(sequence)))]
        uid = self.vocab.get(self.unk_token)
        if uid is None:
            raise ValueError("WordLevel error: Missing [UNK] token from the vocabulary")
        return [Token(uid, self.unk_token, (0, len(sequence)))]


# The library scores an unknown character `min_score - K_UNK_PENALTY`, so it loses to any real piece.
_K_UNK_PENALTY = 10.0


class Unigram(Model):
    """SentencePiece unigram: the highest-scoring segmentation (Viterbi, `models/unigram/model.rs`).

    Runs of unknown characters are fused into one unk token whose value is the original text; with
    `byte_fallback` they become `<0xXX>` tokens instead (all sharing the run's offsets) when every
    byte has one.

    >>> m = Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -2.0), ("ab", -2.5)], unk_id=0)
    >>> [(t.id, t.value, t.offsets) for t in m.tokenize("abxy")]
    [(3, 'ab', (0, 2)), (0, 'xy', (2, 4))]
    """

    def __init__(
        self, vocab: list[tuple[str, float]], *, unk_id: int | None = None, byte_fallback: bool = False,
        where: str = "model",
    ):
        if unk_id is not None:
            if not vocab:
                raise ValueError(f"{where}: the vocabulary is empty but at least <unk> is needed")
            if not 0 <= unk_id < len(vocab):
                raise ValueError(f"{where}.unk_id {unk_id} is not an index of {where}.vocab ({len(vocab)} pieces)")
        self.pieces = [p for p, _ in vocab]
        self.scores = [float(s) for _, s in vocab]
        self.unk_id = unk_id
        self.byte_fallback = byte_fallback
        self.vocab = {}
        for i, p in enumerate(self.pieces):
            self.vocab[p] = i  # a duplicate piece keeps its last id, like the library's HashMap
        self.min_score = min(self.scores, default=float("inf"))
        self._unk_score = self.min_score - _K_UNK_PENALTY
        # Every prefix of every piece → id of the piece, or -1 when it is only a prefix: lets the
        # Viterbi forward pass stop as soon as no piece can start with the current substring.
        prefixes: dict[str, int] = {}
        for p, i in self.vocab.items():
            for k in range(1, len(p)):
                prefixes.setdefault(p[:k], -1)
        for p, i in self.vocab.items():
            if p:  # the library's trie never yields the empty piece
                prefixes[p] = i
        self._prefixes = prefixes
        self._max_len = max((len(p) for p in self.pieces), default=0)
        self._byte_ids = [self.vocab.get(f"<0x{b:02X}>") for b in range(256)] if byte_fallback else []
        self._cache: dict[str, tuple[Token, ...]] = {}

    @classmethod
    def from_config(cls, config: dict, *, where: str = "model") -> Unigram:
        vocab = config.get("vocab")
        if not isinstance(vocab, list):
            raise ValueError(f"{where}.vocab must be a list of [piece, score], got {type(vocab).__name__}")
        unk_id = config.get("unk_id")
        return cls(
            [(str(p), float(s)) for p, s in vocab],
            unk_id=None if unk_id is None else int(unk_id),
            byte_fallback=bool(config.get("byte_fallback", False)),
            where=where,
        )

    def id_to_token(self, id: int) -> str | None:
        return self.pieces[id] if 0 <= id < len(self.pieces) else None

    def get_vocab_size(self) -> int:
        return len(self.pieces)

    def _missing_unk(self) -> ValueError:
        return ValueError("Encountered an unknown token but `unk_id` is missing")

    def encode(self, sentence: str) -> list[str]:
        """Best segmentation of `sentence` as strings (`Unigram::encode_optimized`).

        >>> Unigram([("<unk>", 0.0), ("a", -1.0), ("ab", -1.5), ("b", -1.0)], unk_id=0).encode("abzzb")
        ['ab', 'zz', 'b']
        """
        n = len(sentence)
        if n == 0:
            return []
        prefixes, scores, max_len = self._prefixes, self.scores, self._max_len
        unk_id, unk_score = self.unk_id, self._unk_score
        # best path ending at each char position: score, start (-1: not reached yet), id of last piece
        best = [0.0] * (n + 1)
        start_at = [-1] * (n + 1)
        last_id = [0] * (n + 1)
        for i in range(n):
            base = best[i]
            has_single = False
            for j in range(i + 1, min(n, i + max_len) + 1):
                pid = prefixes.get(sentence[i:j])
                if pid is None:
                    break
                if pid < 0:
                    continue
                cand = scores[pid] + base
                if start_at[j] == -1 or cand > best[j]:
                    best[j], start_at[j], last_id[j] = cand, i, pid
                if j == i + 1:
                    has_single = True
            if not has_single:
                cand = unk_score + base
                if start_at[i + 1] == -1 or cand > best[i + 1]:
                    if unk_id is None:
                        raise self._missing_unk()
                    best[i + 1], start_at[i + 1], last_id[i + 1] = cand, i, unk_id
        results: list[str] = []
        unk_run: list[str] = []  # consecutive unknown pieces are fused, walking backwards
        end = n
        while end > 0:
            start = start_at[end]
            if unk_id is not None and last_id[end] == unk_id:
                unk_run.append(sentence[start:end])
            else:
                if unk_run:
                    results.append("".join(reversed(unk_run)))
                    unk_run = []
                results.append(sentence[start:end])
            end = start
        if unk_run:
            results.append("".join(reversed(unk_run)))
        results.reverse()
        return results

    def tokenize(self, sequence: str) -> list[Token]:
        hit = self._cache.get(sequence)
        if hit is not None:
            return list(hit)
        tokens = self._tokenize(sequence)
        if len(sequence) <= _CACHE_MAX_WORD:
            if len(self._cache) >= _CACHE_CAPACITY:
                self._cache.clear()
            self._cache[sequence] = tuple(tokens)
        return tokens

    def _tokenize(self, sequence: str) -> list[Token]:
        tokens: list[Token] = []
        offset = 0
        for piece in self.encode(sequence):
            span = (offset, offset + len(piece))
            offset = span[1]
            tid = self.vocab.get(piece)
            if tid is None:
                if self.byte_fallback:
                    byte_ids = [self._byte_ids[b] for b in piece.encode("utf-8", "surrogatepass")]
                    if None not in byte_ids:
                        tokens.extend(Token(b, self.pieces[b], span) for b in byte_ids)
                        continue
                if self.unk_id is None:
                    raise self._missing_unk()
                tid = self.unk_id
            tokens.append(_new_token(Token, (tid, piece, span)))
        return tokens


_MODELS = {"BPE": BPE, "WordPiece": WordPiece, "WordLevel": WordLevel, "Unigram": Unigram}


def _infer_type(config: dict) -> str | None:
    """Old tokenizer.json files may omit `"type"`; the library then tries each model's fields in turn."""
    if "merges" in config:
        return "BPE"
    if isinstance(config.get("vocab"), list):
        return "Unigram"
    if "max_input_chars_per_word" in config or "continuing_subword_prefix" in config:
        return "WordPiece"
    if isinstance(config.get("vocab"), dict):
        return "WordLevel"
    return None


def build_model(config: dict, *, where: str = "model", allow_dropout: bool = False) -> Model:
    """The model for tokenizer.json's `"model"` object, looked up on its `"type"`.

    >>> build_model({"type": "WordLevel", "vocab": {"hi": 0}, "unk_token": "hi"}).tokenize("hi")
    [Token(id=0, value='hi', offsets=(0, 2))]
    >>> build_model({"type": "Foo"})
    Traceback (most recent call last):
    ValueError: unknown model.type 'Foo'; expected one of BPE, WordPiece, WordLevel, Unigram
    """
    if not isinstance(config, dict):
        raise ValueError(f"{where} must be an object, got {type(config).__name__}")
    kind = config.get("type") or _infer_type(config)
    cls = _MODELS.get(kind)
    if cls is None:
        raise ValueError(f"unknown {where}.type {kind!r}; expected one of {', '.join(_MODELS)}")
    if cls is BPE:
        return BPE.from_config(config, where=where, allow_dropout=allow_dropout)
    return cls.from_config(config, where=where)
