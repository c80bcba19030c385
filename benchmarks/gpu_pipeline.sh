#!/usr/bin/env bash
# The whole hwprune path on a CUDA GPU, one verb at a time, as a user runs it: resnet18 at 224x224,
# a torch CUDA latency table with its fidelity report, then pretrain, search (inherit evaluator, measured
# steering), fine-tune the winner and the uniform network of the same budget, export both to ONNX (and a
# TensorRT engine where TensorRT imports), and verify their latency on the GPU against the table and budget.
#
#   benchmarks/gpu_pipeline.sh                       # on a machine with a CUDA GPU: 8 minutes on an H200 (profile
#                                                    # 104 s, search 211 s; results/gpu_pipeline/summary.json)
#   DEVICE=cpu SIZE=32 ROUND_TO=128 EPOCHS=1 FINETUNE=1 LIMIT=512 VALIDATE=4 POPULATION=8 GENERATIONS=1 TUNE_STEPS=2 \
#     benchmarks/gpu_pipeline.sh                     # the same steps as a CPU smoke run (a few minutes)
#
# Knobs (environment): DEVICE (cuda), SIZE (224), ROUND_TO (32), BATCH (1: the batch the table is measured at; at
# batch 1 an H200 runs eager resnet18 bound by kernel launches, channels alone taking 7% off the dense latency, so
# only dropped blocks reach lower: a larger BATCH is where channels count),
# EPOCHS (3), FINETUNE (2), LIMIT (training images; default all 3,500 of the bundled split's training part),
# VALIDATE (40 networks in the fidelity report), POPULATION (16), GENERATIONS (5), TUNE_STEPS (20: distillation
# steps per candidate), BUDGET (0.5: where the budget lies between the predicted latency of the narrowest
# network at full depth, every block kept, and the dense one's), WORK (runs/gpu_pipeline; must not hold an earlier
# run), RESULTS (benchmarks/results/gpu_pipeline), STEP_TIMEOUT (seconds any one step may take, 300).
# Data: the bundled 5,000 MNIST digits, resized to SIZE (nothing is downloaded). Every step's output is kept in
# WORK; RESULTS gets the table, its fidelity report, each step's JSON, the log and summary.json.
# Exit status: 0 when every step did its job (verify's exit 3, over budget, is a verdict; the TensorRT export may
# fail where TensorRT is absent), else 1, naming the steps that failed.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-224}
ROUND_TO=${ROUND_TO:-32}
BATCH=${BATCH:-1}
EPOCHS=${EPOCHS:-3}
FINETUNE=${FINETUNE:-2}
LIMIT=${LIMIT:-}
VALIDATE=${VALIDATE:-40}
POPULATION=${POPULATION:-16}
GENERATIONS=${GENERATIONS:-5}
TUNE_STEPS=${TUNE_STEPS:-20}
BUDGET=${BUDGET:-0.5}
WORK=${WORK:-runs/gpu_pipeline}
RESULTS=${RESULTS:-benchmarks/results/gpu_pipeline}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
MODEL=resnet18
SHAPE=$BATCH,1,$SIZE,$SIZE  # the bundled digits have one channel
TABLE=$WORK/table.csv
limit=()
[ -n "$LIMIT" ] && limit=(--limit "$LIMIT")

if [ -d "$WORK" ] && [ -n "$(ls -A "$WORK")" ]; then
  echo "gpu_pipeline.sh: $WORK holds an earlier run; remove it or set WORK to a new folder" >&2
  exit 2
fi
mkdir -p "$WORK" "$RESULTS"
log=$RESULTS/log.txt
: >"$log"
status=()  # "step seconds exit-status", one per step
step() {  # step NAME VERB ARGS...: `hwprune VERB ARGS...` under the step timeout, logged, its time and status kept
  local name=$1; shift
  echo "== $name: hwprune $*" | tee -a "$log"
  local t0=$SECONDS
  timeout "$STEP_TIMEOUT" python3 -m hwprune.cli "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
  status+=("$name $((SECONDS - t0)) $rc")
  return "$rc"
}

python3 - "$RESULTS/environment.json" <<'EOF' 2>&1 | tee -a "$log"
import json, os, platform, sys, time
import torch
from importlib.metadata import PackageNotFoundError, version
from hwprune.profilers.machine import cpu_name

def v(p):
    try:
        return version(p)
    except PackageNotFoundError:
        return None

env = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": cpu_name(), "cores": os.cpu_count(),
       "python": platform.python_version(), "cuda": torch.version.cuda,
       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
       "versions": {p: v(p) for p in ("torch", "onnxruntime", "onnx", "numpy", "tensorrt")}}
json.dump(env, open(sys.argv[1], "w"), indent=1)
print(json.dumps(env))
EOF

# 1. the latency table: every layer at every width on the GPU (torch eager, CUDA events), its calibration, and
#    VALIDATE random networks measured end to end against it (fidelity report + plot)
step profile profile --model $MODEL --num-classes 10 --input-shape "$SHAPE" --round-to "$ROUND_TO" --backend torch --device "$DEVICE" \
  -o "$TABLE" --cache-dir "$WORK/kernels" --validate "$VALIDATE" --run "$WORK/profile" --quiet --json

