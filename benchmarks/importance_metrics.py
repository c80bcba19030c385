"""Which channel importance to order by: inherited accuracy of the pruned network, per metric, before fine-tuning.

    python benchmarks/importance_metrics.py [--models resnet20 mobilenet_v2_cifar] [--seeds 0 1 2]
        [--widths 0.7 0.5 0.3] [--epochs 6] [--dense-from runs/avl_inherit]

For each model and seed, a dense network trained on the bundled MNIST subset (or the
accuracy benchmark's ``dense_s<seed>/model.pt`` under ``--dense-from``, when it is
there) is ordered by each metric of :mod:`hwprune.core.importance` (``l1``, ``l2``,
``bn``, ``taylor``) and, as the reference, left in its trained order. Each ordering is
sliced to uniform widths and to the global-magnitude network of the same FLOPs; BN
statistics are recalibrated on 10 training batches and validation top-1 is recorded.
This is what the ``inherit`` evaluator scores and where fine-tuning starts, so the
best metric here is the default of ``--importance``.

Writes ``benchmarks/results/importance_metrics.csv`` (one row per model, seed, order,
network) and ``importance_metrics.md`` (means over seeds), and prints the table.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import hwprune as hp
from hwprune.core.importance import METRICS, order_channels
from hwprune.data import load_dataset, make_loaders
from hwprune.files.atomic import write_atomic
from hwprune.search.baselines import magnitude_encodings
from hwprune.supernet.evaluate import recalibrate_model_bn
from hwprune.training.metrics import accuracy

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("HWPRUNE_BENCH_RESULTS", ROOT / "benchmarks" / "results"))
ORDERS = ("trained", *METRICS)  # "trained": the channels as training left them (a random subset when sliced)


def dense_model(name: str, seed: int, loaders, epochs: int, dense_from: Path | None, work: Path):
    """The seed's trained dense network: the accuracy benchmark's, or trained here (and kept under ``work``)."""
    for path in ([dense_from / name / f"dense_s{seed}" / "model.pt"] if dense_from else []) + [
            work / name / f"dense_s{seed}" / "model.pt"]:
        if path.exists():
            return hp.load_pruned(path)[0], str(path)
    space = hp.SearchSpace.from_model(hp.create_model(name, in_channels=1), (1, 1, 32, 32))
    cfg = hp.TrainConfig(epochs=epochs, lr=0.05, seed=seed, schedule="cosine", eval_ratios=())
    model, _ = hp.retrain(space, space.full(), loaders.train, config=cfg, run_dir=work / name / f"dense_s{seed}",
                          resume=True, progress=False, log=lambda s: None)
    return model.eval(), "trained here"


def networks(space, importance: dict, widths) -> dict[str, tuple[int, ...]]:
    """Uniform widths, and for each the global-magnitude network (by this order's scores) of at most its FLOPs."""
    out = {}
    thresholds, encs = magnitude_encodings(space, importance)
    flops = space.flops_batch(encs)
    for w in widths:
        enc = space.uniform(w)
        out[f"uniform {w:g}"] = enc
        ok = np.flatnonzero(flops <= space.flops(enc))
        out[f"magnitude @ uniform {w:g} FLOPs"] = tuple(int(v) for v in encs[ok[0]])
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenet_v2_cifar"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--widths", nargs="+", type=float, default=[0.7, 0.5, 0.3])
    ap.add_argument("--epochs", type=int, default=6, help="dense training, where no trained network is found")
    ap.add_argument("--calib-batches", type=int, default=10)
    ap.add_argument("--dense-from", type=Path, help="the accuracy benchmark's work folder (reuse its dense networks)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "importance_metrics")
    args = ap.parse_args(argv)
    started = time.time()
    data = load_dataset("bundled", seed=0)
    loaders = make_loaders(data, 64, seed=0)
    rows = []
    for name in args.models:
        for seed in args.seeds:
            dense, source = dense_model(name, seed, loaders, args.epochs, args.dense_from, args.work)
            space = hp.SearchSpace.from_model(hp.create_model(name, in_channels=1).eval(), (1, 1, 32, 32),
                                              round_to=4)
            dense_acc = accuracy(dense, loaders.val)
            for order in ORDERS:
                t = time.perf_counter()
                model = dense if order == "trained" else order_channels(space, dense, order, data=loaders.calib)
                order_s = time.perf_counter() - t
                scores = (model.hwprune_importance["scores"] if order != "trained"
                          else order_channels(space, dense, "l1").hwprune_importance["scores"])
                for label, enc in networks(space, scores, args.widths).items():
                    pruned = space.materialize(enc, source=model)
                    recalibrate_model_bn(pruned, loaders.calib, args.calib_batches)
                    rows.append({"model": name, "seed": seed, "order": order, "network": label,
                                 "flops": space.flops(enc), "val_acc": round(accuracy(pruned, loaders.val), 4),
                                 "dense_val_acc": round(dense_acc, 4), "order_seconds": round(order_s, 2),
                                 "dense": source})
                print(f"{name} seed {seed} {order:8s}: " + "  ".join(
                    f"{r['network'].split(' @')[0].replace('uniform ', 'u')} {r['val_acc']:.3f}"
                    for r in rows if (r["model"], r["seed"], r["order"]) == (name, seed, order)), flush=True)
    env = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
           "torch": torch.__version__, "hwprune": hp.__version__, "seconds": round(time.time() - started)}
    buf = io.StringIO()
    buf.write(f"# {json.dumps(env)}\n")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_atomic(RESULTS / "importance_metrics.csv", lambda f: f.write(buf.getvalue().encode()))
    table = summary(rows)
    write_atomic(RESULTS / "importance_metrics.md", lambda f: f.write((table + "\n").encode()))
    print(table)
    print(f"wrote {RESULTS / 'importance_metrics.csv'} and .md in {env['seconds']} s")


def summary(rows: list[dict]) -> str:
    """Validation top-1 (mean over seeds) per model and network, one column per order; the best order in bold."""
    cols = list(dict.fromkeys(r["order"] for r in rows))
    lines = ["| model | network (inherited, BN recalibrated, no fine-tuning) | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for model in dict.fromkeys(r["model"] for r in rows):
        for net in dict.fromkeys(r["network"] for r in rows if r["model"] == model):
            means = {c: float(np.mean([r["val_acc"] for r in rows if (r["model"], r["network"], r["order"])
                                       == (model, net, c)])) for c in cols}
            best = max(means.values())
            cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in means.values()]
            lines.append(f"| {model} | {net} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
