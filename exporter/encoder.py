"""Trace an encoder model (BERT and friends) with its task head into one ONNX graph.

Graph signature (dynamic batch and sequence; names as transformers' model outputs):

    input_ids        int64 [batch_size, sequence_length]
    attention_mask   int64 [batch_size, sequence_length]      1 = real token, 0 = padding
    token_type_ids   int64 [batch_size, sequence_length]      only for families whose tokenizer makes them
 -> last_hidden_state  float [batch_size, sequence_length, hidden]     feature-extraction, sentence-similarity
    logits             float [batch_size, num_labels]                  text-classification
    logits             float [batch_size, sequence_length, num_labels] token-classification
    logits             float [batch_size, sequence_length, vocab]      fill-mask
    start_logits, end_logits  float [batch_size, sequence_length]      question-answering

Two small tables drive everything: `ENCODER_FAMILIES` (model_type -> which inputs the family takes) and
`ENCODER_TASKS` (task -> transformers Auto class, graph outputs, and the head an architecture name must carry).

    >>> ENCODER_TASKS["question-answering"].outputs
    ('start_logits', 'end_logits')
    >>> infer_task({"architectures": ["DistilBertForQuestionAnswering"]}, has_sentence_transformers=False)
    'question-answering'
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkiln.runtime.errors import ModelkilnError

BATCH, SEQ = "batch_size", "sequence_length"


@dataclass(frozen=True)
class EncoderFamily:
    """What the graph of one model family takes: token_type_ids when its tokenizer produces them."""

    token_type_ids: bool
    # Learned absolute positions that start after the padding index (RoBERTa-style) leave 2 fewer usable slots.
    position_offset: int = 0


# Covered by tests/exporter/test_encoder_export.py on tiny random checkpoints (and MiniLM for bert).
ENCODER_FAMILIES: dict[str, EncoderFamily] = {
    "bert": EncoderFamily(token_type_ids=True),
    "distilbert": EncoderFamily(token_type_ids=False),
    "roberta": EncoderFamily(token_type_ids=False, position_offset=2),
    "xlm-roberta": EncoderFamily(token_type_ids=False, position_offset=2),
    "electra": EncoderFamily(token_type_ids=True),
    "deberta-v2": EncoderFamily(token_type_ids=True),
    "mpnet": EncoderFamily(token_type_ids=False, position_offset=2),
    "albert": EncoderFamily(token_type_ids=True),
}


@dataclass(frozen=True)
class EncoderTask:
    auto_class: str  # the transformers Auto class that loads the model with this head
    outputs: tuple[str, ...]  # graph output names, in order
    head: str | None  # the suffix an `architectures` entry carries when the checkpoint has this head trained


ENCODER_TASKS: dict[str, EncoderTask] = {
    "feature-extraction": EncoderTask("AutoModel", ("last_hidden_state",), None),
    "sentence-similarity": EncoderTask("AutoModel", ("last_hidden_state",), None),
    "text-classification": EncoderTask("AutoModelForSequenceClassification", ("logits",), "ForSequenceClassification"),
    "token-classification": EncoderTask("AutoModelForTokenClassification", ("logits",), "ForTokenClassification"),
    "question-answering": EncoderTask("AutoModelForQuestionAnswering", ("start_logits", "end_logits"),
                                      "ForQuestionAnswering"),
    "fill-mask": EncoderTask("AutoModelForMaskedLM", ("logits",), "ForMaskedLM"),
}

# The architecture suffix -> task table `--task auto` reads (the first entry of config.architectures).
_HEAD_TO_TASK = {task.head: name for name, task in ENCODER_TASKS.items() if task.head}


def infer_task(config: dict[str, Any], has_sentence_transformers: bool) -> str:
    """`--task auto`: the task of a checkpoint, from the head named in its config's `architectures`.

    `BertModel` (no head) is feature-extraction, or sentence-similarity when the checkpoint ships a
    sentence-transformers pipeline (modules.json); `LlamaForCausalLM` is text-generation.
    """
    architectures = config.get("architectures") or []
    if not architectures:
        raise ModelkilnError("--task auto needs `architectures` in the checkpoint's config.json (it has none); "
                             "pass the task explicitly, e.g. --task feature-extraction")
    arch = architectures[0]
    for head, task in _HEAD_TO_TASK.items():
        if arch.endswith(head):
            return task
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        return "text-generation"
    if arch.endswith("Model"):
        return "sentence-similarity" if has_sentence_transformers else "feature-extraction"
    raise ModelkilnError(f"--task auto cannot tell the task of architecture {arch!r}; pass --task explicitly "
                         f"(one of {', '.join(sorted(ENCODER_TASKS))}, text-generation)")


def check_encoder_family(config, task: str) -> EncoderFamily:
    """Refuse, before loading weights, a family we do not export or a checkpoint without the task's head."""
    model_type = getattr(config, "model_type", None) or "unknown"
    family = ENCODER_FAMILIES.get(model_type)
    if family is None:
        raise ModelkilnError(f"model family {model_type!r} is not supported for --task {task}; supported encoder "
                             f"families: {', '.join(sorted(ENCODER_FAMILIES))}")
    head = ENCODER_TASKS[task].head
    architectures = getattr(config, "architectures", None) or []
    if head and architectures and not any(a.endswith(head) for a in architectures):
        # transformers would initialize the missing head at random and the artifact would answer nonsense
        raise ModelkilnError(
            f"the checkpoint is a {architectures[0]}, without a trained {head.removeprefix('For')} head for --task "
            f"{task}; export it with --task {infer_task({'architectures': architectures}, False)} or pass a "
            f"checkpoint fine-tuned for {task}")
    return family


