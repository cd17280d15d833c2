"""The validation cases for a text-generation artifact, as plain data.

Each case is a frozen spec; `runner.py` turns it into eager + compiled runs. The default plan
(`default_cases`) covers what a decoder graph must get right:

    prefill[b=1,s=8]            prefill[b=2,s=16]          prefill[b=4,s=7,left-pad]
    decode[b=1,past=1]          decode[b=1,past=17]        decode[b=2,past=17,left-pad]   decode[b=1,past=<long>]
    prompts[b=N,left-pad]       (real prompts through the checkpoint's tokenizer, chat template when it has one)
    generate[greedy,prompt=i]   (32 greedy tokens: transformers.generate vs the runtime's KV-cache loop)
"""

from __future__ import annotations

from dataclasses import dataclass

PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea,",
)
CHAT_PROMPTS = (
    "What is the boiling point of water at sea level? Answer in one sentence.",
    "Write a haiku about compilers.",
)


@dataclass(frozen=True)
class ForwardCase:
    """One graph call: random tokens, `past` tokens of eager-computed cache, `seq` new tokens per row.

    `pad` lists how many left-padding positions each row has (over past + seq); () means none.
    """

    kind: str  # "prefill" | "decode"
    batch: int
    seq: int
    past: int = 0
    pad: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        shape = f"b={self.batch},s={self.seq}" if self.kind == "prefill" else f"b={self.batch},past={self.past}"
        return f"{self.kind}[{shape}{',left-pad' if any(self.pad) else ''}]"


@dataclass(frozen=True)
class PromptCase:
    """Real prompts tokenized with the reference tokenizer, batched with left padding, one prefill."""

    texts: tuple[str, ...]
    chat: bool

    @property
    def name(self) -> str:
        return f"prompts[{'chat,' if self.chat else ''}b={len(self.texts)},left-pad]"


@dataclass(frozen=True)
class GenerationCase:
    """Greedy generation of `new_tokens` tokens, compared token for token."""

    text: str
    chat: bool
    new_tokens: int
    index: int

    @property
    def name(self) -> str:
        return f"generate[greedy,{self.new_tokens} tokens,prompt={self.index}]"


def default_cases(context_length: int | None, has_tokenizer: bool, has_chat_template: bool,
                  new_tokens: int = 32, long_past: int = 512):
    long_past = min(long_past, (context_length or 2048) - 2)
    cases = [
        ForwardCase("prefill", batch=1, seq=8),
        ForwardCase("prefill", batch=2, seq=16),
        ForwardCase("prefill", batch=4, seq=7, pad=(0, 2, 4, 6)),
        ForwardCase("decode", batch=1, seq=1, past=1),
        ForwardCase("decode", batch=1, seq=1, past=17),
        ForwardCase("decode", batch=2, seq=1, past=17, pad=(0, 5)),
        ForwardCase("decode", batch=1, seq=1, past=long_past),
    ]
    if has_tokenizer:
        cases.append(PromptCase(PROMPTS, chat=False))
        if has_chat_template:
            cases.append(PromptCase(CHAT_PROMPTS, chat=True))
        texts = [(t, False) for t in PROMPTS[:1]] + ([(t, True) for t in CHAT_PROMPTS[:1]] if has_chat_template
                                                     else [(PROMPTS[2], False)])
        cases += [GenerationCase(t, chat, new_tokens, i) for i, (t, chat) in enumerate(texts)]
    else:
        cases.append(GenerationCase("", False, new_tokens, 0))  # random prompt ids
    return cases