# 2. the dense model, trained on the GPU
step pretrain pretrain --model $MODEL --image-size "$SIZE" --epochs "$EPOCHS" --batch-size 64 --device "$DEVICE" \
  ${limit[@]+"${limit[@]}"} --out "$WORK/dense" --quiet

# the budget: BUDGET of the way from the predicted latency of the narrowest network that keeps every block to the
# dense one's (at batch 1 a GPU runs eager resnet18 close to its launch rate, so a fraction of the dense latency
# alone may be out of reach)
budget=$(python3 - "$TABLE" "$SIZE" "$ROUND_TO" "$BUDGET" "$BATCH" <<'EOF'
import sys
import hwprune as hp
from hwprune.latency.reach import reach
table, size, round_to, f, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
space = hp.SearchSpace.from_model(hp.create_model("resnet18", num_classes=10, in_channels=1).eval(),
                                  (batch, 1, size, size), round_to=round_to)
r = reach(hp.LatencyTable.load(table, space), space)
lo, hi = r["channels_ms"], r["dense_ms"]
print(f"{lo + f * (hi - lo):.4f}")
print(f"budget: narrowest at full depth {lo:.4f} ms, dense {hi:.4f} ms predicted", file=sys.stderr)
EOF
) 2>>"$log"
echo "budget ${budget:-(none: no table)} ms" | tee -a "$log"
budget=${budget:-nan}

# 3. search with inherited weights, steered by timing its fittest candidates on the GPU
step search search --evaluator inherit --model $MODEL --weights "$WORK/dense/dense.pt" --round-to "$ROUND_TO" \
  --table "$TABLE" --latency-ms "$budget" --population "$POPULATION" --keep-top "$POPULATION" --parents $((POPULATION * 3 / 8)) \
  --mutations $((POPULATION * 3 / 8)) --crossovers $((POPULATION * 3 / 8)) --generations "$GENERATIONS" \
  --tune-steps "$TUNE_STEPS" --val-batches 8 --measure-top 4 --device "$DEVICE" --out "$WORK/search"

# 4. fine-tune the searched network and the uniform one of the same budget, the same way
step finetune retrain --result "$WORK/search/result.json" --epochs "$FINETUNE" --device "$DEVICE" \
  --out "$WORK/searched"
step finetune_uniform retrain --result "$WORK/search/result.json" --baseline uniform --epochs "$FINETUNE" \
  --device "$DEVICE" --out "$WORK/uniform"

# 5. export to ONNX (and TensorRT where it imports: else the step records why not)
for net in searched uniform; do
  step "export_$net" export --checkpoint "$WORK/$net/model.pt" --out "$WORK/$net/model.onnx" --batch-size "$BATCH" \
    --run "$WORK/$net"
done
step export_tensorrt export --checkpoint "$WORK/searched/model.pt" --format tensorrt --out "$WORK/searched/trt" \
  --batch-size "$BATCH" --run "$WORK/searched"

# 6. measured latency on the GPU vs prediction vs budget, beside the dense network
for net in searched uniform; do
  step "verify_$net" verify --model "$WORK/$net/model.onnx" --table "$TABLE" --run "$WORK/$net"
done

printf '%s\n' "${status[@]}" >"$WORK/steps.txt"
python3 - "$WORK" "$RESULTS" "$budget" <<'EOF' 2>&1 | tee -a "$log"
"""summary.json: each step's time and exit status, the table's fidelity, accuracies, verdicts; copies the small
files; exits 1 naming the steps that failed."""
import json, shutil, sys
from pathlib import Path

work, results, budget = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
summary = {"budget_ms": budget, "steps": [dict(zip(("step", "seconds", "exit"), line.split()))
                                          for line in (work / "steps.txt").read_text().splitlines()]}
for s in summary["steps"]:
    s["seconds"], s["exit"] = int(s["seconds"]), int(s["exit"])

def load(p):
    try:
        return json.loads(Path(p).read_text())
    except (OSError, ValueError):
        return None

fid = load(work / "table.fidelity.json")
if fid:
    summary["fidelity"] = {k: fid.get(k) for k in ("n", "statistic", "lut", "flops", "retest", "calibration")}
for name in ("dense", "searched", "uniform"):
    run = load(work / name / "run.json")
    if run:
        summary[name] = {"run": run}
    v = load(work / name / "verify.json")
    if v:
        summary.setdefault(name, {})["verify"] = v
(results / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
for src in ("table.csv", "table.fidelity.json", "table.fidelity.png", "search/result.json", "search/pareto.png"):
    if (work / src).exists():
        shutil.copy(work / src, results / src.replace("/", "_"))
print(json.dumps(summary["steps"]))
import importlib.util
no_trt = importlib.util.find_spec("tensorrt") is None  # where TensorRT is absent its export says so and fails
failed = [s["step"] for s in summary["steps"] if s["exit"] and not (s["step"] == "export_tensorrt" and no_trt)
          and not (s["step"].startswith("verify_") and s["exit"] == 3)]  # 3: over budget, a verdict
if failed:
    sys.exit(f"failed: {', '.join(failed)} (log: {results / 'log.txt'})")
EOF