# ---------------------------------------------------------------------------------------------- sentence-transformers

_POOLING_MODES = (  # sentence-transformers concatenates the enabled modes in this order
    ("cls", "pooling_mode_cls_token"),
    ("max", "pooling_mode_max_tokens"),
    ("mean", "pooling_mode_mean_tokens"),
    ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
)
_UNSUPPORTED_POOLING = ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")
_KNOWN_MODULES = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                  "sentence_transformers.models.Normalize"}


def has_sentence_transformers_config(folder: Path | None) -> bool:
    return folder is not None and (folder / "modules.json").is_file()


def read_sentence_transformers(folder: Path | None) -> dict[str, Any]:
    """Pooling + normalization of a sentence-transformers checkpoint, as the runtime applies them.

        read_sentence_transformers(minilm) -> {"modes": ["mean"], "normalize": True, "max_seq_length": 256,
                                               "include_prompt": True}

    Without modules.json (a plain checkpoint) the embedding is mean pooling, not normalized: what
    sentence-transformers itself builds around a bare transformers model.
    """
    if not has_sentence_transformers_config(folder):
        return {"modes": ["mean"], "normalize": False, "max_seq_length": None, "include_prompt": True}
    modules = _read_json(folder / "modules.json")
    types = [m.get("type") for m in modules]
    unknown = [t for t in types if t not in _KNOWN_MODULES]
    if unknown:
        raise ModelkilnError(f"sentence-transformers module {unknown[0]!r} in {folder / 'modules.json'} is not "
                             "supported; supported: Transformer, Pooling, Normalize")
    pooling = {"modes": ["mean"], "include_prompt": True}
    for module in modules:
        if module.get("type") == "sentence_transformers.models.Pooling":
            cfg = _read_json(folder / module.get("path", "") / "config.json")
            bad = [k for k in _UNSUPPORTED_POOLING if cfg.get(k)]
            if bad:
                raise ModelkilnError(f"sentence-transformers pooling {bad[0]!r} is not supported; supported: "
                                     f"{', '.join(m for m, _ in _POOLING_MODES)}")
            modes = [mode for mode, key in _POOLING_MODES if cfg.get(key)]
            if not modes:
                raise ModelkilnError(f"{folder / module.get('path', '')}/config.json enables no pooling mode")
            pooling = {"modes": modes, "include_prompt": bool(cfg.get("include_prompt", True))}
    max_seq_length = None
    bert_config = folder / "sentence_bert_config.json"
    if bert_config.is_file():
        max_seq_length = _read_json(bert_config).get("max_seq_length")
    return {**pooling, "normalize": "sentence_transformers.models.Normalize" in types,
            "max_seq_length": max_seq_length}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelkilnError(f"sentence-transformers config {path} is missing; the checkpoint is incomplete") from None
    except ValueError as e:
        raise ModelkilnError(f"{path} is not valid JSON ({e})") from None


# ---------------------------------------------------------------------------------------------- tracing


def graph_input_names(model_type: str) -> list[str]:
    family = ENCODER_FAMILIES[model_type]
    return ["input_ids", "attention_mask", *(["token_type_ids"] if family.token_type_ids else [])]


def max_sequence_length(config) -> int | None:
    """The longest sequence the position embeddings allow (None: relative positions, no hard limit)."""
    family = ENCODER_FAMILIES[config.model_type]
    positions = getattr(config, "max_position_embeddings", None)
    if config.model_type == "deberta-v2" and not getattr(config, "position_biased_input", True):
        return None
    return positions - family.position_offset if positions else None


