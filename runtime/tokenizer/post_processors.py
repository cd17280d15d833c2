"""Post-processors of tokenizer.json (`"post_processor"`): add special tokens, set type ids, trim offsets.

Mirrors `tokenizers/src/processors/*`. `process` works like the library's `PostProcessor::process`:
mark each input with its sequence index, let the processor rewrite the list of encodings
(`process_encodings`), then merge them; overflowing encodings are processed and combined too.

    >>> from modelkiln.runtime.tokenizer.encoding import Encoding
    >>> bert = build_post_processor({"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]})
    >>> e = bert.process(Encoding.from_tokens([(7, "hi", (0, 2))]), None, add_special_tokens=True)
    >>> e.tokens, e.special_tokens_mask
    (['[CLS]', 'hi', '[SEP]'], [1, 0, 1])
"""

from __future__ import annotations

from typing import Any

from modelkiln.runtime.tokenizer.encoding import Encoding

# `char::is_whitespace` in Rust (Unicode White_Space); Python's `str.isspace` also accepts U+001C..U+001F.
_RUST_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_BYTE_LEVEL_SPACE = "\u0120"  # 'Ġ', the byte-level character for b" "


class PostProcessor:
    """Base class: subclasses implement `added_tokens` and `process_encodings`."""

    def added_tokens(self, is_pair: bool) -> int:
        raise NotImplementedError

    def process_encodings(self, encodings: list[Encoding], add_special_tokens: bool) -> list[Encoding]:
        raise NotImplementedError

    def process(
        self, encoding: Encoding, pair_encoding: Encoding | None = None, add_special_tokens: bool = True
    ) -> Encoding:
        """Post-process a single or pair input into one encoding (consumes the inputs)."""
        encodings = [encoding] if pair_encoding is None else [encoding, pair_encoding]
        for i, e in enumerate(encodings):
            e.set_sequence_id(i)
            for o in e.overflowing:
                o.set_sequence_id(i)
            e.set_type_ids([i] * len(e))
        return Encoding.merge(self.process_encodings(encodings, add_special_tokens), False)


def default_process(encoding: Encoding, pair_encoding: Encoding | None = None, add_special_tokens: bool = True) -> Encoding:
    """What the library does when tokenizer.json has no post-processor: only merge a pair.

    >>> e = default_process(Encoding.from_tokens([(1, "a", (0, 1))]), Encoding.from_tokens([(2, "b", (0, 1))], 1))
    >>> e.ids, e.type_ids, e.sequence_ids
    ([1, 2], [0, 1], [0, 1])
    """
    if pair_encoding is None:
        return encoding
    out = Encoding()
    for i, e in enumerate((encoding, pair_encoding)):
        e.set_sequence_id(i)
        out.merge_with(e, False)
    return out


