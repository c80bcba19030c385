"""``hwprune profile``: measure a latency lookup table, and optionally check how well it predicts."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..runs.settings import ProfileSettings
from .app import main
from .options import build_space, default, model_options


@main.command()
@model_options
@click.option("--backend", default=default(ProfileSettings, "backend"), show_default=True,
              help="Latency backend: onnxruntime, torch or tensorrt.")
@click.option("--device", default=default(ProfileSettings, "device"), show_default=True,
              help="cpu, or cuda[:N] for torch / tensorrt.")
@click.option("--threads", type=int, default=default(ProfileSettings, "threads"), show_default=True,
              help="Intra-op threads (CPU backends).")
@click.option("--batch-size", type=int, help="Batch size to measure (default: the input shape's).")
@click.option("--dtype", default=default(ProfileSettings, "dtype"), show_default=True,
              help="float32, float16 (GPU) or bfloat16.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True, help="Table CSV to write.")
@click.option("--validate", "validate_n", type=int, default=0,
              help="Then measure N random networks end to end and report the table's fidelity.")
@click.option("--statistic", type=click.Choice(["p10", "median", "p90"]), default=default(ProfileSettings, "statistic"),
              show_default=True,
              help="Which recorded statistic the table predicts.")
@click.option("--repeats", type=int, default=default(ProfileSettings, "repeats"), show_default=True,
              help="Timed runs per kernel chunk.")
@click.option("--calibrate", type=int, default=default(ProfileSettings, "calibrate"), show_default=True,
              help="Networks measured end to end to fit the overhead.")
@click.option("--calibration", type=click.Choice(["auto", "constant", "affine", "proportional"]),
              help="Predict overhead + kernel sum (constant), overhead + scale * sum (affine), scale * sum "
                   "(proportional), or whichever of the first two predicts the calibration networks clearly better "
                   "(auto, the default; proportional where that predicts <= 0 ms for the narrowest network, after "
                   "timing the kernels once more when profiling). On a finished OUT: refit it on its stored networks, "
                   "without measuring (a refit predicting <= 0 ms is refused).")
@click.option("--passes", type=int, default=default(ProfileSettings, "passes"), show_default=True,
              help="Interleaved passes over the networks in every end-to-end measurement.")
@click.option("--opt-level", type=click.Choice(["all", "extended", "basic", "disable"]),
              help="onnxruntime graph optimisation level (default: all, the runtime's default).")
@click.option("--chunk-kb", type=click.IntRange(min=1),
              help="onnxruntime: the most kernel weights (KB) timed together in one chunk (default: the widest "
                   "network's, 256-8192); a chunk's weights come from the cache level they fit, as a network's do.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Kernel store folder (resume, reuse).")
@click.option("--force", is_flag=True, help="Profile again even when OUT already holds this table.")
@click.option("--seed", type=int, default=default(ProfileSettings, "seed"), show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), help="Record the profile in this run folder.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def profile(model_name, weights, input_shape, num_classes, width_mult, round_to, drop_blocks, backend, device, threads,
            batch_size, dtype, out, validate_n, statistic, repeats, calibrate, calibration, passes, opt_level,
            chunk_kb, cache_dir, force, seed, quiet, run_dir, as_json):
    """Measure a latency lookup table for a model's search space on a backend.

    Every prunable layer is measured at every width the space allows, as the kernel
    the backend runs (BN folded, activation and residual add fused); an interrupted
    run resumes from the kernel store. With --validate N, N random networks are
    measured end to end and compared with the table, a FLOPs predictor and a second
    measurement (test-retest); the report and a scatter plot go next to OUT.
    """
    from ..latency.calibration import describe, loo_mapes
    from ..latency.reach import describe_reach, reach
    from ..errors import HwpruneError
    from ..runs.folder import RunFolder
    from ..runs.stages import fidelity_paths, profile_stage

    if chunk_kb is not None and backend != "onnxruntime":
        raise HwpruneError(f"--chunk-kb sets the onnxruntime backend's kernel chunks; backend {backend!r} has none")
    model, space = build_space(model_name, weights, input_shape, num_classes, width_mult, round_to, drop_blocks)
    options = {k: v for k, v in (("opt_level", opt_level), ("chunk_kb", chunk_kb)) if v is not None}
    settings = ProfileSettings(backend=backend, device=device, threads=threads,
                               batch_size=space.input_shapes[0][0] if batch_size is None else batch_size, dtype=dtype,
                               statistic=statistic,
                               repeats=repeats, calibrate=calibrate, passes=passes, seed=seed,
                               options=options)
    reused = Path(out).exists() and not force
    table, report = profile_stage(RunFolder(run_dir) if run_dir else None, space, settings, out=out,
                                  cache_dir=cache_dir, force=force, recalibrate=calibration, validate=validate_n,
                                  quiet=quiet, model=model_name)
    if reused and not quiet:
        click.echo(f"{out} already holds this table (use --force to measure again)" +
                   (f"; refitted its calibration ({table.meta['calibration']['model']})" if calibration else ""),
                   err=True)
    calibration = table.meta.get("calibration", {})
    summary = {"table": str(out), "model": model_name, "backend": table.backend,
               "entries": len(table.entries), "overhead_ms": table.overhead_ms, "scale": table.scale,
               "calibration": {"model": calibration.get("model", "constant"),
                               "loo_mape": loo_mapes(calibration), "note": describe(calibration)},
               "profiling": table.meta.get("profiling", {}), "reach": reach(table.for_space(space), space)}
    if report is not None:
        report_path, plot_path = fidelity_paths(out)
        summary["fidelity"] = {k: getattr(report, k) for k in ("n", "lut", "flops", "retest", "drift")}
        summary["fidelity"].update(report=report_path, plot=plot_path)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    p = summary["profiling"]
    click.echo(f"{out}: {summary['entries']} entries, overhead {table.overhead_ms:+.4f} ms, "
               f"scale {table.scale:.3f}" +
               (f"; measured {p['measured']} in {p['kernel_seconds']} s ({p['entries_per_second']}/s), "
                f"total {p['total_seconds']} s" if p and p.get("measured") else ""))
    click.echo(summary["calibration"]["note"])
    click.echo(describe_reach(summary["reach"]))
    if report is not None:
        click.echo(report.summary())
        click.echo(f"report: {summary['fidelity']['report']}  plot: {summary['fidelity']['plot']}")
