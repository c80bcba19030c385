"""Which of the CNNs people use can hwprune prune, side by side with Torch-Pruning.

    python benchmarks/model_coverage.py [--models NAME ...] [--size 224]

Every model of torchvision and timm in ``MODELS`` that imports here is built with random weights (nothing is
downloaded), traced by ``SearchSpace.from_model`` at 1x3xSIZExSIZE, slimmed to ``uniform(0.5)``,
materialized and run; the pruned network must give the dense output shape, and the space's FLOPs must equal the
MACs counted on the materialized network (``hwprune_flops_exact``). Torch-Pruning's MetaPruner (L1 magnitude,
pruning ratio 0.5, classifier kept) prunes the same model; both FLOPs ratios are counted the same way (the
multiply-accumulates of convs and linears). Writes ``model_coverage.csv`` under ``$HWPRUNE_BENCH_RESULTS``
(default ``benchmarks/results``; written after every model, and a rerun of some models replaces their rows;
each tool gets ``--timeout`` seconds per model) and prints a summary.

torchvision and timm are not dependencies of hwprune: ``pip install --no-deps torchvision timm``. torchvision's
PyPI wheel is built for CUDA torch; on a CPU-only torch it imports once its ``nms`` and ``qnms`` operators are
declared (done here: classification models never call them).
"""
from __future__ import annotations

import argparse
import copy
import csv
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

import hwprune as hp
from hwprune.core.macs import count_macs

TORCHVISION = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_large",
               "mobilenet_v3_small", "efficientnet_b0", "efficientnet_v2_s", "regnet_x_400mf", "regnet_y_400mf",
               "shufflenet_v2_x1_0", "mnasnet1_0", "densenet121", "squeezenet1_1", "vgg11_bn", "convnext_tiny",
               "googlenet", "alexnet"]
TIMM = ["efficientnet_b0", "mobilenetv3_large_100", "regnety_002", "ghostnet_100", "repvgg_a0", "cspresnet50",
        "hrnet_w18_small", "convnext_nano", "resnet18", "rexnet_100", "dla34", "mixnet_s"]
MODELS = [f"torchvision/{m}" for m in TORCHVISION] + [f"timm/{m}" for m in TIMM]
COLUMNS = ["model", "hwprune_ok", "hwprune_groups", "hwprune_flops_ratio", "hwprune_flops_exact", "hwprune_error",
           "tp_ok", "tp_flops_ratio", "tp_error", "hwprune_seconds", "tp_seconds"]


def import_zoos() -> dict:
    zoos = {}
    try:
        import torchvision.models as tvm
    except Exception:  # a CUDA build on a CPU-only torch: declare the detection ops it registers kernels for
        for mod in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[mod]
        try:
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
            import torchvision.models as tvm
        except Exception as e:
            tvm = None
            print(f"torchvision does not import ({e}); its models are skipped")
    if tvm is not None:
        zoos["torchvision"] = lambda name: tvm.get_model(name, weights=None)
    try:
        import timm
        zoos["timm"] = lambda name: timm.create_model(name, pretrained=False)
    except Exception as e:
        print(f"timm does not import ({e}); its models are skipped")
    return zoos


def first_line(e: BaseException, n: int = 300) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= n else text[: n - 3] + "..."


def classifier(model: nn.Module) -> list[nn.Module]:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return linears[-1:] or convs[-1:]  # squeezenet classifies with a conv


def with_hwprune(model: nn.Module, x: torch.Tensor, dense_out: torch.Size, dense_macs: int) -> dict:
    space = hp.SearchSpace.from_model(model, tuple(x.shape))
    enc = space.uniform(0.5)
    pruned = space.materialize(enc, source=model).eval()
    with torch.no_grad():
        out = pruned(x)
    if out.shape != dense_out:
        raise RuntimeError(f"pruned output {tuple(out.shape)} != dense {tuple(dense_out)}")
    macs = count_macs(pruned, [x])
    return {"hwprune_groups": len(space), "hwprune_flops_ratio": round(macs / dense_macs, 4),
            "hwprune_flops_exact": macs == space.flops(enc) and count_macs(model, [x]) == space.flops(space.full())}


