"""``hwprune info``: the channel groups, widths, FLOPs and params of a model's search space."""
from __future__ import annotations

import json

import click

from .app import main
from .options import build_space, human, model_options


@main.command()
@model_options
@click.option("--ratio", type=float, default=0.5, show_default=True, help="Uniform width ratio to compare with.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(model_name, weights, input_shape, num_classes, width_mult, round_to, drop_blocks, ratio, as_json):
    """Show a model's prunable channel groups and the cost of full and uniform widths."""
    model, space = build_space(model_name, weights, input_shape, num_classes, width_mult, round_to, drop_blocks)
    full, uni = space.full(), space.uniform(ratio)
    summary = {
        "model": model_name, "input_shape": list(space.input_shapes[0]), "fingerprint": space.fingerprint,
        "prunable_groups": len(space), "layers": len(space.layers),
        "full": {"flops": space.flops(full), "params": space.params(full)},
        "uniform": {"ratio": ratio, "encoding": list(uni), "flops": space.flops(uni), "params": space.params(uni)},
        "groups": space.describe(uni),
        "fixed_groups": [{"group": n, "width": w, "reason": r} for n, w, r in space.fixed_groups()],
    }
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(f"{model_name}  input {tuple(space.input_shapes[0])}  {len(space)} prunable groups, "
               f"{len(space.layers)} layers, fingerprint {space.fingerprint}")
    click.echo(f"{'group':<28}{'width':>7}{'choices':>9}{'range':>12}{'members':>9}{f'@{ratio:g}':>8}")
    for row in summary["groups"]:
        click.echo(f"{row['group']:<28}{row['width']:>7}{row['choices']:>9}{row['min']:>6}..{row['max']:<4}"
                   f"{row['members']:>9}{row['chosen']:>8}")
    for row in summary["fixed_groups"]:
        click.echo(f"  fixed: {row['group']} ({row['width']} channels): {row['reason']}")
    if space.branches:
        click.echo(f"  width 0: the group's residual block removed ({len(space.branches)} blocks may be dropped)")
    f0, p0 = summary["full"]["flops"], summary["full"]["params"]
    f1, p1 = summary["uniform"]["flops"], summary["uniform"]["params"]
    click.echo(f"full:          FLOPs {human(f0):>8}  params {human(p0):>8}")
    click.echo(f"uniform {ratio:<5g}: FLOPs {human(f1):>8}  params {human(p1):>8}  "
               f"({f1 / f0:.1%} FLOPs, {p1 / p0:.1%} params)")


@main.command()
def models():
    """List the zoo models and their default input shapes."""
    from hwprune.models import list_models, model_input_shape

    for name in list_models():
        click.echo(f"{name:<22}{','.join(str(v) for v in model_input_shape(name))}")