def check_labels(model, task: str, source_path: Path | None) -> None:
    """The head's labels must be the checkpoint's own: transformers silently swaps an id2label that does not
    cover the head (say 2 names for 3 outputs) for LABEL_0..LABEL_2, and the artifact would answer with those."""
    if task not in ("text-classification", "token-classification"):
        return
    config = model.config
    width = config.num_labels
    if len(config.id2label) != width or any(i not in config.id2label for i in range(width)):
        raise ModelkilnError(f"the config's id2label has ids {sorted(config.id2label)} but the head has {width} "
                             "outputs; fix id2label/label2id in config.json")
    raw = source_path / "config.json" if source_path is not None else None
    if raw is not None and raw.is_file():
        declared = json.loads(raw.read_text(encoding="utf-8")).get("id2label")
        if declared is not None and len(declared) != width:
            raise ModelkilnError(f"{raw} names {len(declared)} labels in id2label but the {task} head has {width} "
                                 "outputs; fix id2label/label2id (and num_labels) in config.json")


class EncoderWithHead:
    """Positional tensors in, the task's named outputs out (a torch module built lazily: torch is an export dep)."""

    @staticmethod
    def build(model, input_names: list[str], output_names: tuple[str, ...]):
        import torch

        class _Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
                if "token_type_ids" in input_names:
                    kwargs["token_type_ids"] = token_type_ids
                out = self.model(**kwargs, return_dict=True)
                return tuple(out[name] for name in output_names)

        return _Wrapper().eval()


def trace_encoder(model, task: str, opset: int = 18, verbose: bool = False):
    """Return the exported graph (an `onnx_ir.Model`) and its input names."""
    import torch

    from modelkiln.exporter.decoder import fold_constants

    config = model.config
    names = graph_input_names(config.model_type)
    outputs = ENCODER_TASKS[task].outputs
    wrapper = EncoderWithHead.build(model, names, outputs)
    # Sizes > 1 and distinct, so torch.export does not specialize a dynamic dim to a constant.
    batch_size, seq = 2, 9
    ids = torch.randint(3, min(config.vocab_size, 1000), (batch_size, seq))
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    args = (ids, mask, *([torch.zeros_like(ids)] if "token_type_ids" in names else []))
    limit = max_sequence_length(config)
    batch = torch.export.Dim(BATCH)
    sequence = torch.export.Dim(SEQ, max=limit) if limit else torch.export.Dim(SEQ)
    dynamic_shapes = {name: {0: batch, 1: sequence} for name in names}
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    if not verbose:
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with sink, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, args, None, input_names=names, output_names=list(outputs), dynamic_shapes=dynamic_shapes,
                dynamo=True, opset_version=opset, optimize=False, verbose=verbose, report=False)
    except Exception as e:  # torch.export's errors are pages long: keep the summary line, name the family
        lines = [line for line in str(e).splitlines() if line.strip()]
        summary = next((lines[i + 1] for i, line in enumerate(lines[:-1]) if "Exception summary" in line), None)
        first = summary or (lines[0] if lines else type(e).__name__)
        raise ModelkilnError(
            f"model family {config.model_type!r} could not be traced to ONNX for {task}: {first[:300]} "
            "(re-run with --debug for the full trace)") from e
    graph = program.model
    fold_constants(graph)
    return graph, names


def labels_of(config, task: str) -> dict[str, str] | None:
    """id2label with string keys (JSON) for the tasks whose outputs are labels, else None."""
    if task not in ("text-classification", "token-classification"):
        return None
    return {str(i): str(config.id2label[i]) for i in sorted(config.id2label)}


def head_info(config, task: str, source_path: Path | None) -> dict[str, Any]:
    """The manifest's `encoder` section: what the runtime needs beyond the graph.

        {"inputs": ["input_ids", "attention_mask", "token_type_ids"], "max_sequence_length": 512,
         "problem_type": None, "function_to_apply": None, "pooling": None}
    """
    info: dict[str, Any] = {
        "inputs": graph_input_names(config.model_type),
        "max_sequence_length": max_sequence_length(config),
        "problem_type": getattr(config, "problem_type", None),
        "function_to_apply": None,
        "pooling": None,
    }
    if task == "text-classification":
        info["num_labels"] = config.num_labels
        fn = getattr(config, "function_to_apply", None)
        info["function_to_apply"] = fn if isinstance(fn, str) else None
    if task in ("feature-extraction", "sentence-similarity"):
        info["pooling"] = read_sentence_transformers(source_path)
    return info
