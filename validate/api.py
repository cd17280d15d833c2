"""`validate(artifact, reference) -> ParityReport`: eager PyTorch vs the artifact's graph on onnxruntime (CPU).

    report = validate("smollm2/", "SmolLM2-135M-Instruct.Q4_1.gguf")
    print("\\n".join(report.lines())); report.passed

`reference` is a SOURCE (as `modelkiln export` takes it) or an already loaded `LoadedModel` (what
`export --validate` passes, to avoid a second load). A reference whose architecture or weights differ from
the artifact's source is refused with a `ModelkilnError` rather than reported as a parity failure.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path

from modelkiln.runtime.artifact import Artifact
from modelkiln.runtime.errors import ModelkilnError
from modelkiln.validate.compare import Tolerance, resolve_tolerance
from modelkiln.validate.report import ParityReport


def _load_reference(reference, artifact: Artifact, auto_class: str = "AutoModelForCausalLM"):
    from modelkiln.exporter.sources import LoadedModel, load_source, resolve_source, source_file_hashes

    if isinstance(reference, LoadedModel):
        loaded = reference
    else:
        source = resolve_source(str(reference))
        _check_weights_match(artifact, source_file_hashes(source), str(reference))
        loaded = load_source(source, auto_class=auto_class, dtype="float32")
    _check_architecture_match(artifact, loaded.config, loaded.source.spec)
    model = loaded.model
    import torch

    if next(model.parameters()).dtype != torch.float32:  # judge a reduced-precision graph against fp32 eager
        model = copy.deepcopy(model).float()
    return loaded, model


def _check_architecture_match(artifact: Artifact, config, reference: str) -> None:
    from modelkiln.exporter.api import config_fingerprint

    expected = artifact.manifest.get("source", {}).get("fingerprint", {})
    actual = config_fingerprint(config)
    diffs = [f"{k} {actual.get(k)!r} != {v!r}" for k, v in expected.items() if actual.get(k) != v]
    if diffs:
        raise ModelkilnError(
            f"reference {reference!r} does not match the artifact ({'; '.join(diffs[:3])}); pass the checkpoint "
            "the artifact was exported from")


def _check_weights_match(artifact: Artifact, reference_hashes: dict, reference: str) -> None:
    recorded = artifact.manifest.get("source", {}).get("files", {})
    for name, meta in recorded.items():
        other = reference_hashes.get(name)
        if other is not None and other["sha256"] != meta["sha256"]:
            raise ModelkilnError(
                f"reference {reference!r} does not match the artifact: {name} differs from the exported one "
                "(sha256); pass the checkpoint the artifact was exported from")


def validate(artifact: str | os.PathLike | Artifact, reference, *, tolerances: Mapping[str, Tolerance] | None = None,
             new_tokens: int = 32, long_past: int = 512, quiet: bool = True, debug: bool = False) -> ParityReport:
    from modelkiln.runtime.decoder import DecoderLM
    from modelkiln.validate.cases import default_cases
    from modelkiln.validate.eager import EagerDecoder
    from modelkiln.validate.runner import CaseContext, run_case

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    from modelkiln.exporter.encoder import ENCODER_TASKS

    if art.precision == "bf16":  # before the reference loads
        raise ModelkilnError(BF16_VALIDATE)
    tolerances = _with_conversion_tolerances(art, tolerances)
    if art.task in ENCODER_TASKS:
        return _validate_encoder(art, reference, tolerances, quiet, debug)
    if art.task != "text-generation":
        raise ModelkilnError(f"validate does not support task {art.task!r} yet")
    if new_tokens < 1:
        raise ModelkilnError(f"--new-tokens must be at least 1, got {new_tokens}")
    from modelkiln.exporter.progress import Progress

    with Progress(quiet).step(f"loading reference {reference if isinstance(reference, (str, os.PathLike)) else ''}"):
        loaded, model = _load_reference(reference, art)
    compiled = DecoderLM(art)
    eager = EagerDecoder(model)
    precision = art.precision
    generation = art.manifest.get("generation", {})
    ctx = CaseContext(eager, compiled, loaded.tokenizer, generation,
                      lambda name: resolve_tolerance(name, precision, tolerances), model.config.vocab_size)
    quantized, converted = art.manifest.get("quantization"), art.manifest.get("precision_conversion")
    if (quantized or converted) and loaded.tokenizer is None:
        raise ModelkilnError(f"validating a {'quantized' if quantized else 'converted'} artifact needs the reference's "
                             "tokenizer (accuracy is measured on a held-out text)")
    if quantized:  # weights changed on purpose: accuracy, not elementwise parity
        from modelkiln.validate.accuracy import AccuracyCase

        cases = [AccuracyCase()]
    elif converted:  # rounding everywhere: accuracy judges, the forward and prompt cases catch breakage
        from modelkiln.validate.accuracy import fp16_accuracy_case
        from modelkiln.validate.cases import GenerationCase

        cases = [fp16_accuracy_case()] + [
            c for c in default_cases(generation.get("context_length"), True, bool(generation.get("chat_template")),
                                     new_tokens=new_tokens, long_past=long_past) if not isinstance(c, GenerationCase)]
    else:
        cases = default_cases(generation.get("context_length"), loaded.tokenizer is not None,
                              bool(generation.get("chat_template")), new_tokens=new_tokens, long_past=long_past)
    results = _run_all(cases, lambda case: run_case(ctx, case, debug=debug), quiet)
    return _report(art, loaded, tolerances, compiled.output_names, results)


BF16_VALIDATE = ("this artifact is bf16: validate runs the graph on onnxruntime's CPU provider, which has no bf16 "
                 "kernels (a bf16 artifact needs a GPU provider); validate the fp16 conversion of the same fp32 "
                 "artifact instead (`modelkiln optimize FP32_ARTIFACT OUT --precision fp16 --validate`)")


def _with_conversion_tolerances(art: Artifact, tolerances: Mapping[str, Tolerance] | None):
    """A converted graph's elementwise cases only catch breakage (accuracy is judged separately): their loose
    tolerances (validate/compare.py CONVERTED_TOLERANCES) go under the user's overrides, so both show in the report."""
    if not art.manifest.get("precision_conversion"):
        return tolerances
    from modelkiln.validate.compare import CONVERTED_TOLERANCES

    return {**CONVERTED_TOLERANCES, **(tolerances or {})}


