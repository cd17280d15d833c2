"""`pipeline("text-generation", model=ARTIFACT)`: transformers' TextGenerationPipeline over an artifact.

    pipe = pipeline("text-generation", model="artifacts/smollm2")
    pipe("The capital of France is", max_new_tokens=8, do_sample=False)
    # [{"generated_text": "The capital of France is Paris. ..."}]
    pipe([{"role": "user", "content": "Hi"}], max_new_tokens=16, do_sample=False)
    # [{"generated_text": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! ..."}]}]
    for chunk in pipe.stream([{"role": "user", "content": "Hi"}], max_new_tokens=16):
        print(chunk, end="")

Same inputs (a string, a list of strings, a chat, a list of chats), keyword arguments and output shapes as
transformers 5.x. Defaults as transformers takes them: the artifact's generation_config.json first, then the
pipeline's own (max_new_tokens=256, do_sample=True, temperature=0.7; the sampling ones only when sampling).
A loaded pipeline is safe to call from several threads at once.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from modelkiln.runtime.artifact import Artifact
from modelkiln.runtime.chat_template import ChatTemplate, check_messages
from modelkiln.runtime.decoder import DecoderLM
from modelkiln.runtime.errors import ModelkilnError
from modelkiln.runtime.generation import generate
from modelkiln.runtime.generation_config import GenerationConfig
from modelkiln.runtime.tokenizer import DecodeStream, PreTrainedTokenizer

# transformers' TextGenerationPipeline._default_generation_config
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
_SAMPLING_PARAMS = {"temperature", "top_k", "top_p", "min_p"}
_GENERATION_KEYS = {"max_new_tokens", "min_new_tokens", "max_length", "min_length", "do_sample", "temperature",
                    "top_k", "top_p", "min_p", "repetition_penalty", "no_repeat_ngram_size", "num_beams",
                    "length_penalty", "early_stopping", "num_return_sequences", "eos_token_id", "pad_token_id",
                    "stop_strings", "seed"}
_CALL_KEYS = {"return_full_text", "return_text", "return_tensors", "add_special_tokens", "truncation", "max_length",
              "prefix", "continue_final_message", "tools", "documents", "clean_up_tokenization_spaces",
              "skip_special_tokens", "batch_size", "streamer", "chat_template_kwargs"}
_SPECIAL = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _is_chat(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], Mapping)


class TextGenerationPipeline:
    task = "text-generation"

    def __init__(self, artifact: Artifact, providers: list[str] | None = None, **defaults: Any):
        self.artifact = artifact
        if artifact.file("tokenizer.json") is None:
            raise ModelkilnError(f"artifact {artifact.root} has no tokenizer.json; text-generation needs one")
        # onnxruntime builds the session (weight pre-packing: most of a cold start) without holding the GIL, so
        # the tokenizer and chat template load in this thread meanwhile
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelkiln-load") as pool:
            model = pool.submit(DecoderLM, artifact, providers)
            self._load_text_side(artifact, defaults)
            self.model = model.result()

    def _load_text_side(self, artifact: Artifact, defaults: Mapping[str, Any]) -> None:
        """Tokenizer, chat template and generation defaults (everything but the graph)."""
        self.tokenizer = PreTrainedTokenizer.from_pretrained(artifact.root)
        gen = artifact.manifest.get("generation", {})
        self.context_length = gen.get("context_length")
        self._template = None
        if self.tokenizer.chat_template:
            specials = {name: getattr(self.tokenizer, name) for name in _SPECIAL
                        if getattr(self.tokenizer, name) is not None}
            self._template = ChatTemplate(self.tokenizer.chat_template, specials)
        path = artifact.file("generation_config.json")
        raw = json.loads(path.read_text(encoding="utf-8")) if path else {}
        self.model_generation_config = GenerationConfig.from_dict(raw)
        # what the artifact "sets" (transformers' to_diff_dict): keys present with a non-default value
        default = GenerationConfig()
        self._model_set = {k for k in raw if k in _GENERATION_KEYS and raw[k] is not None
                           and getattr(self.model_generation_config, k) != getattr(default, k)}
        self._init_kwargs = self._check_kwargs(defaults)

    # -- options ---------------------------------------------------------------------------------------
    @staticmethod
    def _check_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(kwargs) - _GENERATION_KEYS - _CALL_KEYS)
        if unknown:
            raise ModelkilnError(f"unknown text-generation option {unknown[0]!r}; valid options: "
                                 f"{', '.join(sorted(_GENERATION_KEYS | _CALL_KEYS))}")
        return dict(kwargs)

    def generation_config(self, **kwargs: Any) -> GenerationConfig:
        """The config one call decodes with, layered like transformers' pipeline: call kwargs over init kwargs
        over the artifact's generation_config.json over the pipeline defaults."""
        user = {k: v for k, v in kwargs.items() if k in _GENERATION_KEYS}
        set_params = self._model_set | set(user)
        added = {k: v for k, v in PIPELINE_DEFAULTS.items()
                 if k not in set_params and not (k == "max_new_tokens" and "max_length" in set_params)}
        sampling = user.get("do_sample", added.get("do_sample", self.model_generation_config.do_sample))
        if not sampling:
            added = {k: v for k, v in added.items() if k not in _SAMPLING_PARAMS}
        if self.tokenizer.pad_token_id is not None and "pad_token_id" not in user:
            added["pad_token_id"] = self.tokenizer.pad_token_id
        return self.model_generation_config.merged(**{**added, **user})

    # -- inputs ----------------------------------------------------------------------------------------
    def _encode(self, prompt: Any, opts: Mapping[str, Any]) -> tuple[list[int], Any]:
        if _is_chat(prompt):
            check_messages(prompt)
            if self._template is None:
                raise ModelkilnError("this artifact's tokenizer has no chat template; pass plain text prompts")
            cont = opts.get("continue_final_message")
            if cont is None:
                cont = prompt[-1].get("role") == "assistant"
            text = self._template.render(list(prompt), add_generation_prompt=not cont, continue_final_message=cont,
                                         tools=opts.get("tools"), documents=opts.get("documents"),
                                         **(opts.get("chat_template_kwargs") or {}))
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        elif isinstance(prompt, str):
            kwargs = {k: opts[k] for k in ("add_special_tokens", "truncation") if opts.get(k) is not None}
            if opts.get("truncation"):
                kwargs["max_length"] = self._prompt_budget(opts)
            ids = self.tokenizer(opts.get("prefix", "") + prompt, **kwargs)["input_ids"]
        else:
            raise ModelkilnError(f"a text-generation input must be a string or a chat (list of role/content dicts), "
                                 f"got {type(prompt).__name__}")
        return list(ids), prompt

    def _prompt_budget(self, opts: Mapping[str, Any]) -> int:
        if not self.context_length:
            raise ModelkilnError("truncation=True needs the artifact's context length, which it does not record")
        config = self.generation_config(**opts)
        return self.context_length - (config.max_new_tokens or 0)

    # -- running ---------------------------------------------------------------------------------------
    def __call__(self, inputs: Any, **kwargs: Any):
        opts = {**self._init_kwargs, **self._check_kwargs(kwargs)}
        single = isinstance(inputs, str) or _is_chat(inputs) or not isinstance(inputs, (list, tuple))
        prompts = [inputs] if single else list(inputs)
        if not prompts:
            raise ModelkilnError("no inputs: pass a string, a chat, or a non-empty list of them")
        batch_size = int(opts.get("batch_size") or 1)
        results = []
        for start in range(0, len(prompts), batch_size):
            results += self._run_batch(prompts[start:start + batch_size], opts)
        return results[0] if single else results

    def _run_batch(self, prompts: Sequence[Any], opts: Mapping[str, Any]) -> list[list[dict]]:
        config = self.generation_config(**opts)
        encoded = [self._encode(p, opts) for p in prompts]
        if any(not ids for ids, _ in encoded):
            raise ModelkilnError("a prompt tokenized to nothing; pass non-empty text")
        input_ids, mask = self._left_pad([ids for ids, _ in encoded], config)
        streamer = opts.get("streamer")
        on_token = stop = None
        if streamer is not None or config.stop_strings:
            if streamer is not None and (len(prompts) > 1 or config.num_beams > 1 or config.num_return_sequences > 1):
                raise ModelkilnError("streamer works with one prompt, one returned sequence and no beam search")
            on_token, stop = self._text_watchers(config, streamer)
        new = generate(self.model, input_ids, mask, config, context_length=self.context_length,
                       on_token=on_token, stop=stop)
        if streamer is not None:
            streamer(None)  # end of stream
        per_prompt = config.num_return_sequences
        return [[self._record(encoded[i][1], new[i * per_prompt + j], opts) for j in range(per_prompt)]
                for i in range(len(prompts))]

    def _left_pad(self, rows: list[list[int]], config: GenerationConfig) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(r) for r in rows)
        pad = config.effective_pad_token_id or 0
        input_ids = np.full((len(rows), width), pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row):] = row
            mask[i, width - len(row):] = 1
        return input_ids, mask

    def _text_watchers(self, config: GenerationConfig, streamer: Callable[[str | None], None] | None):
        """Per-row streaming detokenizers: text for the streamer, and stop strings matched on text."""
        streams: dict[int, DecodeStream] = {}
        texts: dict[int, str] = {}
        last_len: dict[int, int] = {}
        skip = streamer is not None

        def on_token(rows: np.ndarray, tokens: np.ndarray) -> None:
            for row, token in zip(rows.tolist(), tokens.tolist()):
                stream = streams.setdefault(row, DecodeStream(skip_special_tokens=skip))
                piece = stream.step(self.tokenizer.backend_tokenizer, token)
                last_len[row] = len(texts.get(row, ""))
                if piece:
                    texts[row] = texts.get(row, "") + piece
                    if streamer is not None:
                        streamer(piece)

        def stop(rows: np.ndarray, new_tokens: np.ndarray) -> np.ndarray:
            hits = np.zeros(len(rows), dtype=bool)
            for i, row in enumerate(rows.tolist()):
                if row in texts:  # sampling loop: text kept incrementally
                    text, before = texts[row], last_len.get(row, 0)
                else:  # beam search hands whole candidate sequences
                    text = self.tokenizer.decode(new_tokens[i].tolist())
                    before = len(self.tokenizer.decode(new_tokens[i, :-1].tolist()))
                # transformers' rule: the stop string must overlap the last token
                hits[i] = any(s in text[max(0, before - len(s) + 1):] for s in config.stop_strings or ())
            return hits

        return on_token, (stop if config.stop_strings else None)

    def _record(self, prompt: Any, tokens: np.ndarray, opts: Mapping[str, Any]) -> dict:
        if opts.get("return_tensors"):
            return {"generated_token_ids": tokens.tolist()}
        skip = opts.get("skip_special_tokens")
        text = self.tokenizer.decode(tokens.tolist(), skip_special_tokens=True if skip is None else skip,
                                     clean_up_tokenization_spaces=opts.get("clean_up_tokenization_spaces"))
        full = opts.get("return_full_text", True)
        if not full:
            return {"generated_text": text}
        if isinstance(prompt, str):
            return {"generated_text": prompt + text}
        messages = [dict(m) for m in prompt]
        cont = opts.get("continue_final_message")
        if cont is None:
            cont = messages[-1].get("role") == "assistant"
        if cont:
            messages[-1] = {"role": messages[-1]["role"], "content": messages[-1]["content"] + text}
        else:
            messages.append({"role": "assistant", "content": text})
        return {"generated_text": messages}

    # -- streaming -------------------------------------------------------------------------------------
    def stream(self, inputs: Any, **kwargs: Any) -> Iterator[str]:
        """Yield the answer's text as it is generated (one prompt): `"".join(pipe.stream(x))` is the answer."""
        if not (isinstance(inputs, str) or _is_chat(inputs)):
            raise ModelkilnError("stream() takes one prompt (a string or a chat)")
        chunks: queue.Queue = queue.Queue()
        errors: list[BaseException] = []

        def run():
            try:
                self(inputs, **kwargs, streamer=chunks.put)
            except BaseException as e:  # handed to the consumer thread below
                errors.append(e)
                chunks.put(None)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        while (chunk := chunks.get()) is not None:
            yield chunk
        worker.join()
        if errors:
            raise errors[0]