def _special_pair(value: Any, name: str, where: str) -> tuple[str, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ValueError(f"{where}.{name} must be [token, id], got {value!r}")
    return str(value[0]), int(value[1])


def _wrap(e: Encoding, before: tuple[str, int] | None, after: tuple[str, int], seq_id: int, type_id: int | None) -> Encoding:
    """`e` with special tokens around it, as Bert/Roberta build them.

    `type_id=None` keeps `e`'s own type ids, with 0 before and `seq_id` after (Bert's `[SEP]` of
    the pair is type 1); otherwise every token gets `type_id` (Roberta: 0).
    """
    pre = [before] if before is not None else []
    n = len(e.ids)
    ids = [t[1] for t in pre] + e.ids + [after[1]]
    if type_id is None:
        type_ids = [0] * len(pre) + e.type_ids + [seq_id]
    else:
        type_ids = [type_id] * len(ids)
    return Encoding(
        ids=ids,
        type_ids=type_ids,
        tokens=[t[0] for t in pre] + e.tokens + [after[0]],
        word_ids=[None] * len(pre) + e.word_ids + [None],
        offsets=[(0, 0)] * len(pre) + e.offsets + [(0, 0)],
        special_tokens_mask=[1] * len(pre) + [0] * n + [1],
        attention_mask=[1] * len(ids),
        sequence_ranges={seq_id: (len(pre), len(pre) + n)},
    )


class BertProcessing(PostProcessor):
    """`[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]`, type ids 0 for A's part and 1 for B's.

    >>> BertProcessing(("[SEP]", 102), ("[CLS]", 101)).added_tokens(is_pair=True)
    3
    """

    def __init__(self, sep: tuple[str, int] = ("[SEP]", 102), cls: tuple[str, int] = ("[CLS]", 101)):
        self.sep, self.cls = sep, cls

    @classmethod
    def from_config(cls, config: dict, *, where: str = "post_processor") -> BertProcessing:
        return cls(_special_pair(config.get("sep"), "sep", where), _special_pair(config.get("cls"), "cls", where))

    def added_tokens(self, is_pair: bool) -> int:
        return 3 if is_pair else 2

    def process_encodings(self, encodings: list[Encoding], add_special_tokens: bool) -> list[Encoding]:
        if not add_special_tokens:
            return encodings
        out = []
        for i, e in enumerate(encodings):
            # First sequence: [CLS] e [SEP], types 0 (e keeps its own); pair: e [SEP], the [SEP] typed 1.
            before = self.cls if i == 0 else None
            new = _wrap(e, before, self.sep, i, None)
            new.overflowing = [_wrap(o, before, self.sep, i, None) for o in e.overflowing]
            out.append(new)
        return out


class RobertaProcessing(PostProcessor):
    """`<s> A </s>` and `<s> A </s> </s> B </s>`, all type ids 0, offsets optionally trimmed.

    >>> RobertaProcessing(("</s>", 2), ("<s>", 0)).added_tokens(is_pair=True)
    4
    """

    def __init__(
        self, sep: tuple[str, int] = ("</s>", 2), cls: tuple[str, int] = ("<s>", 0), trim_offsets: bool = True,
        add_prefix_space: bool = True,
    ):
        self.sep, self.cls = sep, cls
        self.trim_offsets, self.add_prefix_space = trim_offsets, add_prefix_space

    @classmethod
    def from_config(cls, config: dict, *, where: str = "post_processor") -> RobertaProcessing:
        return cls(
            _special_pair(config.get("sep"), "sep", where),
            _special_pair(config.get("cls"), "cls", where),
            trim_offsets=bool(config.get("trim_offsets", True)),
            add_prefix_space=bool(config.get("add_prefix_space", True)),
        )

    def added_tokens(self, is_pair: bool) -> int:
        return 4 if is_pair else 2

    def process_encodings(self, encodings: list[Encoding], add_special_tokens: bool) -> list[Encoding]:
        if self.trim_offsets:
            _trim_with_overflowing(encodings, self.add_prefix_space)
        # "Roberta is weird, and every encoding is type_id=0" (the library's own comment).
        for e in encodings:
            e.set_type_ids([0] * len(e))
        if not add_special_tokens:
            return encodings
        out = []
        for i, e in enumerate(encodings):
            before = self.cls if i == 0 else self.sep
            new = _wrap(e, before, self.sep, i, 0)
            new.overflowing = [_wrap(o, before, self.sep, i, 0) for o in e.overflowing]
            out.append(new)
        return out


def trim_byte_level_offsets(encoding: Encoding, add_prefix_space: bool) -> None:
    """Shrink offsets so they exclude leading/trailing spaces (`Ġ` or whitespace) of each token.

    With `add_prefix_space`, one leading space of a token starting the text is the one the
    pre-tokenizer added, and its offsets already exclude it.

    >>> e = Encoding.from_tokens([(0, "Ġhi", (0, 3)), (1, "ĠĠyo", (3, 7))])
    >>> trim_byte_level_offsets(e, add_prefix_space=False); e.offsets
    [(1, 3), (5, 7)]
    """
    offsets = encoding.offsets
    for i, token in enumerate(encoding.tokens):
        leading = 0
        for c in token:
            if c != _BYTE_LEVEL_SPACE and c not in _RUST_WHITESPACE:
                break
            leading += 1
        trailing = 0
        for c in reversed(token):
            if c != _BYTE_LEVEL_SPACE and c not in _RUST_WHITESPACE:
                break
            trailing += 1
        if not (leading or trailing):
            continue
        start, end = offsets[i]
        if leading:
            # subtle: pre-tokenized input has several tokens starting at 0; all count as "first".
            if (i == 0 or start == 0) and add_prefix_space and leading == 1:
                leading = 0
            start = min(start + leading, end)
        if trailing and end >= trailing:
            end = max(end - trailing, start)
        offsets[i] = (start, end)


class ByteLevel(PostProcessor):
    """The byte-level post-processor: only trims offsets (`trim_offsets`), adds no token."""

    def __init__(self, add_prefix_space: bool = True, trim_offsets: bool = True, use_regex: bool = True):
        self.add_prefix_space, self.trim_offsets, self.use_regex = add_prefix_space, trim_offsets, use_regex

    @classmethod
    def from_config(cls, config: dict, *, where: str = "post_processor") -> ByteLevel:
        return cls(
            add_prefix_space=bool(config.get("add_prefix_space", True)),
            trim_offsets=bool(config.get("trim_offsets", True)),
            use_regex=bool(config.get("use_regex", True)),
        )

    def added_tokens(self, is_pair: bool) -> int:
        return 0

    def process_encodings(self, encodings: list[Encoding], add_special_tokens: bool) -> list[Encoding]:
        if self.trim_offsets:
            _trim_with_overflowing(encodings, self.add_prefix_space)
        for i, e in enumerate(encodings):
            e.set_sequence_id(i)
        return encodings


def _trim_with_overflowing(encodings: list[Encoding], add_prefix_space: bool) -> None:
    """trim_byte_level_offsets on each encoding and on each of its overflowing windows."""
    for e in encodings:
        trim_byte_level_offsets(e, add_prefix_space)
        for o in e.overflowing:
            trim_byte_level_offsets(o, add_prefix_space)


def _parse_piece(piece: Any, where: str) -> tuple[str, str, int]:
    """A template piece → `("sequence", "A"|"B", type_id)` or `("special", token_id, type_id)`.

    Accepts tokenizer.json's `{"Sequence": {"id": "A", "type_id": 0}}` / `{"SpecialToken": {...}}`
    and the Python constructor's strings: `"$A"`, `"$B:1"`, `"$1"`, `"[CLS]"`, `"[SEP]:1"`.
    """
    if isinstance(piece, dict) and len(piece) == 1:
        (kind, body), = piece.items()
        if kind == "Sequence" and body.get("id") in ("A", "B"):
            return "sequence", body["id"], int(body.get("type_id", 0))
        if kind == "SpecialToken" and isinstance(body.get("id"), str):
            return "special", body["id"], int(body.get("type_id", 0))
    elif isinstance(piece, str):
        name, _, type_part = piece.partition(":")
        if piece.count(":") <= 1 and (not _ or type_part.isdigit()):
            type_id = int(type_part) if _ else 0
            if not name.startswith("$"):
                return "special", name, type_id
            rest = name[1:]
            if rest in ("", "A", "a"):
                return "sequence", "A", type_id
            if rest in ("B", "b"):
                return "sequence", "B", type_id
            if rest.isdigit():
                return "sequence", "A", type_id if _ else int(rest)
    raise ValueError(f"{where}: cannot read template piece {piece!r}")


class TemplateProcessing(PostProcessor):
    """Templates such as `[CLS] $A [SEP]` / `[CLS] $A [SEP] $B:1 [SEP]:1` (`processors/template.rs`).

    Each `$A`/`$B` piece sets its sequence's type ids; special tokens may expand to several ids.

    >>> t = TemplateProcessing(["[CLS]", "$A", "[SEP]"], ["[CLS]", "$A", "[SEP]", "$B:1", "[SEP]:1"],
    ...                        {"[CLS]": ([1], ["[CLS]"]), "[SEP]": ([2], ["[SEP]"])})
    >>> t.added_tokens(is_pair=False), t.added_tokens(is_pair=True)
    (2, 3)
    """

    def __init__(
        self, single: list[Any], pair: list[Any], special_tokens: dict[str, tuple[list[int], list[str]]],
        *, where: str = "post_processor",
    ):
        self.single = [_parse_piece(p, f"{where}.single") for p in single]
        self.pair = [_parse_piece(p, f"{where}.pair") for p in pair]
        self.special_tokens = {k: (list(ids), list(toks)) for k, (ids, toks) in special_tokens.items()}
        for k, (ids, toks) in self.special_tokens.items():
            if len(ids) != len(toks):
                raise ValueError(f"{where}.special_tokens[{k!r}]: ids and tokens must be of the same length")
        # A sequence used twice in a template must be copied; once, it can be merged as it is.
        self._reused = {
            id(t): {name for kind, name, _ in t if kind == "sequence" and sum(p[1] == name for p in t) > 1}
            for t in (self.single, self.pair)
        }
        missing = sorted(
            {p[1] for p in self.single + self.pair if p[0] == "special" and p[1] not in self.special_tokens}
        )
        if missing:
            raise ValueError(f"{where}: template uses special token(s) {missing} missing from special_tokens")

    def process(
        self, encoding: Encoding, pair_encoding: Encoding | None = None, add_special_tokens: bool = True
    ) -> Encoding:
        if pair_encoding is not None or encoding.overflowing:
            return super().process(encoding, pair_encoding, add_special_tokens)
        # The common case, one sequence without overflowing windows, built in one pass: what the generic path's
        # per-piece encodings and merge come to, at a third of the cost (the tokenizer parity tests cover both).
        n = len(encoding.ids)
        encoding.set_sequence_id(0)
        out = Encoding()
        for kind, name, type_id in self.single:
            if kind == "sequence":
                if name != "A":
                    raise ValueError("TemplateProcessing: the template uses $B but no pair sequence was given")
                start = len(out.ids)
                for seq_id, (s, e) in encoding.sequence_ranges.items():
                    out.sequence_ranges[seq_id] = (start + s, start + e)
                encoding.set_type_ids([type_id] * n)
                out.ids += encoding.ids
                out.type_ids += encoding.type_ids
                out.tokens += encoding.tokens
                out.word_ids += encoding.word_ids
                out.offsets += encoding.offsets
                out.special_tokens_mask += encoding.special_tokens_mask
                out.attention_mask += encoding.attention_mask
            elif add_special_tokens:
                ids, tokens = self.special_tokens[name]
                k = len(ids)
                out.ids += ids
                out.type_ids += [type_id] * k
                out.tokens += tokens
                out.word_ids += [None] * k
                out.offsets += [(0, 0)] * k
                out.special_tokens_mask += [1] * k
                out.attention_mask += [1] * k
        return out

    @classmethod
    def from_config(cls, config: dict, *, where: str = "post_processor") -> TemplateProcessing:
        raw = config.get("special_tokens") or {}
        items = raw.values() if isinstance(raw, dict) else raw
        special = {}
        for tok in items:
            if isinstance(tok, dict):
                special[tok["id"]] = (tok["ids"], tok["tokens"])
            else:  # the Python constructor's ("[CLS]", 101) form
                name, tid = (tok[1], tok[0]) if isinstance(tok[0], int) else (tok[0], tok[1])
                special[name] = ([tid], [name])
        single, pair = config.get("single", "$0"), config.get("pair", "$A:0 $B:1")
        single = single.split(" ") if isinstance(single, str) else single
        pair = pair.split(" ") if isinstance(pair, str) else pair
        return cls(single, pair, special, where=where)

    def _count(self, template: list[tuple[str, str, int]]) -> int:
        return sum(len(self.special_tokens[p[1]][0]) for p in template if p[0] == "special")

    def added_tokens(self, is_pair: bool) -> int:
        return self._count(self.pair if is_pair else self.single)

    def process_encodings(self, encodings: list[Encoding], add_special_tokens: bool) -> list[Encoding]:
        template = self.pair if len(encodings) == 2 else self.single
        out = []
        for kind, name, type_id in template:
            if kind == "sequence":
                i = 0 if name == "A" else 1
                if i >= len(encodings):
                    raise ValueError("TemplateProcessing: the template uses $B but no pair sequence was given")
                e = encodings[i]
                # subtle: only the encoding itself gets the template's type id, not its overflowing ones.
                e.set_type_ids([type_id] * len(e))
                e.set_sequence_id(i)
                out.append(e.copy() if name in self._reused[id(template)] else e)
            elif add_special_tokens:
                ids, tokens = self.special_tokens[name]
                n = len(ids)
                out.append(Encoding(
                    list(ids), [type_id] * n, list(tokens), [None] * n, [(0, 0)] * n, [1] * n, [1] * n,
                ))
        return out


class Sequence(PostProcessor):
    """Several post-processors applied in order (e.g. ByteLevel offsets trimming, then a template)."""

    def __init__(self, processors: list[PostProcessor]):
        self.processors = processors

    @classmethod
    def from_config(cls, config: dict, *, where: str = "post_processor") -> Sequence:
        items = config.get("processors")
        if not isinstance(items, list):
            raise ValueError(f"{where}.processors must be a list")
        return cls([build_post_processor(c, where=f"{where}.processors[{i}]") for i, c in enumerate(items)])

    def added_tokens(self, is_pair: bool) -> int:
        return sum(p.added_tokens(is_pair) for p in self.processors)

    def process_encodings(self, encodings: list[Encoding], add_special_tokens: bool) -> list[Encoding]:
        for p in self.processors:
            encodings = p.process_encodings(encodings, add_special_tokens)
        return encodings


_POST_PROCESSORS = {
    "BertProcessing": BertProcessing,
    "RobertaProcessing": RobertaProcessing,
    "ByteLevel": ByteLevel,
    "TemplateProcessing": TemplateProcessing,
    "Sequence": Sequence,
}


def build_post_processor(config: dict, *, where: str = "post_processor") -> PostProcessor:
    """The post-processor for tokenizer.json's `"post_processor"` object, looked up on its `"type"`.

    >>> build_post_processor({"type": "Nope"})
    Traceback (most recent call last):
    ValueError: unknown post_processor.type 'Nope'; expected one of BertProcessing, RobertaProcessing, ByteLevel, TemplateProcessing, Sequence
    """
    if not isinstance(config, dict):
        raise ValueError(f"{where} must be an object, got {type(config).__name__}")
    kind = config.get("type")
    cls = _POST_PROCESSORS.get(kind)
    if cls is None:
        raise ValueError(f"unknown {where}.type {kind!r}; expected one of {', '.join(_POST_PROCESSORS)}")
    return cls.from_config(config, where=where)
