"""The HF-style call sets the backend's truncation/padding per call; concurrent calls with different settings
must still each get their own result."""

from __future__ import annotations

import sys
import threading

from modelkiln.runtime.tokenizer import AutoTokenizer


def test_concurrent_calls_with_different_truncation(tiny_checkpoint):
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint("llama"))
    text = "The capital of France is Paris. " * 8
    full = tok(text)["input_ids"]
    short = tok(text, truncation=True, max_length=5)["input_ids"]
    assert len(short) == 5 < len(full)
    errors = []

    def worker(truncate: bool):
        for _ in range(200):
            got = tok(text, truncation=True, max_length=5)["input_ids"] if truncate else tok(text)["input_ids"]
            if got != (short if truncate else full):
                errors.append(truncate)

    threads = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads constantly, so an unguarded set-then-encode would interleave
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
