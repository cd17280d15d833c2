"""The `modelkiln` command line.

Exit codes: 0 ok, 1 parity failure, 2 bad input or usage (one line on stderr, no traceback unless --debug),
3 an internal error (a bug: one line, re-run with --debug for the traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelkiln.runtime.errors import ModelkilnError

EXIT_PARITY, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


class _Group(click.Group):
    """Turns ModelkilnError into `error: ...` + exit 2, and unexpected errors into one line + exit 3."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except ModelkilnError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            click.echo(f"internal error: {type(e).__name__}: {first} (re-run with --debug for the traceback)",
                       err=True)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="modelkiln")
@click.pass_context
def cli(ctx, debug):
    """modelkiln: export Hugging Face models to ONNX artifacts, serve them without PyTorch, prove parity."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _parse_tolerances(items: tuple[str, ...]):
    from modelkiln.validate.compare import Tolerance

    table = {}
    for item in items:
        name, sep, values = item.partition("=")
        parts = values.split(",")
        try:
            if not sep or not name or len(parts) > 2:
                raise ValueError
            atol = float(parts[0])
            rtol = float(parts[1]) if len(parts) == 2 else 0.0
            table[name] = Tolerance(atol=atol, rtol=rtol)
        except ValueError:
            raise click.BadParameter(f"{item!r}; write NAME=ATOL[,RTOL], e.g. 'logits=1e-3,1e-3' or "
                                     "'present.*=1e-4'", param_hint="--tolerance") from None
    return table


def _quantize_options(default_weights: str | None):
    """The weight-quantization options `quantize` and `export` share."""
    def add(f):
        options = [
            click.option("--weights", type=click.Choice(["int4", "int8"]), default=default_weights, show_default=True,
                         help="Weight-only quantization (decoders: block-wise MatMulNBits; encoders: int8 dynamic "
                              "with an accuracy guard)."),
            click.option("--block-size", type=int, default=32, show_default=True,
                         help="Weights per quantization block along the input dimension (16-256, power of two)."),
            click.option("--accuracy-level", type=int, default=4, show_default=True,
                         help="MatMulNBits compute: 4 = int8 activations (fastest on CPU), 0 = float."),
            click.option("--scheme", type=click.Choice(["minmax", "symmetric", "asymmetric"]), default="minmax",
                         show_default=True,
                         help="Decoder blocks: minmax = each block's exact min/max with a float offset (most "
                              "accurate; exact on GGUF Q4_1 weights); symmetric/asymmetric = onnxruntime's "
                              "round-to-nearest with integer zero points (fewer nodes, less accurate)."),
            click.option("--exclude", multiple=True, metavar="PATTERN",
                         help="Keep weights whose node name matches this regex in float, e.g. 'lm_head' or "
                              "'layers\\.0\\.'. Repeatable."),
        ]
        for option in reversed(options):
            f = option(f)
        return f
    return add


def _precision_option(f):
    """`--precision`, shared by `optimize` and `export`."""
    return click.option(
        "--precision", type=click.Choice(["fp16", "bf16"]), default=None,
        help="Convert the fp32 graph (after any fusions): weights and compute in fp16/bf16, float32 inputs and "
             "outputs, the KV cache in the new precision; normalizations, softmax, RMSNorm statistics and "
             "rotary/position arithmetic stay fp32. bf16 needs a GPU provider (no CPU kernels).")(f)


@cli.command()
@click.argument("source")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--task", default="text-generation", show_default=True,
              help="What the artifact does: text-generation, feature-extraction, sentence-similarity, "
                   "text-classification (alias sentiment-analysis), token-classification (alias ner), "
                   "question-answering, fill-mask, or auto (from the checkpoint's architectures).")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Precision torch TRACES the model in: an fp16/bf16 graph takes and returns fp16/bf16 tensors "
                   "and computes everything in it. To convert an fp32 graph instead (float32 I/O, sensitive ops "
                   "in fp32), use --precision.")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--validate", "run_validate", is_flag=True, help="Validate against eager PyTorch, store parity.*")
@click.option("--trust-remote-code", is_flag=True, help="Run modeling code shipped with the checkpoint.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) for a Hub id.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output (CI logs).")
@click.option("--optimize", "optimize_level", type=click.Choice(["basic", "all"]), default=None,
              help="Also fuse the graph (as `modelkiln optimize`).")
@_quantize_options(default_weights=None)
@_precision_option
def export(source, output, task, dtype, opset, force, run_validate, trust_remote_code, revision, quiet,
           optimize_level, weights, block_size, accuracy_level, scheme, exclude, precision):
    """Export SOURCE (checkpoint dir, .gguf file or Hub id) to the artifact directory OUTPUT."""
    from modelkiln.exporter.api import ExportOptions
    from modelkiln.exporter.api import export as do_export

    options = ExportOptions(task=task, dtype=dtype, opset=opset, force=force, validate=run_validate, quiet=quiet,
                            trust_remote_code=trust_remote_code, revision=revision)
    if optimize_level or weights or precision:
        from modelkiln.exporter.transform import export_transformed

        out = export_transformed(source, output, options, optimize_level, weights=weights, block_size=block_size,
                                 accuracy_level=accuracy_level, scheme=scheme, exclude=exclude, precision=precision)
    else:
        out = do_export(source, output, options)
    _exit_on_parity(out, run_validate, quiet)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--reference", required=True, help="The SOURCE the artifact was exported from.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the JSON report here.")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write the Markdown report here.")
@click.option("--junit", type=click.Path(path_type=Path), help="Write JUnit XML here (one test case per case).")
@click.option("--tolerance", "tolerances", multiple=True, metavar="NAME=ATOL[,RTOL]",
              help="Override a tolerance per output name or glob, e.g. 'present.*=1e-3,1e-3'. Repeatable.")
@click.option("--new-tokens", default=32, show_default=True, help="Greedy tokens compared per generation case.")
@click.option("--save/--no-save", default=True, show_default=True,
              help="Also store parity.json/parity.md in the artifact.")
@click.option("--quiet", "-q", is_flag=True, help="Only the summary line.")
@click.pass_context
def validate(ctx, artifact, reference, json_path, markdown, junit, tolerances, new_tokens, save, quiet):
    """Compare ARTIFACT with eager PyTorch on REFERENCE; exit 1 when parity fails."""
    from modelkiln.exporter.progress import quiet_libraries
    from modelkiln.runtime.artifact import Artifact
    from modelkiln.validate import validate as do_validate

    table = _parse_tolerances(tolerances)
    art = Artifact.load(artifact)
    quiet_libraries(True)
    report = do_validate(art, reference, tolerances=table, new_tokens=new_tokens, quiet=quiet,
                         debug=ctx.obj.get("debug", False))
    report.write(json=json_path, markdown=markdown, junit=junit)
    if save:
        report.write(json=art.root / "parity.json", markdown=art.root / "parity.md")
    click.echo(report.lines(verbose=False)[-1])
    sys.exit(0 if report.passed else EXIT_PARITY)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw manifest.")
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of the artifact files.")
def inspect(artifact, as_json, no_verify):
    """Describe ARTIFACT: task, I/O signature, KV-cache layout, sizes, versions."""
    from modelkiln.exporter.inspect import describe
    from modelkiln.runtime.artifact import Artifact

    art = Artifact.load(artifact, verify="size" if no_verify else "full")
    if as_json:
        import json

        click.echo(json.dumps(art.manifest, indent=2))
    else:
        click.echo(describe(art))


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--level", type=click.Choice(["none", "basic", "all"]), default="all", show_default=True,
              help="basic: normalization fusions + merged projections; all: also GroupQueryAttention (decoders); "
                   "none: no fusion (with --precision: convert the graph as it is).")
@_precision_option
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--validate", "run_validate", is_flag=True,
              help="Validate OUTPUT against eager PyTorch (fp16: accuracy bounds, loose elementwise checks).")
@click.option("--reference", default=None, help="SOURCE for --validate (default: the manifest's source).")
@click.option("--quiet", "-q", is_flag=True)
def optimize(artifact, output, level, precision, force, run_validate, reference, quiet):
    """Fuse ARTIFACT's graph into ONNX Runtime contrib ops (and convert it with --precision); write OUTPUT."""
    from modelkiln.exporter.transform import plan_convert, plan_optimize, transform
    from modelkiln.runtime.artifact import Artifact

    art = Artifact.load(artifact)
    convert = plan_convert(art.manifest, precision, validate=run_validate) if precision else []  # before fusing
    passes = plan_optimize(art.manifest, level) + convert
    if not passes:
        if level == "none":
            raise ModelkilnError("--level none fuses nothing; add --precision fp16|bf16 to convert the graph")
        raise ModelkilnError(f"{artifact} already has every {level!r} fusion; nothing to do")
    out = transform(art, output, passes, force=force, validate=run_validate, reference=reference, quiet=quiet)
    _exit_on_parity(out, run_validate, quiet)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@_quantize_options(default_weights="int4")
