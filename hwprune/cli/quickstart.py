"""``hwprune quickstart``: the whole pipeline on the bundled default, with a report."""
from __future__ import annotations

import click

from .app import main


@main.command()
@click.option("--out", default="runs/quickstart", show_default=True, type=click.Path(file_okay=False))
@click.option("--fast", is_flag=True, help="A smoke run (tiny training and search) that checks every stage runs.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bars (stage lines still print).")
def quickstart(out, fast, resume, quiet):
    """Profile, pretrain, search at 30% of the dense latency with inherited weights, fine-tune the searched, the
    uniform-width and the L1-magnitude network the same way, export, verify: resnet20 on bundled MNIST."""
    from ..runs.quickstart import FAST, FULL, quickstart as run

    figures = run(out, FAST if fast else FULL, resume=resume, progress=False if quiet else None,
                  log=lambda s: click.echo(s, err=True))
    if figures["smoke"]:
        click.echo("smoke run (--fast): the accuracies below mean nothing; it checks that every stage runs")
    click.echo(f"{'dense':<9} test top-1 {figures['dense'].get('test_acc', float('nan')):.4f}  measured "
               f"{figures['dense_measured_ms']:.4f} ms")
    for name, r in figures["networks"].items():
        side = "over" if r["overshoot"] > 0 else "under"
        click.echo(f"{name:<9} test top-1 {r['test_acc']:.4f}  measured {r['measured_ms']:.4f} ms "
                   f"(predicted {r['predicted_ms']:.4f}; budget {figures['budget_ms']:.4f}: {abs(r['overshoot']):.1%} "
                   f"{side}{'' if r['within_budget'] else ', OVER BUDGET'}); {r['speedup']:.2f}x the dense "
                   f"{figures['dense_measured_ms']:.4f} ms")
    click.echo(f"report: {out}/report.md")
