"""The eager side of a comparison: transformers' model in PyTorch, driven with the graph's exact inputs.

It reuses the exporter's `DecoderWithCache` wrapper, the very module that was traced, so eager and compiled
see identical inputs (position ids, attention mask, explicit past tensors) and return the same outputs.
"""

from __future__ import annotations

import numpy as np


class EagerDecoder:
    def __init__(self, model):
        import torch

        from modelkiln.exporter.decoder import DecoderWithCache, probe_kv_layout

        self.torch = torch
        self.model = model
        self.layout = probe_kv_layout(model)
        self.wrapper = DecoderWithCache(model, self.layout.num_layers).eval()

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                cache: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        torch = self.torch
        dtype = next(self.model.parameters()).dtype
        past = tuple(torch.from_numpy(np.ascontiguousarray(c)).to(dtype) for c in cache)
        with torch.no_grad():
            logits, *present = self.wrapper(torch.from_numpy(input_ids), torch.from_numpy(attention_mask),
                                            torch.from_numpy(position_ids), past)
        return logits.float().numpy(), [p.float().numpy() for p in present]

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        lay = self.layout
        cache = []
        for _ in range(lay.num_layers):
            cache.append(np.zeros((batch, lay.num_kv_heads, 0, lay.key_head_dim), np.float32))
            cache.append(np.zeros((batch, lay.num_kv_heads, 0, lay.head_dim), np.float32))
        return cache

    def generate_greedy(self, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int,
                        eos_token_ids: list[int], pad_token_id: int) -> np.ndarray:
        """transformers' own `generate` (greedy, exactly `max_new_tokens` new tokens unless EOS ends all rows)."""
        from transformers import GenerationConfig

        torch = self.torch
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                  min_new_tokens=max_new_tokens, eos_token_id=eos_token_ids or None,
                                  pad_token_id=pad_token_id)
        with torch.no_grad():
            out = self.model.generate(torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
                                      generation_config=config)
        return out[:, input_ids.shape[1]:].numpy()
