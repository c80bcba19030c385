"""``hwprune export``: a retrained pruned model as an ONNX file or a TensorRT engine."""
from __future__ import annotations

import json

import click

from .app import main


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Retrained model (runs/retrain/model.pt).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "tensorrt"]), default="onnx", show_default=True)
@click.option("--out", default="pruned.onnx", show_default=True, help="Output path (.onnx; the engine gets .engine).")
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="Export with a variable batch dimension.")
@click.option("--fp16", is_flag=True, help="TensorRT: build an FP16 engine.")
@click.option("--data", help="Dataset for the parity check (default: the model's own).")
@click.option("--run", "run_dir", type=click.Path(file_okay=False),
              help="Record the export in this run folder's run.json (e.g. the retrain folder).")
@click.option("--force", is_flag=True, help="Replace an existing file at --out.")
@click.option("--json", "as_json", is_flag=True)
def export(checkpoint, fmt, out, batch_size, dynamic_batch, fp16, data, run_dir, force, as_json):
    """Export to ONNX (checked with onnx.checker and onnxruntime-vs-torch parity) or TensorRT."""
    from ..runs.deploy_stages import export_stage
    from ..runs.folder import RunFolder

    r = export_stage(RunFolder(run_dir) if run_dir else None, checkpoint=checkpoint, out=out, fmt=fmt,
                     dynamic_batch=dynamic_batch, fp16=fp16, batch_size=batch_size, data=data, force=force)
    if as_json:
        click.echo(json.dumps(r, indent=1))
        return
    inputs = "real inputs" if r["real_inputs"] else "random inputs (no dataset found)"
    click.echo(f"wrote {r['onnx']} ({r['bytes'] / 1e6:.2f} MB): onnx.checker passed, onnxruntime vs torch max abs "
               f"diff {r['max_abs_diff']:.2e} on {r['inputs_checked']} {inputs}")
    if "engine" in r:
        click.echo(f"wrote {r['engine']}")