@click.option("--no-optimize", is_flag=True, help="Quantize the graph as it is, without the fusions first.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--validate", "run_validate", is_flag=True,
              help="Validate OUTPUT against eager PyTorch (accuracy checks for quantized weights).")
@click.option("--reference", default=None, help="SOURCE for --validate (default: the manifest's source).")
@click.option("--quiet", "-q", is_flag=True)
def quantize(artifact, output, weights, block_size, accuracy_level, scheme, exclude, no_optimize, force,
             run_validate, reference, quiet):
    """Quantize ARTIFACT's weights (int4/int8) into the new artifact OUTPUT."""
    from modelkiln.exporter.transform import plan_quantize, transform
    from modelkiln.runtime.artifact import Artifact

    art = Artifact.load(artifact)
    passes = plan_quantize(art.manifest, weights, block_size=block_size, accuracy_level=accuracy_level,
                           scheme=scheme, exclude=exclude, optimize=None if no_optimize else "all")
    out = transform(art, output, passes, force=force, validate=run_validate, reference=reference, quiet=quiet)
    _exit_on_parity(out, run_validate, quiet)


def _exit_on_parity(out: Path, run_validate: bool, quiet: bool) -> None:
    if run_validate:
        from modelkiln.validate.report import ParityReport

        report = ParityReport.from_json((out / "parity.json").read_text(encoding="utf-8"))
        if not report.passed:
            sys.exit(EXIT_PARITY)
    if not quiet:
        click.echo(f"artifact written to {out}", err=True)


