"""``hwprune train``: train a PruningNet on a dataset (bundled MNIST subset by default)."""
from __future__ import annotations

from pathlib import Path

import click

from ..runs.settings import TrainJob
from ..training.config import SAMPLING, TrainConfig
from .app import main
from .options import MODEL_HELP, WEIGHTS_HELP, default


@main.command()
@click.option("--model", "model_name", default=default(TrainJob, "model"), show_default=True, help=MODEL_HELP)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help=WEIGHTS_HELP)
@click.option("--data", default=default(TrainJob, "data"), show_default=True,
              help="'bundled' (5,000 MNIST digits), 'fashion-mnist' (apt-get install dataset-fashion-mnist) or a "
                   "path: ImageFolder (or train/ and val/ ImageFolders), CIFAR python batches, MNIST idx.")
@click.option("--image-size", type=int, help="Resize / pad images to this size.")
@click.option("--width-mult", type=float, help="Width multiplier of the unpruned model.")
@click.option("--round-to", type=int, help="Make every width a multiple of N.")
@click.option("--epochs", type=int,
              help=f"Epochs in all (default {default(TrainConfig, 'epochs')}; with --resume, the saved run's).")
@click.option("--batch-size", type=int, default=default(TrainJob, "batch_size"), show_default=True,
              help="Per process.")
@click.option("--lr", type=float, help="Peak learning rate (default: scaled to the batch size).")
@click.option("--weight-decay", type=float, default=default(TrainConfig, "weight_decay"), show_default=True)
@click.option("--label-smoothing", type=float, default=default(TrainConfig, "label_smoothing"), show_default=True)
@click.option("--schedule", type=click.Choice(["linear", "cosine", "constant"]),
              default=default(TrainConfig, "schedule"), show_default=True)
@click.option("--hidden", type=int, default=default(TrainJob, "hidden"), show_default=True,
              help="Generator hidden units.")
@click.option("--rank", "gen_rank", type=click.IntRange(min=0),
              help="Generator output with N full-size bases; 0: the paper's full output layer. [default: 4 with "
                   "--weights, else 0]")
@click.option("--bn", type=click.Choice(["per_choice", "shared"]), default=default(TrainJob, "bn"), show_default=True)
@click.option("--sampling", type=click.Choice(SAMPLING), default=default(TrainConfig, "sampling"),
              show_default=True, help="Per step: the widest, the narrowest and --random-samples random networks "
                                      "(sandwich), or MetaPruning's one random network (single).")
@click.option("--random-samples", type=int, default=default(TrainConfig, "random_samples"), show_default=True,
              help="Random networks per sandwich step.")
@click.option("--distill", type=float, default=default(TrainConfig, "distill"), show_default=True,
              help="Weight of the widest network's soft outputs in the other networks' loss (0: labels only).")
@click.option("--sample-table", type=click.Path(exists=True, dir_okay=False),
              help="A latency table of this space: draw the random networks from the latency range the search "
                   "will explore (see --sample-from) instead of uniformly per layer.")
@click.option("--sample-from", type=float, default=default(TrainJob, "sample_from"), show_default=True,
              help="With --sample-table: the range starts at this fraction of the dense network's latency.")
@click.option("--seed", type=int, default=default(TrainConfig, "seed"), show_default=True)
@click.option("--checkpoint-every", type=int, default=default(TrainConfig, "checkpoint_every"),
              help="Also checkpoint every N steps.")
@click.option("--limit", type=int, help="Use only N training images (a seeded random subset).")
@click.option("--eval-ratios", default=",".join(str(r) for r in default(TrainConfig, "eval_ratios")), show_default=True,
              help="Uniform widths scored on validation after each epoch ('' for none).")
@click.option("--workers", type=int, default=default(TrainJob, "workers"), show_default=True,
              help="Data loader processes.")
@click.option("--device", default=default(TrainJob, "device"), show_default=True, help="cpu, cuda, cuda:1 or auto.")
@click.option("--out", default="runs/pruningnet", show_default=True, type=click.Path(file_okay=False),
              help="Run folder (run.json, checkpoint, history).")
@click.option("--resume", is_flag=True, help="Continue the run in --out with its saved settings.")
@click.option("--quiet", is_flag=True, help="No progress bar or log lines.")
def train(model_name, weights, data, image_size, width_mult, round_to, epochs, batch_size, lr, weight_decay,
          label_smoothing, schedule, hidden, gen_rank, bn, sampling, random_samples, distill, sample_table,
          sample_from, seed, checkpoint_every, limit, eval_ratios, workers, device,
          out, resume, quiet):
    """Train a PruningNet by structure sampling (sandwich rule and in-place distillation by default).

    Runs data-parallel under torchrun: torchrun --nproc_per_node 2 -m hwprune.cli train ...
    """
    from ..runs.folder import RunFolder
    from ..runs.stages import train_stage

    from ..models.loading import absolute_spec

    job = TrainJob(model=absolute_spec(model_name), weights=str(Path(weights).resolve()) if weights else None,
                   data=data, image_size=image_size, width_mult=width_mult, round_to=round_to,
                   batch_size=batch_size, workers=workers, limit=limit, hidden=hidden, rank="auto" if gen_rank is None else gen_rank or None, bn=bn,
                   sample_table=str(Path(sample_table).resolve()) if sample_table else None, sample_from=sample_from,
                   device=device,
                   train=dict(lr=lr, weight_decay=weight_decay, label_smoothing=label_smoothing,
                              schedule=schedule, sampling=sampling, random_samples=random_samples,
                              distill=distill, seed=seed, checkpoint_every=checkpoint_every,
                              eval_ratios=tuple(float(r) for r in eval_ratios.split(",") if r.strip()),
                              **({"epochs": epochs} if epochs is not None else {})))
    train_stage(RunFolder(out), job, resume=resume, progress=False if quiet else None,
                log=(lambda s: None) if quiet else None)