def _validate_encoder(art: Artifact, reference, tolerances, quiet: bool, debug: bool) -> ParityReport:
    """Encoder tasks (validate/encoder_cases.py): outputs elementwise, then pipeline answers; a quantized artifact
    (manifest `quantization`) is judged by per-sentence cosine and unchanged labels instead, a converted one
    (`precision_conversion`) by both."""
    from modelkiln.exporter.encoder import ENCODER_TASKS
    from modelkiln.exporter.progress import Progress
    from modelkiln.validate.encoder_cases import EncoderContext, default_cases, run_encoder_case

    with Progress(quiet).step(f"loading reference {reference if isinstance(reference, (str, os.PathLike)) else ''}"):
        loaded, model = _load_reference(reference, art, ENCODER_TASKS[art.task].auto_class)
    precision = art.precision
    ctx = EncoderContext(art, loaded, model, lambda name: resolve_tolerance(name, precision, tolerances))
    cases = default_cases(art.task, loaded.tokenizer, art.manifest.get("quantization"),
                          converted=bool(art.manifest.get("precision_conversion")))
    results = _run_all(cases, lambda case: run_encoder_case(ctx, case, debug=debug), quiet)
    return _report(art, loaded, tolerances, ctx.output_names, results)


def _run_all(cases, run, quiet: bool) -> list:
    """Run every case in order, printing each one's PASS/FAIL lines as it finishes unless quiet."""
    results = []
    for case in cases:
        result = run(case)
        results.append(result)
        if not quiet:
            for line in result.lines(verbose=False):
                print(line, flush=True)
    return results


def _report(art: Artifact, loaded, tolerances, output_names, results) -> ParityReport:
    from modelkiln.exporter.api import tool_versions

    table = {name: resolve_tolerance(name, art.precision, tolerances) for name in output_names}
    return ParityReport(artifact=str(Path(art.root)), reference=str(loaded.source.spec), task=art.task,
                        precision=art.precision, tolerances=table, cases=results, versions=tool_versions())
