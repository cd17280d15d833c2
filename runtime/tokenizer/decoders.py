"""Decoders of tokenizer.json (`"decoder"`): turn token strings back into text, as `tokenizers/src/decoders`.

`decode_chain` maps the token list to a new list (so decoders compose in a `Sequence`); `decode`
joins it. Invalid UTF-8 (byte-level or `<0xXX>` pieces of a character) never raises: it becomes
U+FFFD exactly where the library puts it.

    >>> build_decoder({"type": "ByteLevel"}).decode(["Hello", "Ġw", "orld", "ĠðŁ", "¤Ĺ"])
    'Hello world 🤗'
    >>> build_decoder({"type": "ByteFallback"}).decode(["<0xE5>", "<0x8F>", "a"])
    '��a'
"""

from __future__ import annotations

from typing import Any

import regex

from modelkiln.runtime.tokenizer.normalizers import BYTES_TO_CHAR, CHAR_TO_BYTE


class Decoder:
    """Base class: subclasses implement `decode_chain`."""

    def decode_chain(self, tokens: list[str]) -> list[str]:
        raise NotImplementedError

    def decode(self, tokens: list[str]) -> str:
        return "".join(self.decode_chain(list(tokens)))


# GPT-2's byte <-> printable character table, shared with the ByteLevel normalizer/pre-tokenizer
BYTES_CHAR, CHAR_BYTES = BYTES_TO_CHAR, CHAR_TO_BYTE


class ByteLevel(Decoder):
    """Byte-level characters → bytes → UTF-8 text (one output string).

    A token holding a character outside the byte-level alphabet contributes its own UTF-8 bytes.
    """

    def __init__(self, **_: Any):
        pass

    @classmethod
    def from_config(cls, config: dict, *, where: str = "decoder") -> ByteLevel:
        return cls()

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out = bytearray()
        table = CHAR_BYTES
        for token in tokens:
            try:
                out.extend([table[c] for c in token])
            except KeyError:
                out.extend(token.encode("utf-8", "surrogatepass"))
        # Python's "replace" substitutes maximal invalid subparts, like Rust's `from_utf8_lossy`.
        return [out.decode("utf-8", "replace")]


def wordpiece_cleanup(text: str) -> str:
    """The library's English detokenization clean-up (spaces before punctuation and contractions).

    >>> wordpiece_cleanup("do n't stop , ok ?")
    "don't stop, ok?"
    """
    return (
        text.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",").replace(" ' ", "'")
        .replace(" n't", "n't").replace(" 'm", "'m").replace(" do not", " don't").replace(" 's", "'s")
        .replace(" 've", "'ve").replace(" 're", "'re")
    )


class WordPiece(Decoder):
    """Joins WordPiece tokens: `##`-prefixed ones glue to the previous token, others get a space.

    >>> WordPiece().decode(["un", "##aff", "##able", "!"])
    'unaffable!'
    """

    def __init__(self, prefix: str = "##", cleanup: bool = True):
        self.prefix, self.cleanup = prefix, cleanup

    @classmethod
    def from_config(cls, config: dict, *, where: str = "decoder") -> WordPiece:
        return cls(config.get("prefix", "##"), bool(config.get("cleanup", True)))

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out = []
        for i, token in enumerate(tokens):
            if i != 0:
                token = token.replace(self.prefix, "", 1) if token.startswith(self.prefix) else " " + token
            if self.cleanup:
                token = wordpiece_cleanup(token)
            out.append(token)
        return out


class Metaspace(Decoder):
    """`▁` back to spaces; the first token loses its `▁`s unless `prepend_scheme` is `"never"`.

    >>> Metaspace().decode(["▁Hey", "▁friend!"])
    'Hey friend!'
    """

    def __init__(self, replacement: str = "\u2581", prepend_scheme: str = "always", split: bool = True):
        self.replacement, self.prepend_scheme, self.split = replacement, prepend_scheme, split

    @classmethod
    def from_config(cls, config: dict, *, where: str = "decoder") -> Metaspace:
        scheme = config.get("prepend_scheme")
        if scheme is None:  # files written before `prepend_scheme` existed
            scheme = "always" if config.get("add_prefix_space", True) else "never"
        scheme = str(scheme).lower()
        if scheme not in ("always", "first", "never"):
            raise ValueError(f"{where}.prepend_scheme must be 'always', 'first' or 'never', got {scheme!r}")
        replacement = config.get("replacement", "\u2581")
        if len(replacement) != 1:
            raise ValueError(f"{where}.replacement must be one character, got {replacement!r}")
        return cls(replacement, scheme, bool(config.get("split", True)))

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out = []
        for i, token in enumerate(tokens):
            if i == 0 and self.prepend_scheme != "never":
                out.append(token.replace(self.replacement, ""))  # every one of them, as the library
            else:
                out.append(token.replace(self.replacement, " "))
        return out


