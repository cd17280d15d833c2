"""Bad input to the encoder pipelines: a clear ModelkilnError naming the problem, never a wrong answer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from modelkiln.runtime.errors import ModelkilnError
from modelkiln.runtime.pipelines import pipeline


def test_empty_and_non_string_inputs(encoder_artifact):
    clf = pipeline("text-classification", model=encoder_artifact("bert", "text-classification"))
    with pytest.raises(ModelkilnError, match="input|text 1 is an empty string"):
        clf(["fine", "   "])
    with pytest.raises(ModelkilnError, match="text 0 is a int"):
        clf([3])
    with pytest.raises(ModelkilnError, match="text pair"):
        clf([["a", "b"]])
    with pytest.raises(ModelkilnError, match="top_k"):
        clf("fine", top_k=0)
    with pytest.raises(ModelkilnError, match="function_to_apply"):
        clf("fine", function_to_apply="tanh")
    with pytest.raises(ModelkilnError, match="batch_size"):
        clf("fine", batch_size=0)
    ner = pipeline("ner", model=encoder_artifact("bert", "token-classification"))
    with pytest.raises(ModelkilnError, match="empty string"):
        ner("")
    with pytest.raises(ModelkilnError, match="aggregation_strategy"):
        ner("Berlin", aggregation_strategy="longest")
    with pytest.raises(ModelkilnError, match="stride"):
        ner("Berlin", stride=8)  # needs an aggregation strategy


def test_question_answering_bad_input(encoder_artifact):
    qa = pipeline("question-answering", model=encoder_artifact("bert", "question-answering"))
    with pytest.raises(ModelkilnError, match="needs a context"):
        qa(question="Where do I live?")
    with pytest.raises(ModelkilnError, match="cannot be empty"):
        qa(question="Where?", context="")
    with pytest.raises(ModelkilnError, match="same lengths"):
        qa(question=["a?", "b?"], context=["one"])
    with pytest.raises(ModelkilnError, match="leaves no room for the context"):
        qa(question="why " * 80, context="Because.")
    with pytest.raises(ModelkilnError, match="doc_stride"):
        qa(question="Where?", context="In Berlin.", doc_stride=70, max_seq_len=64)
    with pytest.raises(ModelkilnError, match="limit of 64"):
        qa(question="Where?", context="In Berlin.", max_seq_len=512)


def test_fill_mask_without_mask(encoder_artifact):
    fill = pipeline("fill-mask", model=encoder_artifact("roberta", "fill-mask"))
    with pytest.raises(ModelkilnError, match="No mask_token"):
        fill("There is no mask here.")


def test_wrong_task_for_artifact(encoder_artifact):
    art = encoder_artifact("bert", "question-answering")
    with pytest.raises(ModelkilnError, match="exported for 'question-answering', not 'text-classification'"):
        pipeline("sentiment-analysis", model=art)
    with pytest.raises(ModelkilnError, match="unsupported task"):
        pipeline("summarization", model=art)
    # a feature-extraction artifact also serves sentence embeddings (same graph)
    emb = pipeline("sentence-similarity", model=encoder_artifact("distilbert", "feature-extraction"))
    assert emb.encode(["a b c", "d e"]).shape == (2, 32)


def test_tampered_labels_are_refused(encoder_artifact, tmp_path):
    """A manifest whose labels do not match the head's outputs: an error, not a wrong label."""
    import shutil

    from modelkiln.exporter.artifact_writer import write_manifest

    art = tmp_path / "art"
    shutil.copytree(encoder_artifact("bert", "text-classification"), art)
    manifest = json.loads((art / "modelkiln.json").read_text())
    manifest["labels"] = {"0": "NEGATIVE", "1": "POSITIVE"}
    manifest.pop("files")
    manifest.pop("schema_version")
    write_manifest(art, manifest)
    with pytest.raises(ModelkilnError, match="3 scores but the manifest has 2 labels"):
        pipeline("text-classification", model=art)("fine")


def test_encoder_pipelines_run_without_torch(encoder_artifact):
    """The runtime serves every encoder task with torch, transformers and tokenizers blocked."""
    arts = {task: str(encoder_artifact(family, task)) for family, task in (
        ("bert", "text-classification"), ("bert", "token-classification"), ("bert", "question-answering"),
        ("roberta", "fill-mask"), ("distilbert", "feature-extraction"))}
    script = textwrap.dedent(f"""
        import sys, importlib.abc, json
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {{"torch", "transformers", "tokenizers", "sentencepiece", "onnx"}}:
                    raise ImportError(f"blocked heavy import: {{name}}")
        sys.meta_path.insert(0, Block())
        from modelkiln.runtime.pipelines import pipeline
        arts = {arts!r}
        out = {{
            "clf": pipeline("sentiment-analysis", model=arts["text-classification"])("Berlin is nice."),
            "ner": len(pipeline("ner", model=arts["token-classification"])("Wolfgang lives in Berlin.")),
            "qa": pipeline("question-answering", model=arts["question-answering"])(
                question="Where?", context="Wolfgang lives in Berlin.")["answer"],
            "fill": len(pipeline("fill-mask", model=arts["fill-mask"])("Paris is <mask>.")),
            "fe": len(pipeline("feature-extraction", model=arts["feature-extraction"])("Hello")[0]),
        }}
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "transformers", "tokenizers"}})
        print(json.dumps({{"out": str(out), "heavy": heavy}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
