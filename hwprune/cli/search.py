"""``hwprune search``: evolutionary search of a trained PruningNet under latency / FLOPs / params budgets."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..search.config import SearchConfig
from ..training.config import TUNE_STEPS
from .app import main
from .options import DROP_BLOCKS_HELP, MODEL_HELP, WEIGHTS_HELP, default, echo_log, human, parse_count, parse_floats


@main.command()
@click.option("--evaluator", type=click.Choice(["pruningnet", "inherit"]), default="pruningnet", show_default=True,
              help="Score candidates with a trained PruningNet (--checkpoint) or with the dense model's weights, "
                   "importance-ordered and sliced (--model, --weights).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False),
              help="PruningNet checkpoint (runs/x/pruningnet.pt), for --evaluator pruningnet.")
@click.option("--model", "model_name", help=f"With --evaluator inherit: the dense model. {MODEL_HELP}")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help=f"With --model: {WEIGHTS_HELP}")
@click.option("--round-to", type=int, help="With --model: make every width a multiple of N.")
@click.option("--drop-blocks/--keep-blocks", default=None,
              help=f"With --evaluator inherit: {DROP_BLOCKS_HELP} (A PruningNet searches channels only.)")
@click.option("--importance", type=click.Choice(["taylor", "l1", "l2", "bn"]), default="taylor", show_default=True,
              help="With --model: how channels are ordered before slicing.")
@click.option("--tune-steps", type=click.IntRange(min=0), default=TUNE_STEPS, show_default=True,
              help="With --evaluator inherit: distillation steps from the dense model each candidate takes before it "
                   "is scored (0: adaptive BN alone, ~3x faster, but it ranks networks far below the dense latency "
                   "poorly).")
@click.option("--table", type=click.Path(exists=True, dir_okay=False), help="Latency table CSV of this space.")
@click.option("--latency-ms", help="Latency budget(s) in ms, e.g. 1.5 or 1.0,1.5,2.0 (one best per budget).")
@click.option("--latency-fraction", help="Latency budget(s) as fractions of the dense network's latency predicted "
                                         "by --table, e.g. 0.5 or 0.3,0.5 (works on any machine).")
@click.option("--flops", help="FLOPs (MACs) budget, e.g. 20M.")
@click.option("--params", help="Parameter budget, e.g. 0.2M.")
@click.option("--data", help="Dataset (default: the one the PruningNet, or a dense model from `hwprune pretrain`, was "
                              "trained on, with its split; else bundled).")
@click.option("--population", type=int, default=default(SearchConfig, "population"), show_default=True)
@click.option("--generations", type=int, default=default(SearchConfig, "generations"), show_default=True)
@click.option("--parents", type=int, default=default(SearchConfig, "parents"), show_default=True)
@click.option("--keep-top", type=int, default=default(SearchConfig, "keep_top"), show_default=True)
@click.option("--mutations", type=int, default=default(SearchConfig, "mutations"), show_default=True)
@click.option("--crossovers", type=int, default=default(SearchConfig, "crossovers"), show_default=True)
@click.option("--mutation-prob", type=float, default=default(SearchConfig, "mutation_prob"), show_default=True)
@click.option("--local-share", type=float, default=default(SearchConfig, "local_share"), show_default=True,
              help="Share of mutated genes moved one or two choices instead of redrawn (0: MetaPruning's redraw).")
@click.option("--ramp/--no-ramp", default=default(SearchConfig, "ramp"), show_default=True,
              help="Grow the bred share of each generation to all of it by the last one (the random networks "
                   "falling linearly to none): explore first, then refine the fittest.")
@click.option("--fill/--no-fill", default=default(SearchConfig, "fill"), show_default=True,
              help="Widen the winner toward the budget after the last generation, one width at a time while the "
                   "table keeps it within (its proportions kept); --no-fill keeps the fittest as scored.")
@click.option("--fill-rule", type=click.Choice(["proportion", "saliency"]),
              default=default(SearchConfig, "fill_rule"), show_default=True,
              help="Which group the fill widens first: the one grown least relative to the winner, or (--evaluator "
                   "inherit) the one whose added channels bring the most Taylor saliency per ms.")
@click.option("--min-fraction", type=float, default=default(SearchConfig, "min_fraction"), show_default=True,
              help="Consider only networks that use at least this share of the budget (0: any under it).")
@click.option("--calib-batches", type=int, default=default(SearchConfig, "calib_batches"), show_default=True,
              help="BN recalibration batches.")
@click.option("--val-batches", type=int, help="Validation batches per candidate (default: all).")
@click.option("--seed", type=int, default=default(SearchConfig, "seed"), show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes that score candidates, one thread each (forked; Linux, CPU). Default: one per core "
                   "for a network of at most 300M MACs per image (on a 2-core CPU 2 scored 1.2-1.4x as many a "
                   "second as one process on both), else 1; 1 scores them here, on torch's threads. Each candidate "
                   "scores as on one thread, on any number of cores; under torchrun the ranks split them instead.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", default="runs/search", show_default=True, type=click.Path(file_okay=False))
@click.option("--measure-top", type=click.IntRange(min=0), default=0, show_default=True,
              help="Time the N fittest candidates of each latency budget on this machine (the table's backend; "
                   "twice, each network's faster reading kept) and keep the fittest one measured within the budget; "
                   "0: trust the table.")
@click.option("--steer-after", type=click.IntRange(min=0), default=None,
              help="After N generations of each latency budget, time its fittest candidates here (as many as "
                   "--measure-top, else 8) and ask the table from then on for what it predicts for them at the "
                   "budget as measured. Default: half the generations with --measure-top, else 0 (never).")
@click.option("--rerank-top", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --evaluator inherit: score the N fittest candidates of each budget and its uniform, "
                   "magnitude and saliency networks again, tuned --rerank-steps steps each, on 4x --val-batches "
                   "validation batches after those the search scored on (without --val-batches: on all), and keep the best by "
                   "that score (before --measure-top).")
@click.option("--rerank-steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="Distillation steps each candidate --rerank-top scores again takes.")
@click.option("--rerank-draws", type=click.IntRange(min=1), default=1, show_default=True,
              help="Each --rerank-top score the mean over D draws of the batches a candidate is tuned on.")
@click.option("--resume", is_flag=True, help="Continue the search saved in --out.")
@click.option("--allow-mismatch", is_flag=True, help="Use a table measured for another space or machine.")
@click.option("--json", "as_json", is_flag=True, help="Print result.json instead of a summary.")
@click.option("--quiet", is_flag=True)
def search(evaluator, checkpoint, model_name, weights, round_to, drop_blocks, importance, tune_steps, table, latency_ms,
           latency_fraction, flops, params, data, population, generations, parents, keep_top, mutations, crossovers,
           mutation_prob, local_share, ramp, fill, fill_rule,
           min_fraction, calib_batches, val_batches, seed, workers, device, out, measure_top, steer_after, rerank_top,
           rerank_steps, rerank_draws, resume, allow_mismatch, as_json, quiet):
    """Find the most accurate channel configuration under each budget."""
    from ..models.loading import absolute_spec
    from ..runs.folder import RunFolder
    from ..runs.settings import DenseModel
    from ..runs.stages import search_stage
    from ..training.distributed import is_main

    dense = None
    if evaluator == "inherit":
        if not model_name or checkpoint:
            raise click.UsageError("--evaluator inherit takes the dense model (--model, --weights), not --checkpoint")
        dense = DenseModel(absolute_spec(model_name), str(Path(weights).resolve()) if weights else None, round_to,
                           importance=importance, drop_blocks=drop_blocks is not False)
    elif drop_blocks:
        raise click.UsageError("--drop-blocks searches the dense model's space: it needs --evaluator inherit (a "
                               "PruningNet cannot drop blocks)")
    elif rerank_top:
        raise click.UsageError("--rerank-top tunes inherited weights longer: it needs --evaluator inherit")
    elif not checkpoint or model_name:
        raise click.UsageError("--evaluator pruningnet takes a trained PruningNet (--checkpoint); to search with the "
                               "dense model's weights use --evaluator inherit --model ... --weights ...")

    lat, frac = parse_floats(latency_ms), parse_floats(latency_fraction)
    fl, pa = parse_count(flops), parse_count(params)
    if lat is None and frac is None and fl is None and pa is None:
        raise click.UsageError("give at least one budget: --latency-ms, --latency-fraction, --flops or --params")
    if steer_after is None:  # measuring the winners here: measure halfway through too, and steer by it
        steer_after = generations // 2 if measure_top and (lat or frac) else 0
    cfg = SearchConfig(population=population, keep_top=keep_top, parents=parents, mutations=mutations,
                       crossovers=crossovers, mutation_prob=mutation_prob, local_share=local_share, ramp=ramp,
                       fill=fill, fill_rule=fill_rule, min_fraction=min_fraction, generations=generations,
                       calib_batches=calib_batches, val_batches=val_batches, seed=seed,
                       steer_after=steer_after, steer_top=measure_top or default(SearchConfig, "steer_top"),
                       workers=workers)
    result = search_stage(RunFolder(out), checkpoint=checkpoint, dense=dense, table=table, latency_ms=lat,
                          latency_fraction=frac, flops=fl, params=pa, data=data, config=cfg, device=device,
                          resume=resume, allow_mismatch=allow_mismatch, measure_top=measure_top,
                          tune_steps=tune_steps, rerank=(rerank_top, rerank_steps, rerank_draws), log=echo_log(quiet))
    if not is_main():  # under torchrun every rank holds the result; rank 0 reports it
        return
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
        return
    click.echo(f"{result.stats['evaluated']} candidates evaluated, {result.stats['candidates_per_s']:.2f}/s; "
               f"results in {out}/result.json, history.csv, pareto.png")
    for best in result.best:
        u = best.get("uniform")
        lat_s = f"{best['latency_ms']:.3f} ms  " if best["latency_ms"] is not None else ""
        if best.get("measured_ms") is not None:
            lat_s += f"(measured {best['measured_ms']:.3f} ms)  "
        line = (f"budget {_label(best['budget'])}: best top-1 {best['fitness']:.4f}  {lat_s}"
                f"FLOPs {human(best['flops'])}  params {human(best['params'])}")
        if u:
            line += f"  | uniform x{u['ratio']:.2f}: {u['fitness']:.4f}{_held(u)}"
        if best.get("magnitude"):
            line += f"  | {best['magnitude']['metric']} magnitude: {best['magnitude']['fitness']:.4f}" \
                    f"{_held(best['magnitude'])}"
        if best.get("saliency"):
            line += f"  | saliency per cost: {best['saliency']['fitness']:.4f}"
        click.echo(line)


def _held(b: dict) -> str:
    """A baseline's measured latency, where --measure-top held it to the budget as measured."""
    return f" (measured {b['measured_ms']:.3f} ms)" if b.get("measured_ms") is not None else ""


def _label(b: dict) -> str:
    parts = []
    if b["latency_ms"] is not None:
        parts.append(f"{b['latency_ms']:g} ms")
    if b["flops"] is not None:
        parts.append(f"{human(b['flops'])} FLOPs")
    if b["params"] is not None:
        parts.append(f"{human(b['params'])} params")
    return ", ".join(parts)