def with_torch_pruning(model: nn.Module, x: torch.Tensor, dense_out: torch.Size, dense_macs: int) -> dict:
    import torch_pruning as tp

    model = copy.deepcopy(model)
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=classifier(model))
    pruner.step()
    with torch.no_grad():
        out = model(x)
    if out.shape != dense_out:
        raise RuntimeError(f"pruned output {tuple(out.shape)} != dense {tuple(dense_out)}")
    return {"tp_flops_ratio": round(count_macs(model, [x]) / dense_macs, 4)}


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def run(name: str, build, size: int, timeout_s: int) -> dict:
    row = {"model": name}
    torch.manual_seed(0)
    model = build(name.split("/", 1)[1]).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        dense_out = model(x).shape
    dense_macs = count_macs(model, [x])
    for tool, fn in (("hwprune", with_hwprune), ("tp", with_torch_pruning)):
        t0 = time.perf_counter()
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(timeout_s)
        try:
            row.update(fn(model, x, dense_out, dense_macs))
            row[f"{tool}_ok"] = True
        except _Timeout:
            row[f"{tool}_ok"], row[f"{tool}_error"] = False, f"gave up after {timeout_s} s"
        except Exception as e:  # every failure is a result here, reported in the CSV
            row[f"{tool}_ok"], row[f"{tool}_error"] = False, f"{type(e).__name__}: {first_line(e)}"
        finally:
            signal.alarm(0)
        row[f"{tool}_seconds"] = round(time.perf_counter() - t0, 2)
    return row


def write(out: Path, rows: list[dict]) -> list[dict]:
    """Write ``rows`` into the CSV at ``out``, replacing the rows of the same models and keeping the others."""
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = {}
    if out.exists():
        with open(out, newline="") as f:
            kept = {r["model"]: r for r in csv.DictReader(f)}
    kept.update({r["model"]: r for r in rows})
    rows = [kept[m] for m in MODELS if m in kept] + [r for m, r in kept.items() if m not in MODELS]
    for r in rows:
        for k in ("hwprune_ok", "tp_ok", "hwprune_flops_exact"):
            r[k] = r.get(k) in (True, "True")
        r["hwprune_flops_ratio"] = float(r["hwprune_flops_ratio"]) if r.get("hwprune_flops_ratio") not in (None, "") \
            else ""
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(out)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS, help="zoo/name, e.g. timm/efficientnet_b0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--timeout", type=int, default=180, help="seconds each tool gets per model")
    ap.add_argument("--out", default=os.environ.get("HWPRUNE_BENCH_RESULTS", "benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    zoos = import_zoos()
    out = Path(args.out) / "model_coverage.csv"
    rows = []
    for name in args.models:
        zoo = name.split("/", 1)[0]
        if zoo not in zoos:
            continue
        row = run(name, zoos[zoo], args.size, args.timeout)
        ok = lambda t: "ok" if row[f"{t}_ok"] else "refused"  # noqa: E731
        print(f"{name:36s} hwprune {ok('hwprune'):7s} {row.get('hwprune_flops_ratio', ''):<7} "
              f"torch-pruning {ok('tp'):7s} {row.get('tp_flops_ratio', ''):<7} "
              f"{row.get('hwprune_error', '')[:120]}", flush=True)
        rows = write(out, [row])  # after every model
    if not rows:
        print("neither torchvision nor timm imports here (pip install --no-deps torchvision timm): nothing to run")
        return
    n = len(rows)
    hw = [r for r in rows if r["hwprune_ok"]]
    tp_ = [r for r in rows if r["tp_ok"]]
    wrong = [r["model"] for r in hw if not r["hwprune_flops_exact"]]
    halved = [r for r in hw if r["hwprune_flops_ratio"] != "" and r["hwprune_flops_ratio"] <= 0.45]
    print(f"\nhwprune prunes {len(hw)} of {n} models ({len(halved)} to <= 0.45 of the dense FLOPs at uniform(0.5)); "
          f"Torch-Pruning {len(tp_)} of {n}. Space FLOPs != real MACs on: {wrong or 'none'}. -> {out}")


if __name__ == "__main__":
    main()
