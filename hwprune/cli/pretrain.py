"""``hwprune pretrain``: train the dense model first, for a model that has no trained weights yet."""
from __future__ import annotations

import click

from ..runs.settings import PretrainJob
from .app import main
from .options import MODEL_HELP, default


@main.command()
@click.option("--model", "model_name", default=default(PretrainJob, "model"), show_default=True, help=MODEL_HELP)
@click.option("--data", default=default(PretrainJob, "data"), show_default=True,
              help="'bundled' (5,000 MNIST digits), 'fashion-mnist' (apt-get install dataset-fashion-mnist) or a "
                   "path: ImageFolder (or train/ and val/ ImageFolders), CIFAR python batches, MNIST idx.")
@click.option("--image-size", type=int, help="Resize / pad images to this size.")
@click.option("--width-mult", type=float, help="Width multiplier of a zoo model.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=default(PretrainJob, "batch_size"), show_default=True)
@click.option("--lr", type=float, default=default(PretrainJob, "train")["lr"], show_default=True,
              help="Peak learning rate (cosine schedule).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, help="Use only N training images (a seeded random subset).")
@click.option("--device", default=default(PretrainJob, "device"), show_default=True)
@click.option("--out", default="runs/dense", show_default=True, type=click.Path(file_okay=False),
              help="Run folder: dense.pt (use it as --weights), history.csv, run.json.")
@click.option("--resume", is_flag=True, help="Continue the run in --out with its saved settings.")
@click.option("--quiet", is_flag=True)
def pretrain(model_name, data, image_size, width_mult, epochs, batch_size, lr, seed, limit, device, out, resume,
             quiet):
    """Train the dense model; its weights then start the PruningNet, the inherit search and fine-tuning."""
    from ..models.loading import absolute_spec
    from ..runs.folder import RunFolder
    from ..runs.stages import pretrain_stage

    job = PretrainJob(model=absolute_spec(model_name), data=data, image_size=image_size, width_mult=width_mult,
                      batch_size=batch_size, limit=limit, device=device,
                      train={**default(PretrainJob, "train"), "epochs": epochs, "lr": lr, "seed": seed})
    run = RunFolder(out)
    pretrain_stage(run, job, resume=resume, progress=False if quiet else None,
                   log=(lambda s: None) if quiet else None)
    s = run.stage("pretrain")["summary"]
    acc = " ".join(f"{k} {v:.4f}" for k, v in s.items() if v is not None)
    click.echo(f"wrote {out}/dense.pt  {acc}  (use it as --weights {out}/dense.pt)")