def _generation_options(f):
    """The options `run` and `chat` share (transformers' names)."""
    options = [
        click.option("--max-new-tokens", type=int, default=256, show_default=True),
        click.option("--greedy", is_flag=True, help="Deterministic greedy decoding (do_sample=False)."),
        click.option("--temperature", type=float, default=None, help="Sampling temperature (default 0.7)."),
        click.option("--top-p", type=float, default=None),
        click.option("--top-k", type=int, default=None),
        click.option("--seed", type=int, default=None, help="Seed for reproducible sampling."),
        click.option("--system", default=None, help="A system message to start the chat with."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _kwargs(max_new_tokens, greedy, temperature, top_p, top_k, seed) -> dict:
    kwargs = {"max_new_tokens": max_new_tokens}
    if greedy:
        kwargs["do_sample"] = False
    for name, value in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k), ("seed", seed)):
        if value is not None:
            kwargs[name] = value
    return kwargs


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("prompt")
@click.option("--raw", is_flag=True, help="Send PROMPT as plain text, not as a chat message.")
@_generation_options
def run(artifact, prompt, raw, system, **options):
    """Generate one answer to PROMPT with ARTIFACT, streamed to stdout."""
    from modelkiln.runtime import pipeline

    pipe = pipeline("text-generation", model=artifact)
    use_chat = not raw and pipe.tokenizer.chat_template is not None
    inputs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    for chunk in pipe.stream(inputs if use_chat else prompt, **_kwargs(**options)):
        click.echo(chunk, nl=False)
    click.echo()


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@_generation_options
def chat(artifact, system, **options):
    """Interactive streaming chat with ARTIFACT (/reset clears the history, /exit or Ctrl-D quits)."""
    from modelkiln.runtime import pipeline

    pipe = pipeline("text-generation", model=artifact)
    if pipe.tokenizer.chat_template is None:
        raise ModelkilnError(f"artifact {artifact} has no chat template; use `modelkiln run --raw` instead")
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    kwargs = _kwargs(**options)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            click.echo()
            return
        if line.strip() in ("/exit", "/quit"):
            return
        if line.strip() == "/reset":
            history = list(start)
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        click.echo("assistant> ", nl=False)
        answer = []
        for chunk in pipe.stream(history, **kwargs):
            answer.append(chunk)
            click.echo(chunk, nl=False)
        click.echo()
        history.append({"role": "assistant", "content": "".join(answer)})


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="modelkiln", standalone_mode=True)


if __name__ == "__main__":
    main()
