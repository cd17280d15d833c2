"""modelkiln.runtime.pipeline("text-generation") equals transformers.pipeline on SmolLM2-135M-Instruct (fp32)."""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.slow

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about compilers."}],
    [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "List three fruits."}],
    [{"role": "user", "content": "Explain what a KV cache is in one paragraph."}],
    [{"role": "user", "content": "Translate 'good morning' into Spanish and German."}],
]


@pytest.fixture(scope="module")
def hf_pipe():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from modelkiln.exporter.embedded import resolve_embedded

    gguf = resolve_embedded("smollm2")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    return pipeline("text-generation", model=model, tokenizer=tok)


@pytest.fixture(scope="module")
def ours(smollm2_artifact):
    from modelkiln.runtime import pipeline

    return pipeline("text-generation", model=smollm2_artifact)


@pytest.mark.parametrize("chat", CHATS, ids=[f"chat{i}" for i in range(len(CHATS))])
def test_greedy_chat_64_tokens(hf_pipe, ours, chat):
    kwargs = dict(max_new_tokens=64, do_sample=False)
    assert ours(chat, **kwargs) == hf_pipe(chat, **kwargs)


def test_beam_search_4(hf_pipe, ours):
    kwargs = dict(max_new_tokens=64, do_sample=False, num_beams=4)
    for chat in CHATS[:2]:
        assert ours(chat, **kwargs) == hf_pipe(chat, **kwargs)


def test_batch_4_left_padding(hf_pipe, ours):
    kwargs = dict(max_new_tokens=64, do_sample=False, batch_size=4)
    assert ours(CHATS[:4], **kwargs) == hf_pipe(CHATS[:4], **kwargs)


def test_plain_text_and_options(hf_pipe, ours):
    for kwargs in (dict(max_new_tokens=24, do_sample=False),
                   dict(max_new_tokens=24, do_sample=False, return_full_text=False),
                   dict(max_new_tokens=24, do_sample=False, repetition_penalty=1.3, no_repeat_ngram_size=3),
                   dict(max_new_tokens=24, do_sample=False, num_beams=3, num_return_sequences=2,
                        length_penalty=0.5)):
        prompts = ["The capital of France is", "def fibonacci(n):"]
        assert ours(prompts, **kwargs) == hf_pipe(prompts, **kwargs), kwargs


def test_stream_equals_call(ours):
    chat = CHATS[0]
    streamed = "".join(ours.stream(chat, max_new_tokens=32, do_sample=False))
    answer = ours(chat, max_new_tokens=32, do_sample=False)[0]["generated_text"][-1]["content"]
    assert streamed == answer


def test_concurrent_threads(ours):
    expected = [ours(c, max_new_tokens=16, do_sample=False) for c in CHATS[:3]]
    results: dict[int, object] = {}

    def worker(i):
        results[i] = ours(CHATS[i % 3], max_new_tokens=16, do_sample=False)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(6)] == expected + expected


def test_seeded_sampling_reproducible(ours):
    a = ours(CHATS[1], max_new_tokens=24, do_sample=True, top_p=0.9, seed=7)
    b = ours(CHATS[1], max_new_tokens=24, do_sample=True, top_p=0.9, seed=7)
    c = ours(CHATS[1], max_new_tokens=24, do_sample=True, top_p=0.9, seed=8)
    assert a == b and a != c


def test_stop_strings(ours):
    text = ours("The capital of France is", max_new_tokens=40, do_sample=False, stop_strings=["."])[0]
    generated = text["generated_text"][len("The capital of France is"):]
    assert generated.count(".") == 1 and generated.rstrip().endswith(".")
