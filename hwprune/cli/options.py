"""Option parsers shared by the commands."""
from __future__ import annotations

import math

import click


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' -> (1, 3, 224, 224)."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape like 1,3,224,224") from None
    if len(shape) < 2 or min(shape) < 1:
        raise click.BadParameter(f"{text!r} is not a shape like 1,3,224,224")
    return shape


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


MODEL_HELP = ("A zoo name (see `hwprune models`), package.module:function or path/to/file.py:function "
              "(the function returns the nn.Module).")
WEIGHTS_HELP = "The model's trained weights: a state_dict, or a checkpoint holding one under 'state_dict' or 'model'."
DROP_BLOCKS_HELP = ("--drop-blocks (the default): a residual block may be removed too, a group inside a residual "
                    "branch also taking width 0; --keep-blocks: channels only. A latency table serves both.")


def model_options(f):
    """--model, --weights, --input-shape, --num-classes, --width-mult, --round-to, --drop-blocks/--keep-blocks: a
    model and its space."""
    for opt in reversed([
        click.option("--model", "model_name", required=True, help=MODEL_HELP),
        click.option("--weights", type=click.Path(exists=True, dir_okay=False), help=WEIGHTS_HELP),
        click.option("--input-shape", help="Example input, e.g. 1,3,224,224 (default: the model's own)."),
        click.option("--num-classes", type=int, help="Classifier outputs (default: the model's own)."),
        click.option("--width-mult", type=float, help="Width multiplier of the unpruned model."),
        click.option("--round-to", type=int, help="Make every width a multiple of N."),
        click.option("--drop-blocks/--keep-blocks", default=True, help=DROP_BLOCKS_HELP),
    ]):
        f = opt(f)
    return f


def build_space(model_name, weights, input_shape, num_classes, width_mult, round_to, drop_blocks=True):
    """The model (with its weights) and its SearchSpace, from the options of :func:`model_options`."""
    import hwprune as hp
    from hwprune.models import load_model, model_input_shape

    if ":" in model_name and not input_shape:
        raise click.UsageError(f"--model {model_name} is not a zoo model: give its --input-shape, e.g. 1,3,32,32")
    shape = parse_shape(input_shape) if input_shape else (1,) + model_input_shape(model_name)
    # the input's channels build a zoo model's first conv: 1,1,32,32 is a resnet20 for one-channel images
    model = load_model(model_name, weights=weights, num_classes=num_classes, width_mult=width_mult,
                       in_channels=shape[1] if input_shape else None)
    return model, hp.SearchSpace.from_model(model, shape, round_to=round_to, drop_blocks=drop_blocks)


_SUFFIX = {"K": 1e3, "M": 1e6, "G": 1e9}


def parse_count(text: str | None) -> float | None:
    """'20M' -> 2e7, '0.2M' -> 2e5, '1.5G' -> 1.5e9, '300000' -> 3e5."""
    if text is None:
        return None
    t = text.strip().upper()
    try:
        value = float(t[:-1]) * _SUFFIX[t[-1]] if t and t[-1] in _SUFFIX else float(t)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a count like 20M, 0.2M or 1.5G") from None
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{text!r}: a budget must be a positive count like 20M")
    return value


def parse_floats(text: str | None) -> list[float] | None:
    """'1.0,1.5,2' -> [1.0, 1.5, 2.0]."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a list of numbers like 1.0,1.5,2.0") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise click.BadParameter(f"{text!r}: budgets must be positive finite numbers")
    return values


def default(cls, name: str):
    """The default of dataclass field ``name``: options take their defaults from the config classes, never
    a second copy."""
    import dataclasses

    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def echo_log(quiet: bool):
    """A log function for the library: lines to stderr, or nothing with --quiet; under torchrun, rank 0 alone
    says them (every rank runs the same steps)."""
    from ..training.distributed import is_main

    return (lambda s: None) if quiet else (lambda s: click.echo(s, err=True) if is_main() else None)
