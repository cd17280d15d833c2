"""`modelkiln inspect`: the manifest in human form.

    task        text-generation (llama, fp32)
    source      gguf SmolLM2-135M-Instruct.Q4_1.gguf
    graph       model.onnx  opset 18  passes: share_transposed_initializers, ...
      in   input_ids                 int64    [batch_size, sequence_length]
      out  logits                    float    [batch_size, sequence_length, 49152]
    kv cache    30 layers × 3 kv heads × 64 head dim, fp32  (past_key_values.{i}.key → present.{i}.key)
    files       model.onnx 0.4 MB, model.onnx.data 538.2 MB, ...
"""

from __future__ import annotations

from modelkiln.runtime.artifact import Artifact


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def _io_lines(direction: str, values: list[dict], limit: int = 6) -> list[str]:
    lines = []
    shown = values if len(values) <= limit else values[: limit - 2]
    for v in shown:
        dims = ", ".join(str(d) for d in v["dims"])
        lines.append(f"  {direction:<4} {v['name']:<28} {v['dtype']:<8} [{dims}]")
    if len(shown) < len(values):
        lines.append(f"  {direction:<4} … {len(values) - len(shown)} more ({values[-1]['name']} last)")
    return lines


def describe(art: Artifact) -> str:
    m = art.manifest
    src = m.get("source", {})
    lines = [f"artifact    {art.root}",
             f"task        {m['task']} ({m.get('model_type')}, {m.get('precision')})",
             f"source      {src.get('kind')} {src.get('id')}"]
    for name, graph in m.get("graphs", {}).items():
        passes = ", ".join(p["name"] for p in graph.get("passes", [])) or "none"
        lines.append(f"graph       {graph['file']}  opset {graph.get('opset')}  passes: {passes}")
        lines += _io_lines("in", graph.get("inputs", [])) + _io_lines("out", graph.get("outputs", []))
    kv = m.get("kv_cache")
    if kv:
        lines.append(f"kv cache    {kv['num_layers']} layers × {kv['num_kv_heads']} kv heads × {kv['head_dim']} head "
                     f"dim, {kv['dtype']}  ({kv['past_key']} → {kv['present_key']})")
    encoder = m.get("encoder")
    if encoder:
        pooling = encoder.get("pooling")
        pooled = (f"  pooling {', '.join(pooling.get('modes', []))}{' + normalize' if pooling.get('normalize') else ''}"
                  if pooling else "")
        lines.append(f"encoder     inputs {', '.join(encoder.get('inputs', []))}  max length "
                     f"{encoder.get('max_sequence_length')}{pooled}")
    labels = m.get("labels")
    if labels:
        shown = ", ".join(f"{k}={v}" for k, v in list(labels.items())[:8])
        lines.append(f"labels      {len(labels)}: {shown}{', …' if len(labels) > 8 else ''}")
    gen = m.get("generation") or {}
    if gen:
        lines.append(f"generation  bos {gen.get('bos_token_id')}  eos {gen.get('eos_token_id')}  pad "
                     f"{gen.get('pad_token_id')}  context {gen.get('context_length')}  chat template "
                     f"{'yes' if gen.get('chat_template') else 'no'}")
    files = m.get("files", {})
    total = sum(f["size"] for f in files.values())
    lines.append(f"files       {len(files)} files, {_mb(total)}: "
                 + ", ".join(f"{n} {_mb(f['size'])}" for n, f in files.items()))
    versions = m.get("versions", {})
    lines.append("versions    " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    parity = art.root / "parity.json"
    if parity.is_file():
        import json

        report = json.loads(parity.read_text(encoding="utf-8"))
        lines.append(f"parity      {'PASS' if report.get('passed') else 'FAIL'} ({report.get('created')})")
    return "\n".join(lines)
