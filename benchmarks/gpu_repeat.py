"""Does a GPU latency measurement repeat? The same networks timed again and again, in fresh processes, and after a burst
of training in the same process, against the table that predicts them.

    python benchmarks/gpu_repeat.py [--table benchmarks/results/gpu_pipeline/table.csv] [--processes 2]

The networks: the four that steered gpu_pipeline.sh's search on an H200 (three of them measured 1.6x their
prediction there, the fourth 0.94x), its winner, the uniform network of the same budget and the dense one. Each
process times them ``--repeats`` times (the search's own meter, :func:`hwprune.search.measured.table_meter`, one
timing each: the meter's default now takes two and keeps the faster, which hides what this script looks for), then
trains resnet18 for ``--train-seconds`` on random images (as the search's candidates are tuned between two
timings), then times them again. Writes ``gpu_repeat.csv`` (process, phase, repeat, network, predicted_ms, measured_ms)
next to the table and prints the measured / predicted ratio per network, process and phase.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = {  # name: encoding (resnet18, 10 classes, 1 channel, 224x224, widths in multiples of 32)
    "steer1": (1, 1, 2, 3, 3, 3, 5, 3, 0, 10, 10, 4),
    "steer2": (1, 2, 2, 1, 2, 0, 6, 5, 6, 14, 13, 3),
    "steer3": (1, 1, 2, 3, 3, 3, 5, 3, 1, 10, 8, 4),
    "steer4": (0, 2, 2, 2, 3, 3, 4, 6, 6, 6, 11, 11),
    "winner": (1, 0, 0, 3, 1, 0, 5, 3, 0, 14, 6, 7),
    "uniform": (0, 1, 1, 2, 3, 3, 5, 6, 6, 10, 11, 11),
}


def one_process(table_path: str, repeats: int, train_seconds: float, device: str) -> list[dict]:
    import torch

    import hwprune as hp
    from hwprune.search.measured import table_meter

    size = 224
    space = hp.SearchSpace.from_model(hp.create_model("resnet18", num_classes=10, in_channels=1).eval(),
                                      (1, 1, size, size), round_to=32, drop_blocks=True)
    table = hp.LatencyTable.load(table_path, space, allow_mismatch=True).for_space(space)
    names = list(NETWORKS) + ["dense"]
    encs = list(NETWORKS.values()) + [tuple(space.full())]
    meter = table_meter(space, table, timings=1)  # each timing on its own: what this script looks at
    rows = []

    def time_all(phase: str) -> None:
        for r in range(repeats):
            for name, enc, ms in zip(names, encs, meter(encs)):
                rows.append({"phase": phase, "repeat": r, "network": name, "predicted_ms": round(table.predict(enc), 5),
                             "measured_ms": round(ms, 5)})

    time_all("fresh")
    model = hp.create_model("resnet18", num_classes=10, in_channels=1).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 1, size, size, device=device), torch.randint(0, 10, (64,), device=device)
    end = time.time() + train_seconds
    steps = 0
    while time.time() < end:
        with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    time_all(f"after {steps} training steps")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(ROOT / "benchmarks/results/gpu_pipeline/table.csv"))
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--train-seconds", type=float, default=10.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", help="CSV to write (default: gpu_repeat.csv next to the table)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # one process's rows, as CSV on stdout
        rows = one_process(args.table, args.repeats, args.train_seconds, args.device)
        w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        return
    out = Path(args.out or Path(args.table).with_name("gpu_repeat.csv"))
    rows = []
    for p in range(args.processes):
        cmd = [sys.executable, __file__, "--child", "--table", args.table, "--repeats", str(args.repeats),
               "--train-seconds", str(args.train_seconds), "--device", args.device]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"process {p} failed:\n{done.stderr[-3000:]}")
        rows += [{"process": p, **r} for r in csv.DictReader(done.stdout.splitlines())]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"measured / predicted per network ({out}):")
    keys = sorted({(r["process"], r["phase"]) for r in rows}, key=lambda k: (k[0], k[1] != "fresh"))
    names = list(NETWORKS) + ["dense"]
    print("process  phase".ljust(40) + "".join(n.rjust(9) for n in names))
    for k in keys:
        for rep in sorted({r["repeat"] for r in rows if (r["process"], r["phase"]) == k}):
            got = {r["network"]: float(r["measured_ms"]) / float(r["predicted_ms"])
                   for r in rows if (r["process"], r["phase"], r["repeat"]) == (*k, rep)}
            print(f"{k[0]}  {k[1]} #{rep}".ljust(40) + "".join(f"{got[n]:9.3f}" for n in names))


if __name__ == "__main__":
    main()
