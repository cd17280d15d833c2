"""Render chat templates the way transformers' `apply_chat_template` does, in a sandbox.

    template = ChatTemplate(tokenizer_config["chat_template"], special_tokens={"bos_token": "<s>", ...})
    template.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    # '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'

Chat templates come from checkpoints: untrusted code. They run in jinja2's `ImmutableSandboxedEnvironment`
with the same globals transformers provides (`raise_exception`, `strftime_now`, a `tojson` that does not
HTML-escape, `namespace`, `dict`) and nothing else; everything handed to a template is rebuilt from plain JSON
types first, so no caller object with dangerous methods ever reaches it. A template that tries to escape the
sandbox fails with a `ModelkilnError` naming the problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from modelkiln.runtime.errors import ModelkilnError


def _plain(value: Any) -> Any:
    """Rebuild a value from exact JSON types (str/int/float/bool/None, dict, list, tuple); anything else
    becomes an inert placeholder like "<ndarray>" (templates only test such keys for presence)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return _plain(value.item())  # numpy scalars
    return f"<{type(value).__name__}>"


@lru_cache(maxsize=16)
def _compile(source: str):
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja's own tojson HTML-escapes (<, >, &, '); chat templates expect plain JSON
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class TemplateDict:
        """`dict(...)` in templates, without exposing the `dict` type itself."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        """`namespace(...)` that refuses underscore attributes (a path to CPython internals)."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now, dict=TemplateDict(),
                       namespace=TemplateNamespace)
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ModelkilnError(f"the chat template has a syntax error at line {e.lineno}: {e.message}") from None


class ChatTemplate:
    def __init__(self, source: str, special_tokens: Mapping[str, str] | None = None):
        if not isinstance(source, str) or not source:
            raise ModelkilnError("this tokenizer has no chat template; pass plain text, or a template")
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self._template = _compile(source)

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = False,
               tools: Sequence[Mapping[str, Any]] | None = None, documents: Sequence[Mapping[str, Any]] | None = None,
               continue_final_message: bool = False, **kwargs: Any) -> str:
        """One conversation → the prompt string (special tokens included as text, like transformers)."""
        import jinja2

        check_messages(messages)
        if tools is not None and not all(isinstance(t, Mapping) for t in tools):
            raise ModelkilnError("tools must be JSON-schema dicts (callables are converted by transformers only)")
        if documents is not None and not all(isinstance(d, Mapping) for d in documents):
            raise ModelkilnError("documents must be a list of dicts with 'title' and 'text' keys")
        chat = _plain(list(messages))
        tag = "CONTINUE_FINAL_MESSAGE_TAG "
        if continue_final_message:
            if not isinstance(chat[-1].get("content"), str):
                raise ModelkilnError("continue_final_message needs a final message with text content")
            final = chat[-1]["content"]
            chat[-1]["content"] = final + tag
        context = {**self.special_tokens, **_plain(kwargs)}
        try:
            text = self._template.render(messages=chat, tools=_plain(tools), documents=_plain(documents),
                                         add_generation_prompt=add_generation_prompt, **context)
        except jinja2.exceptions.SecurityError as e:
            raise ModelkilnError(f"the chat template tried to leave its sandbox: {e}") from None
        except jinja2.exceptions.TemplateError as e:
            raise ModelkilnError(f"the chat template refused this conversation: {e}") from None
        if continue_final_message:
            at = text.rindex(tag.strip())
            text = text[:at] if text[at:at + len(tag)] == tag else text[:at].rstrip()
        return text


def check_messages(messages: Any) -> None:
    """A chat is a non-empty list of {"role": str, "content": ...} dicts; say exactly what is wrong otherwise."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ModelkilnError("a chat must be a non-empty list of {'role': ..., 'content': ...} messages")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ModelkilnError(f"chat message {i} is {type(message).__name__}, expected a dict with role/content")
        if not isinstance(message.get("role"), str):
            raise ModelkilnError(f"chat message {i} has no 'role' string (e.g. 'user', 'assistant', 'system')")
        if "content" not in message and "tool_calls" not in message:
            raise ModelkilnError(f"chat message {i} ({message['role']}) has no 'content'")
