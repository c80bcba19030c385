"""``hwprune retrain``: train the chosen pruned network as a plain model."""
from __future__ import annotations

import click

from ..training.config import TrainConfig
from .app import main
from .options import default


@main.command()
@click.option("--result", type=click.Path(exists=True, dir_okay=False), help="A search's result.json.")
@click.option("--budget", type=float, help="Which latency budget (ms) of the result; needed when it has several.")
@click.option("--baseline", type=click.Choice(["uniform", "magnitude", "saliency"]),
              help="Retrain that budget's uniform-width, global-magnitude or latency-saliency network instead (same "
                   "budget, same table).")
@click.option("--uniform-baseline", is_flag=True, hidden=True, help="Same as --baseline uniform.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False),
              help="PruningNet checkpoint (default: the one the search used).")
@click.option("--uniform", "ratio", type=float, help="With --checkpoint: retrain a uniform width ratio (1.0 = dense).")
@click.option("--init", type=click.Choice(["inherit", "scratch", "pruningnet"]),
              help="Start from the dense model's ordered weights (the default for a search with --evaluator "
                   "inherit), fresh initialisation (the paper's way; the default after a PruningNet search) or "
                   "the PruningNet's generated weights.")
@click.option("--no-distill", is_flag=True, help="With --init inherit: do not distil from the dense model.")
@click.option("--teacher", type=click.Path(exists=True, dir_okay=False),
              help="A retrained model checkpoint (e.g. --uniform 1.0) to distil from.")
@click.option("--data", help="Dataset (default: the PruningNet's).")
@click.option("--epochs", type=int, default=default(TrainConfig, "epochs"), show_default=True)
@click.option("--batch-size", type=int, help="Default: the PruningNet's.")
@click.option("--lr", type=float, help="Peak learning rate (default: 0.01 x batch / 64).")
@click.option("--weight-decay", type=float, default=default(TrainConfig, "weight_decay"), show_default=True)
@click.option("--schedule", type=click.Choice(["linear", "cosine", "constant"]), default="cosine", show_default=True)
@click.option("--seed", type=int, help="Default: the PruningNet run's.")
@click.option("--checkpoint-every", type=int, default=default(TrainConfig, "checkpoint_every"))
@click.option("--device", default="auto", show_default=True)
@click.option("--out", default="runs/retrain", show_default=True, type=click.Path(file_okay=False))
@click.option("--resume", is_flag=True)
@click.option("--quiet", is_flag=True)
def retrain(result, budget, baseline, uniform_baseline, checkpoint, ratio, init, no_distill, teacher, data, epochs,
            batch_size, lr, weight_decay, schedule, seed, checkpoint_every, device, out, resume, quiet):
    """Retrain a searched (or baseline) pruned network; writes OUT/model.pt with its accuracy."""
    from ..files.checkpoint import load_checkpoint
    from ..runs.deploy_stages import retrain_stage
    from ..runs.folder import RunFolder

    train = dict(epochs=epochs, lr=lr, weight_decay=weight_decay, schedule=schedule, checkpoint_every=checkpoint_every,
                 eval_ratios=())
    if seed is not None:
        train["seed"] = seed
    if uniform_baseline:
        baseline = baseline or "uniform"
    retrain_stage(RunFolder(out), result=result, budget=budget, baseline=baseline,
                  checkpoint=checkpoint, ratio=ratio, init=init, distill=not no_distill, teacher=teacher, data=data,
                  batch_size=batch_size, train=train, device=device, resume=resume, progress=False if quiet else None,
                  log=(lambda s: None) if quiet else None)
    ck = load_checkpoint(f"{out}/model.pt")
    acc = " ".join(f"{k} {ck[k]:.4f}" for k in ("val_acc", "test_acc") if ck.get(k) is not None)
    click.echo(f"wrote {out}/model.pt  channels {sum(ck['channels'].values())} in {len(ck['channels'])} groups  {acc}")
