"""Generation options as one frozen dataclass, read the way transformers 5.23 reads generation_config.json.

    config = GenerationConfig.from_dict(json.load(open("artifact/generation_config.json")))
    config = config.merged(max_new_tokens=64, do_sample=True, top_p=0.9)   # a new object; unknown kwargs raise
    config.validate()

Defaults are transformers' `GenerationConfig._get_default_generation_params()` (top_k=50, temperature=1.0, ...):
a field the JSON leaves out, or sets to null, takes that default, as `generate` fills unset fields. A keyword set to
None in `merged` instead switches the rule off (top_k=None → no top-k filter), as passing None to `generate` does.

Errors are `ModelkilnError` (a `ValueError`) with one line naming the value and the fix. `validate` raises
where transformers raises (its config validation, and the logits-processor constructors it builds at generate
time), plus a few values transformers silently ignores that are always a caller mistake (negative sizes, top_p > 1);
those are marked "stricter than transformers" below.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

from modelkiln.runtime.errors import ModelkilnError

# transformers' default max_length (20) counts the prompt only when nothing sets a length; then it means 20 new tokens.
DEFAULT_NEW_TOKENS = 20

# Keys of generation_config.json that change which tokens transformers generates but that modelkiln does not
# implement, with the value that makes each a no-op. A JSON that sets one to anything else is refused, so an
# artifact never silently decodes differently from its source model.
_UNSUPPORTED_NEUTRAL: dict[str, Any] = {
    "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "top_h": None,
    "encoder_repetition_penalty": 1.0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None,
    "sequence_bias": None, "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "guidance_scale": 1.0, "renormalize_logits": False, "watermarking_config": None, "num_beam_groups": 1,
    "diversity_penalty": 0.0, "penalty_alpha": None, "dola_layers": None, "constraints": None,
    "force_words_ids": None, "token_healing": False,
}

# What a None passed to `merged` means for fields that cannot hold None: the value that disables the rule
# (transformers skips a processor whose parameter is None).
_NONE_MEANS = {"min_length": 0, "do_sample": False, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
               "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "num_beams": 1, "length_penalty": 1.0,
               "early_stopping": False, "num_return_sequences": 1}

_FLOAT_FIELDS = ("temperature", "top_p", "min_p", "repetition_penalty", "length_penalty")
_INT_FIELDS = ("max_new_tokens", "min_new_tokens", "max_length", "min_length", "top_k", "no_repeat_ngram_size",
               "num_beams", "num_return_sequences", "pad_token_id", "bos_token_id", "seed")


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode. `GenerationConfig()` is transformers' `generate()` with no generation_config.json:

    >>> GenerationConfig(eos_token_id=[2, 7]).eos_token_id
    (2, 7)
    >>> GenerationConfig().merged(top_k=None).top_k      # None switches top-k off
    0
    """

    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    max_length: int | None = None  # prompt + new tokens; None = 20 new tokens (capped by the context), as transformers
    min_length: int = 0  # prompt + new tokens below which EOS is masked (min_new_tokens takes precedence)
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    eos_token_id: tuple[int, ...] | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    stop_strings: tuple[str, ...] | None = None
    seed: int | None = None

    def __post_init__(self):
        # Normalize the containers so equal configs compare (and hash) equal: eos 2 / [2] / (2,) → (2,).
        eos = self.eos_token_id
        if eos is not None and not isinstance(eos, tuple):
            eos = (eos,) if isinstance(eos, numbers.Integral) else tuple(eos)
        object.__setattr__(self, "eos_token_id", eos)
        stops = self.stop_strings
        if stops is not None and not isinstance(stops, tuple):
            stops = (stops,) if isinstance(stops, str) else tuple(stops)
        object.__setattr__(self, "stop_strings", stops)
        # An int where a float is expected (temperature=2) is what the caller meant; transformers' processors would
        # refuse it with a type error, which helps nobody. Bools are left alone so validate() can name them.
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        """A generation_config.json dict → config. Known keys are read, null/missing ones take transformers'
        defaults, keys that do not change the tokens (use_cache, transformers_version, ...) are ignored, and a
        decoding rule modelkiln lacks raises.

        >>> GenerationConfig.from_dict({"eos_token_id": [2, 3], "temperature": 0.6, "use_cache": True}).temperature
        0.6
        """
        for key, neutral in _UNSUPPORTED_NEUTRAL.items():
            value = data.get(key)
            if value is not None and value != neutral:
                raise ModelkilnError(
                    f"generation_config.json sets {key}={value!r}, a decoding rule modelkiln does not implement; "
                    f"remove it or set it to {neutral!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        config = cls(**values)
        config.validate()
        return config

    def merged(self, **kwargs: Any) -> GenerationConfig:
        """A new config with `kwargs` applied (call-time options override the artifact's defaults).

        >>> GenerationConfig(top_k=20).merged(do_sample=True, temperature=0.7).top_k
        20
        >>> GenerationConfig().merged(max_tokens=5)
        Traceback (most recent call last):
        modelkiln.runtime.errors.ModelkilnError: unknown generation option 'max_tokens'; ...
        """
        known = {f.name for f in dataclasses.fields(self)}
        for key in kwargs:
            if key not in known:
                raise ModelkilnError(f"unknown generation option {key!r}; valid options: {', '.join(sorted(known))}")
        updates = {k: (_NONE_MEANS.get(k) if v is None else v) for k, v in kwargs.items()}
        config = dataclasses.replace(self, **updates)
        config.validate()
        return config

    # -- checks ------------------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise `ModelkilnError` on a value transformers would refuse (or that can only be a mistake).

        >>> GenerationConfig(num_beams=2, num_return_sequences=3).validate()
        Traceback (most recent call last):
        modelkiln.runtime.errors.ModelkilnError: num_return_sequences=3 is larger than num_beams=2; ...
        """
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ModelkilnError(f"{name}={value!r} must be an integer")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ModelkilnError(f"{name}={value!r} must be a number")
        if not isinstance(self.do_sample, bool):
            raise ModelkilnError(f"do_sample={self.do_sample!r} must be True or False")
        # transformers: GenerationConfig.validate
        if self.early_stopping not in (True, False, "never") or not isinstance(self.early_stopping, (bool, str)):
            raise ModelkilnError(f"early_stopping={self.early_stopping!r} must be True, False or 'never'")
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            raise ModelkilnError(f"max_new_tokens={self.max_new_tokens} must be greater than 0; pass max_new_tokens>=1")
        # stricter than transformers (it fails later, or ignores these)
        for name in ("min_new_tokens", "min_length", "no_repeat_ngram_size", "seed"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ModelkilnError(f"{name}={value} is negative; pass 0 or a positive integer")
        if self.max_length is not None and self.max_length <= 0:
            raise ModelkilnError(f"max_length={self.max_length} must be positive; prefer max_new_tokens")
        if self.num_beams < 1:
            raise ModelkilnError(f"num_beams={self.num_beams} must be at least 1 (1 = no beam search)")
        if self.num_return_sequences < 1:
            raise ModelkilnError(f"num_return_sequences={self.num_return_sequences} must be at least 1")
        for name in ("pad_token_id", "bos_token_id"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ModelkilnError(f"{name}={value} is negative; pass a token id from the vocabulary")
        for token in self.eos_token_id or ():
            if isinstance(token, bool) or not isinstance(token, numbers.Integral) or token < 0:
                raise ModelkilnError(f"eos_token_id contains {token!r}; pass non-negative integer token ids")
        for text in self.stop_strings or ():
            if not isinstance(text, str) or not text:
                raise ModelkilnError(f"stop_strings contains {text!r}; pass non-empty strings")
        # transformers: GenerationConfig.validate, num_return_sequences
        if self.num_return_sequences > 1:
            if self.num_beams == 1 and not self.do_sample:
                raise ModelkilnError(
                    f"num_return_sequences={self.num_return_sequences} needs do_sample=True or num_beams>="
                    f"{self.num_return_sequences}; greedy decoding returns one sequence")
            if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
                raise ModelkilnError(
                    f"num_return_sequences={self.num_return_sequences} is larger than num_beams={self.num_beams}; "
                    f"raise num_beams or lower num_return_sequences")
        # transformers: the RepetitionPenaltyLogitsProcessor constructor (built whenever penalty != 1.0)
        if self.repetition_penalty != 1.0 and not self.repetition_penalty > 0:
            raise ModelkilnError(f"repetition_penalty={self.repetition_penalty} must be > 0 (1.0 = no penalty)")
        # transformers builds the sampling warpers only when do_sample, so only then do their constructors raise:
        # temperature=0 with do_sample=False is legal there and must stay legal here.
        if self.do_sample:
            if self.temperature != 1.0 and not self.temperature > 0:
                raise ModelkilnError(
                    f"temperature={self.temperature} must be > 0 when sampling; for greedy decoding pass do_sample=False")
            if self.top_k < 0:
                raise ModelkilnError(f"top_k={self.top_k} must be a positive integer (0 disables top-k)")
            # transformers raises below 0 and ignores above 1; top_p=0 is legal there (keeps the single best token)
            if not 0.0 <= self.top_p <= 1.0:
                raise ModelkilnError(f"top_p={self.top_p} must be in [0, 1] (1.0 disables top-p)")
            if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
                raise ModelkilnError(f"min_p={self.min_p} must be in [0, 1] (None disables min-p)")

    # -- derived values ----------------------------------------------------------------------------------------

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return self.eos_token_id or ()

    @property
    def effective_pad_token_id(self) -> int | None:
        """transformers pads finished rows with pad_token_id, else the first EOS id (else nothing).

        >>> GenerationConfig(eos_token_id=[2, 7]).effective_pad_token_id
        2
        """
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_ids[0] if self.eos_ids else None

    def max_new_tokens_for(self, prompt_length: int, context_length: int | None = None) -> int:
        """How many tokens to generate after a prompt of `prompt_length` (padded) tokens, like transformers'
        `_prepare_generated_length`: max_new_tokens wins; else max_length counts the prompt; else 20 new tokens,
        capped so prompt + new fits `context_length` (the model's max_position_embeddings).

        >>> GenerationConfig(max_length=30).max_new_tokens_for(prompt_length=12)
        18
        """
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        if self.max_length is not None:
            if prompt_length >= self.max_length:
                raise ModelkilnError(
                    f"the prompt has {prompt_length} tokens but max_length={self.max_length} counts the prompt; "
                    f"pass max_new_tokens instead")
            return self.max_length - prompt_length
        total = prompt_length + DEFAULT_NEW_TOKENS
        if context_length is not None:
            total = min(total, context_length)
        if total <= prompt_length:
            raise ModelkilnError(
                f"the prompt has {prompt_length} tokens, which fills the context of {context_length}; shorten it")
        return total - prompt_length

    def min_length_for(self, prompt_length: int) -> int:
        """The total length (prompt + new) below which EOS is masked: min_new_tokens wins over min_length.

        >>> GenerationConfig(min_new_tokens=4, min_length=100).min_length_for(prompt_length=10)
        14
        """
        if self.min_new_tokens is not None:
            return prompt_length + self.min_new_tokens
        return self.min_length