class BPEDecoder(Decoder):
    """Replaces the end-of-word `suffix` by a space (nothing on the last token).

    >>> BPEDecoder().decode(["hel", "lo</w>", "you</w>"])
    'hello you'
    """

    def __init__(self, suffix: str = "</w>"):
        self.suffix = suffix

    @classmethod
    def from_config(cls, config: dict, *, where: str = "decoder") -> BPEDecoder:
        return cls(config.get("suffix", "</w>"))

    def decode_chain(self, tokens: list[str]) -> list[str]:
        last = len(tokens) - 1
        return [t.replace(self.suffix, "" if i == last else " ") for i, t in enumerate(tokens)]


class CTC(Decoder):
    """Connectionist Temporal Classification output: collapse repeats, drop pads, delimiter → space.

    >>> CTC().decode("<pad> h e e l l <pad> l o o | w o r l d".split(" "))
    'hello world'
    """

    def __init__(self, pad_token: str = "<pad>", word_delimiter_token: str = "|", cleanup: bool = True):
        self.pad_token, self.word_delimiter_token, self.cleanup = pad_token, word_delimiter_token, cleanup

    @classmethod
    def from_config(cls, config: dict, *, where: str = "decoder") -> CTC:
        return cls(
            config.get("pad_token", "<pad>"), config.get("word_delimiter_token", "|"),
            bool(config.get("cleanup", True)),
        )

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out = []
        previous = None
        for i, token in enumerate(tokens):
            if i and token == previous:  # consecutive duplicates collapse
                continue
            previous = token
            token = token.replace(self.pad_token, "")
            if self.cleanup:
                token = wordpiece_cleanup(token).replace(self.word_delimiter_token, " ")
            if token:
                out.append(token)
        return out


def find_matches(pattern: regex.Pattern, text: str) -> list[tuple[int, int]]:
    """Non-overlapping matches the way Oniguruma iterates them (the library's `SysRegex`).

    Unlike Python's `re.sub`, an empty match right after the previous match is skipped:

    >>> find_matches(regex.compile("a*"), "baac")
    [(0, 0), (1, 3), (4, 4)]

    Empty text has no match at all (the library special-cases it).
    """
    if not text:
        return []
    out = []
    pos, last_end = 0, None
    n = len(text)
    while pos <= n:
        m = pattern.search(text, pos)
        if m is None:
            break
        s, e = m.span()
        if s == e and s == last_end:
            pos += 1
            continue
        out.append((s, e))
        pos = last_end = e
    return out


class Replace(Decoder):
    """Replaces every match of a string or regex `pattern` by `content` in each token.

    >>> Replace({"String": "▁"}, " ").decode(["▁Hey", "▁you"])
    ' Hey you'
    """

    def __init__(self, pattern: dict | str, content: str, *, where: str = "decoder"):
        if isinstance(pattern, str):
            pattern = {"String": pattern}
        if not isinstance(pattern, dict) or len(pattern) != 1 or next(iter(pattern)) not in ("String", "Regex"):
            raise ValueError(f"{where}.pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}, got {pattern!r}")
        (kind, value), = pattern.items()
        self.pattern, self.content = pattern, content
        try:
            self._re = regex.compile(regex.escape(value) if kind == "String" else value)
        except regex.error as e:
            raise ValueError(f"{where}.pattern {value!r} is not a valid regex: {e}") from None

    @classmethod
    def from_config(cls, config: dict, *, where: str = "decoder") -> Replace:
        return cls(config.get("pattern"), config.get("content", ""), where=where)

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out = []
        for token in tokens:
            pieces = []
            pos = 0
            for s, e in find_matches(self._re, token):
                pieces.append(token[pos:s])
                pieces.append(self.content)  # literal: no group expansion, as the library
                pos = e
            pieces.append(token[pos:])
            out.append("".join(pieces))
        return out


class Fuse(Decoder):
    """Concatenates all tokens into one (so later decoders see a single string)."""

    @classmethod
    def from_config(cls, config: dict, *, where: str = "decoder") -> Fuse:
        return cls()

    def decode_chain(self, tokens: list[str]) -> list[str]:
        return ["".join(tokens)]


