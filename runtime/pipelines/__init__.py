"""`modelkiln.runtime.pipeline(task, model=ARTIFACT_DIR, **kwargs)`: transformers' pipeline call, served by an artifact.

    from modelkiln.runtime import pipeline
    pipe = pipeline("text-generation", model="artifacts/smollm2")
    pipe([{"role": "user", "content": "Hi"}], max_new_tokens=32)
    # [{"generated_text": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! ..."}]}]

Each task's pipeline class lives in its own module and is imported only when asked for, so a service that
serves one task never imports the others.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from modelkiln.runtime.artifact import Artifact
from modelkiln.runtime.errors import ModelkilnError

# task -> "module:Class"; aliases map the names transformers accepts to ours
PIPELINES: dict[str, str] = {
    "text-generation": "modelkiln.runtime.pipelines.text_generation:TextGenerationPipeline",
    # encoder tasks (runtime/encoder.py + one module per task)
    "feature-extraction": "modelkiln.runtime.pipelines.feature_extraction:FeatureExtractionPipeline",
    "sentence-similarity": "modelkiln.runtime.pipelines.feature_extraction:SentenceSimilarityPipeline",
    "text-classification": "modelkiln.runtime.pipelines.text_classification:TextClassificationPipeline",
    "token-classification": "modelkiln.runtime.pipelines.token_classification:TokenClassificationPipeline",
    "question-answering": "modelkiln.runtime.pipelines.question_answering:QuestionAnsweringPipeline",
    "fill-mask": "modelkiln.runtime.pipelines.fill_mask:FillMaskPipeline",
}
TASK_ALIASES: dict[str, str] = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
# Tasks an artifact serves besides its own: feature-extraction and sentence-similarity artifacts hold the same
# graph (hidden states) and the same pooling record, so each serves both.
ALSO_SERVES: dict[str, tuple[str, ...]] = {"feature-extraction": ("sentence-similarity",),
                                          "sentence-similarity": ("feature-extraction",)}


def register_pipeline(task: str, target: str, aliases: tuple[str, ...] = ()) -> None:
    """Add a task ("module:Class"); used by the modules that define pipelines for new tasks."""
    PIPELINES[task] = target
    for alias in aliases:
        TASK_ALIASES[alias] = task


def pipeline(task: str | None = None, model: str | os.PathLike | None = None, *, verify: str = "full",
             providers: list[str] | None = None, **kwargs: Any):
    if model is None:
        raise ModelkilnError("pipeline() needs model=ARTIFACT_DIR (an artifact written by `modelkiln export`)")
    artifact = Artifact.load(model, verify=verify)
    task = TASK_ALIASES.get(task, task) if task else artifact.task
    if task not in PIPELINES:
        raise ModelkilnError(f"unsupported task {task!r}; supported: {', '.join(sorted(PIPELINES))}")
    served = TASK_ALIASES.get(artifact.task, artifact.task)
    if served != task and task not in ALSO_SERVES.get(served, ()):
        raise ModelkilnError(f"artifact {artifact.root} was exported for {artifact.task!r}, not {task!r}; "
                             f"use pipeline({artifact.task!r}, ...) or re-export with --task {task}")
    module, _, cls = PIPELINES[task].partition(":")
    return getattr(importlib.import_module(module), cls)(artifact, providers=providers, **kwargs)
