"""``hwprune verify``: measure an exported model on its table's backend against prediction and budget."""
from __future__ import annotations

import json
import sys

import click

from ..deploy.verify import DEFAULT_TOLERANCE
from .app import main

OVER_BUDGET = 3  # exit status when the model is measured over budget (1: error, 2: usage)


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="ONNX file written by hwprune export.")
@click.option("--table", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The latency table the search used (its backend and settings are measured with).")
@click.option("--latency-ms", type=float,
              help="Budget in ms (default: the budget the network was searched for, stored by hwprune export).")
@click.option("--tolerance", type=float, default=DEFAULT_TOLERANCE, show_default=True,
              help="Relative excess over the budget still accepted (e.g. 0.05 for measurement noise).")
@click.option("--passes", type=int, default=5, show_default=True)
@click.option("--timings", type=click.IntRange(min=1), default=2, show_default=True,
              help="Take the whole measurement this many times; each network keeps its faster timing (one timing "
                   "a busy machine slows throughout is then outvoted).")
@click.option("--no-dense", is_flag=True, help="Skip measuring the dense model.")
@click.option("--allow-mismatch", is_flag=True, help="Use a table measured on another machine or setting.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False),
              help="Record the verdict in this run folder (run.json and verify.json).")
@click.option("--json", "as_json", is_flag=True)
def verify(model_path, table, latency_ms, tolerance, passes, timings, no_dense, allow_mismatch, run_dir, as_json):
    """Print predicted vs measured latency vs budget, and the dense model's latency.

    Exit status 3 when the measured latency exceeds the budget by more than the tolerance.
    """
    from ..latency import LatencyTable
    from ..runs.deploy_stages import verify_stage
    from ..runs.folder import RunFolder

    lut = LatencyTable.load(table, allow_mismatch=allow_mismatch)
    report = verify_stage(RunFolder(run_dir) if run_dir else None, models=[model_path], table=lut,
                          latency_ms=latency_ms, tolerance=tolerance, dense=not no_dense, passes=passes,
                          timings=timings)[0]
    click.echo(json.dumps(report.to_dict(), indent=1) if as_json else report.summary())
    if report.within_budget is False:
        sys.exit(OVER_BUDGET)