class Strip(Decoder):
    """Removes up to `start` leading and `stop` trailing `content` characters from each token.

    >>> Strip(" ", 1, 0).decode([" Hey", " friend"])
    'Heyfriend'
    """

    def __init__(self, content: str = " ", start: int = 0, stop: int = 0):
        if len(content) != 1:
            raise ValueError(f"Strip content must be one character, got {content!r}")
        self.content, self.start, self.stop = content, start, stop

    @classmethod
    def from_config(cls, config: dict, *, where: str = "decoder") -> Strip:
        return cls(config.get("content", " "), int(config.get("start", 0)), int(config.get("stop", 0)))

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out = []
        c = self.content
        for token in tokens:
            n = len(token)
            start_cut = 0
            for i in range(min(self.start, n)):
                if token[i] != c:
                    break
                start_cut = i + 1
            stop_cut = n
            for i in range(self.stop):
                index = n - i - 1
                if index < 0:
                    # The library indexes out of bounds here (a Rust panic): fail loudly instead.
                    raise ValueError(f"Strip decoder: cannot strip {self.stop} trailing {c!r} from {token!r}")
                if token[index] != c:
                    break
                stop_cut = index
            if stop_cut < start_cut:
                raise ValueError(f"Strip decoder: start and stop cuts overlap in {token!r}")
            out.append(token[start_cut:stop_cut])
        return out


def _byte_token(token: str) -> int | None:
    """`"<0x41>"` → 0x41; anything else → None (the library accepts exactly `<0x` + 2 hex digits + `>`)."""
    if len(token) != 6 or not token.isascii() or not token.startswith("<0x") or token[5] != ">":
        return None
    digits = token[3:5]
    hexdigits = "0123456789abcdefABCDEF"
    # Rust's `u8::from_str_radix` also takes a leading '+': "<0x+A>" is byte 0x0A.
    if digits[1] in hexdigits and (digits[0] in hexdigits or digits[0] == "+"):
        return int(digits.lstrip("+"), 16)
    return None


class ByteFallback(Decoder):
    """Runs of `<0xXX>` tokens become their UTF-8 text, or one U+FFFD per byte if invalid."""

    @classmethod
    def from_config(cls, config: dict, *, where: str = "decoder") -> ByteFallback:
        return cls()

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out: list[str] = []
        pending = bytearray()

        def flush() -> None:
            try:
                out.append(pending.decode("utf-8"))
            except UnicodeDecodeError:
                out.extend(["\ufffd"] * len(pending))
            pending.clear()

        for token in tokens:
            b = _byte_token(token)
            if b is not None:
                pending.append(b)
                continue
            if pending:
                flush()
            out.append(token)
        if pending:
            flush()
        return out


class Sequence(Decoder):
    """Decoders applied in order, each to the previous one's token list."""

    def __init__(self, decoders: list[Decoder]):
        self.decoders = decoders

    @classmethod
    def from_config(cls, config: dict, *, where: str = "decoder") -> Sequence:
        items = config.get("decoders")
        if not isinstance(items, list):
            raise ValueError(f"{where}.decoders must be a list")
        return cls([build_decoder(c, where=f"{where}.decoders[{i}]") for i, c in enumerate(items)])

    def decode_chain(self, tokens: list[str]) -> list[str]:
        for d in self.decoders:
            tokens = d.decode_chain(tokens)
        return tokens


_DECODERS = {
    "ByteLevel": ByteLevel,
    "WordPiece": WordPiece,
    "Metaspace": Metaspace,
    "BPEDecoder": BPEDecoder,
    "CTC": CTC,
    "Replace": Replace,
    "Fuse": Fuse,
    "Strip": Strip,
    "ByteFallback": ByteFallback,
    "Sequence": Sequence,
}


def build_decoder(config: dict, *, where: str = "decoder") -> Decoder:
    """The decoder for tokenizer.json's `"decoder"` object, looked up on its `"type"`.

    >>> build_decoder({"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "Bogus"}]})
    Traceback (most recent call last):
    ValueError: unknown decoder.decoders[1].type 'Bogus'; expected one of ByteLevel, WordPiece, Metaspace, BPEDecoder, CTC, Replace, Fuse, Strip, ByteFallback, Sequence
    """
    if not isinstance(config, dict):
        raise ValueError(f"{where} must be an object, got {type(config).__name__}")
    kind = config.get("type")
    cls = _DECODERS.get(kind)
    if cls is None:
        raise ValueError(f"unknown {where}.type {kind!r}; expected one of {', '.join(_DECODERS)}")
    return cls.from_config(config, where=where)
