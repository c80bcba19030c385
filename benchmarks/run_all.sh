#!/usr/bin/env bash
# Rerun every benchmark and record the machine, library versions and date beside the results.
#
#   benchmarks/run_all.sh          # the full runs behind the figures in benchmarks/README.md (about 5 h on 2 cores;
#                                  # fashion_mnist.py alone about 2.5 h, measured on a 2-core AMD EPYC)
#   benchmarks/run_all.sh --fast   # a smoke pass of every script (a few minutes); writes to runs/bench_fast/,
#                                  # never over the committed results
#
# Latency is measured on this CPU: run it on a quiet machine, one benchmark at a time (as here).
# Existing latency tables are kept; `python benchmarks/profile_tables.py --force` measures them again.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=0
for arg in "$@"; do
  case "$arg" in
    --fast) fast=1 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown option $arg (use --fast or nothing)" >&2; exit 2 ;;
  esac
done

if [ "$fast" = 1 ]; then
  export HWPRUNE_BENCH_RESULTS="${HWPRUNE_BENCH_RESULTS:-runs/bench_fast}"
else
  export HWPRUNE_BENCH_RESULTS="${HWPRUNE_BENCH_RESULTS:-benchmarks/results}"
fi
results="$HWPRUNE_BENCH_RESULTS"
mkdir -p "$results"

python - "$results/environment.json" "$fast" <<'EOF'
import json, os, platform, subprocess, sys, time
from importlib.metadata import PackageNotFoundError, version

from hwprune.profilers.machine import cpu_name

def v(p):
    try:
        return version(p)
    except PackageNotFoundError:
        return None

try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = None
env = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fast": sys.argv[2] == "1", "commit": commit or None,
       "cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
       "versions": {p: v(p) for p in ("hwprune", "torch", "onnxruntime", "onnx", "numpy", "torch-pruning", "tensorrt",
                                      "torchvision", "timm")},
       "load_average": list(os.getloadavg())}
with open(sys.argv[1], "w") as f:
    json.dump(env, f, indent=1)
print(json.dumps(env))
EOF

run() { echo; echo "== $*"; python "$@"; }
if [ "$fast" = 1 ]; then
  run benchmarks/flops_speed.py --model resnet20 --seconds 0.3
  run benchmarks/pruningnet_overhead.py --steps 3 --skip-accuracy
  run benchmarks/memory_format.py --rounds 1 --steps 1 --threads 1
  run benchmarks/profile_tables.py --only resnet20-32 --threads 1
  run benchmarks/latency_fidelity.py --models resnet20-32 --threads 1 --n 8
  run benchmarks/accuracy_vs_latency.py --fast --models resnet20 --work runs/bench_fast/work
  run benchmarks/fashion_mnist.py --quick --work runs/bench_fast/work
  run benchmarks/within_budget.py --quick --work runs/bench_fast/work
  run benchmarks/search_variance.py --quick --work runs/bench_fast/work
  run benchmarks/scoring_workers.py --models resnet20 --candidates 1 --data bundled
  run benchmarks/scoring_workers.py --sides 32 --candidates 1
  run benchmarks/model_coverage.py --size 64 --models torchvision/resnet18 timm/efficientnet_b0
else
  run benchmarks/flops_speed.py
  run benchmarks/pruningnet_overhead.py
  run benchmarks/memory_format.py
  run benchmarks/profile_tables.py
  run benchmarks/latency_fidelity.py --threads 1 2
  run benchmarks/accuracy_vs_latency.py
  run benchmarks/fashion_mnist.py   # needs: apt-get install dataset-fashion-mnist
  run benchmarks/within_budget.py   # (in fashion_mnist.py's work folder)
  run benchmarks/search_variance.py # (the same)
  run benchmarks/scoring_workers.py   # needs: apt-get install dataset-fashion-mnist
  run benchmarks/scoring_workers.py --sides 48 64 96 128 --candidates 6
  run benchmarks/model_coverage.py  # needs: pip install --no-deps torchvision timm (skipped without them)
fi
echo
echo "results in $results (machine and versions: $results/environment.json)"
