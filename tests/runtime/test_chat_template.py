"""Chat templates render exactly like transformers' apply_chat_template, inside the sandbox."""

from __future__ import annotations

import pytest

from modelkiln.runtime.chat_template import ChatTemplate
from modelkiln.runtime.errors import ModelkilnError

CHATS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3 — in «French»?"}],
    [{"role": "user", "content": "Code:\n```py\nprint('<b>&')\n```"}],
]
TOOLS_TEMPLATE = (
    "{% if tools %}Tools: {{ tools | tojson }}\n{% endif %}{% if documents %}{% for d in documents %}"
    "[{{ d.title }}] {{ d.text }}\n{% endfor %}{% endif %}{% for m in messages %}"
    "{% if m.role == 'system' and not loop.first %}{{ raise_exception('system must come first') }}{% endif %}"
    "{{ bos_token }}{{ m.role }}: {{ m.content }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather <now>",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
DOCS = [{"title": "Paris", "text": "Capital of France."}]


@pytest.fixture(scope="module")
def smollm2_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from modelkiln.exporter.embedded import resolve_embedded

    gguf = resolve_embedded("smollm2")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_template_matches_transformers(smollm2_tokenizer, chat, add_generation_prompt):
    tok = smollm2_tokenizer
    ours = ChatTemplate(tok.chat_template, tok.special_tokens_map)
    expected = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours.render(chat, add_generation_prompt=add_generation_prompt) == expected


def test_tools_documents_and_special_tokens_match_transformers(tiny_checkpoint):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint("llama"))
    tok.chat_template = TOOLS_TEMPLATE
    ours = ChatTemplate(TOOLS_TEMPLATE, tok.special_tokens_map)
    for chat in CHATS[:1] + CHATS[2:]:
        expected = tok.apply_chat_template(chat, tools=TOOLS, documents=DOCS, tokenize=False,
                                           add_generation_prompt=True)
        assert ours.render(chat, tools=TOOLS, documents=DOCS, add_generation_prompt=True) == expected
        assert '"<now>"' not in expected and "<now>" in expected  # tojson does not HTML-escape


def test_continue_final_message_matches_transformers(smollm2_tokenizer):
    tok = smollm2_tokenizer
    chat = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "The colour is"}]
    expected = tok.apply_chat_template(chat, tokenize=False, continue_final_message=True)
    assert ChatTemplate(tok.chat_template).render(chat, continue_final_message=True) == expected


def test_raise_exception_is_a_clear_error():
    chat = [{"role": "user", "content": "x"}, {"role": "system", "content": "late"}]
    with pytest.raises(ModelkilnError, match="system must come first"):
        ChatTemplate(TOOLS_TEMPLATE).render(chat)


@pytest.mark.parametrize("escape", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{% set ns = namespace() %}{% set ns._x = 1 %}",
    "{{ messages.append(1) }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
])
def test_sandbox_escapes_fail_clearly(escape):
    with pytest.raises(ModelkilnError, match="sandbox|refused"):
        ChatTemplate(escape).render(CHATS[0])


def test_strftime_now_available():
    from datetime import datetime

    assert ChatTemplate("{{ strftime_now('%Y') }}").render(CHATS[0]) == str(datetime.now().year)


@pytest.mark.parametrize("bad, fragment", [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    ([{"content": "no role"}], "no 'role'"),
    ([{"role": "user"}], "no 'content'"),
    (["just a string"], "expected a dict"),
])
def test_malformed_messages(bad, fragment):
    with pytest.raises(ModelkilnError, match=fragment):
        ChatTemplate(TOOLS_TEMPLATE).render(bad)


def test_syntax_error_is_named():
    with pytest.raises(ModelkilnError, match="syntax error at line 1"):
        ChatTemplate("{% for m in messages %}")
