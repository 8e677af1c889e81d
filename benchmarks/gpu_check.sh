#!/usr/bin/env bash
# GPU check, one script, at most ~8 minutes on one H100/H200 (see benchmarks/results/gpu.md):
#   1. training tokens/s and MFU: DeepSpeed ZeRO-2 bf16, random-init qwen-0.5b (then qwen3-0.6b if time is left)
#   2. engine RTF p50/p95 and per-token decode latency, one session, 1.0 s units: HF forward, then the fused one
#   3. batched serving capacity: sessions held at real time (Engine.step_many, else a one-by-one loop)
# Each step has its own timeout and writes JSON to ${OUT:-benchmarks/results/gpu}/ (plus env.json, gpu_check.log
# and summary.json: 8 files, what the device tool brings back at most).
#
# Usage, from the repository root:
#   benchmarks/gpu_check.sh                          # CUDA machine; exit 2 if torch.cuda is unavailable
#   benchmarks/gpu_check.sh --smoke --device cpu     # toy sizes on CPU: a code check, not GPU figures
#   benchmarks/gpu_check.sh --prepare-wheels         # here, with PyPI: wheels the device image lacks -> .whl/
#   benchmarks/gpu_check.sh --with-tests             # then `pytest -m gpu tests/gpu` with what time is left
#   benchmarks/gpu_check.sh --steps gpu_launch,engine_rtf_fast   # only the named steps
#
# Python: $LWS_PYTHON, else .venv/bin/python, else python3 — the first with torch (and CUDA, for --device
# cuda). `make setup` runs only when .venv is missing and no candidate has torch at all. With a python other than
# .venv, wheels in .whl/ (--prepare-wheels; carry `.whl` to the device machine) are installed to a temporary
# folder first: the device image has torch and transformers but not pydantic, deepspeed or espeak-ng, and its
# transformers is older than the engine needs.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

SMOKE=""
ONLY=""  # --steps a,b: run only these steps (names as in summary.json)
DEVICE="cuda"
PREPARE=0
TESTS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE="--smoke" ;;
    --device) DEVICE="${2:?--device needs a value}"; shift ;;
    --device=*) DEVICE="${1#--device=}" ;;
    --prepare-wheels) PREPARE=1 ;;
    --with-tests) TESTS=1 ;;
    --steps) ONLY=",${2:?--steps needs a list},"; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# What the device image (KINDS.md: python 3.12, torch, transformers 5.17, accelerate, no pydantic/deepspeed)
# lacks for the benchmarks' imports, at the versions constraints.txt pins.
WHEELS="pydantic pydantic_core annotated-types typing-inspection typing_extensions deepspeed hjson transformers espeakng-loader soxr num2words soundfile cffi pycparser"

if [ "$PREPARE" = 1 ]; then
  PIP="${LWS_PYTHON:-.venv/bin/python}"
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >>.git/info/exclude; }
  for name in $WHEELS; do
    pin="$(grep -i -m1 -E "^${name//[-_]/[-_]}==" constraints.txt || true)"
    [ -n "$pin" ] || { echo "error: $name is not pinned in constraints.txt" >&2; exit 1; }
    if [ "${name}" = deepspeed ]; then  # sdist on PyPI: a pure-Python wheel (no compiled ops) from pip's build
      "$PIP" -m pip wheel -q --no-deps --no-build-isolation -w .whl "$pin" || exit 1
    else
      "$PIP" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$pin" || exit 1
    fi
  done
  du -sh .whl && ls .whl
  echo "carry '.whl' with the device call (run tool: carry=[\".whl\"]); gpu_check.sh installs them there."
  exit 0
fi

OUT_DIR="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"
BUDGET_S="${LWS_GPU_BUDGET_S:-470}"  # the whole script, preflight included
START=$SECONDS
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

log() { echo "$*" | tee -a "$LOG" >&2; }

# -- python ---------------------------------------------------------------------------------------
probe() {  # probe PY: 0 = usable for $DEVICE, 3 = torch without CUDA, else no torch
  "$1" -c "import sys, torch; sys.exit(3 if '$DEVICE'.startswith('cuda') and not torch.cuda.is_available() else 0)" \
    >/dev/null 2>&1
}
PY=""
TORCH_SEEN=0  # some candidate has torch (without CUDA): make setup would not help
CANDIDATES=()
[ -n "${LWS_PYTHON:-}" ] && CANDIDATES+=("$LWS_PYTHON")
[ -x .venv/bin/python ] && CANDIDATES+=(".venv/bin/python")
command -v python3 >/dev/null 2>&1 && CANDIDATES+=("$(command -v python3)")
for c in "${CANDIDATES[@]}"; do
  probe "$c"
  case $? in
    0) PY="$c"; break ;;
    3) TORCH_SEEN=1 ;;
  esac
done
if [ -z "$PY" ] && [ "$TORCH_SEEN" = 0 ] && [ ! -e .venv ]; then
  log "# no python with torch${DEVICE:+ for $DEVICE} found and .venv is missing: make setup (needs PyPI)"
  timeout 900 make setup >>"$LOG" 2>&1 && probe .venv/bin/python && PY=.venv/bin/python
fi
if [ -z "$PY" ]; then
  if [[ "$DEVICE" == cuda* ]]; then
    log "error: torch.cuda is not available (tried: ${CANDIDATES[*]:-no python}); no GPU figures were measured."
    log "       Run this on a CUDA machine, or use --smoke --device cpu for a code check."
  else
    log "error: no python with torch (tried: ${CANDIDATES[*]:-none}); run make setup"
  fi
  exit 2
fi
if [ "$PY" != ".venv/bin/python" ] && ls .whl/*.whl >/dev/null 2>&1; then
  SITE="${TMPDIR:-/tmp}/lws-gpu-site"
  log "# installing carried wheels (.whl/) into $SITE"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
      >>"$LOG" 2>&1; then
    export PYTHONPATH="$SITE:$PYTHONPATH"
  else
    log "warning: installing .whl/ failed (see $LOG); going on with what $PY has"
  fi
fi
log "# python: $PY; device: $DEVICE; out: $OUT_DIR; smoke: ${SMOKE:-no}; budget ${BUDGET_S}s"

# -- preflight: versions, GPU, imports (one JSON; a missing module shows here, its step then fails) ----
timeout 120 "$PY" - "$OUT_DIR/env.json" "$DEVICE" >>"$LOG" 2>&1 <<'EOF'
import importlib, json, sys
sys.path.insert(0, "benchmarks")
out, device = sys.argv[1], sys.argv[2]
env = {}
try:
    from gpu_common import device_facts, nvidia_smi
    env.update(device_facts(device))
    env["nvidia_smi"] = nvidia_smi()
except Exception as e:  # noqa: BLE001
    env["facts_error"] = f"{type(e).__name__}: {e}"
mods = {}
for m in ["torch", "transformers", "accelerate", "deepspeed", "pydantic", "tokenizers", "espeakng_loader",
          "lws_core.engine", "lws_core.train.trainer"]:
    try:
        mod = importlib.import_module(m)
        mods[m] = getattr(mod, "__version__", "ok")
    except Exception as e:  # noqa: BLE001
        mods[m] = f"MISSING ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
env["modules"] = mods
tv = mods.get("transformers", "")
if tv[:1].isdigit() and tuple(int(x) for x in tv.split(".")[:2]) < (5, 23):
    env["warning"] = f"transformers {tv} < 5.23: carry .whl (benchmarks/gpu_check.sh --prepare-wheels)"
json.dump(env, open(out, "w"), indent=1, default=str)
print(json.dumps(env, indent=1, default=str))
EOF
grep -E '"(gpu|torch|transformers|deepspeed|warning)"|MISSING' "$OUT_DIR/env.json" >&2 || true

# -- steps ------------------------------------------------------------------------------------------
declare -a SUMMARY=()
FAILED=0
step() {  # step NAME CAP_S MIN_S cmd...: runs with timeout min(CAP_S, what is left); skipped under MIN_S left
  local name="$1" cap="$2" min="$3"; shift 3
  [ -z "$ONLY" ] || [[ "$ONLY" == *",$name,"* ]] || return 0
  local left=$((BUDGET_S - (SECONDS - START)))
  local t=$((cap < left ? cap : left))
  if [ "$t" -lt "$min" ]; then
    log "# $name: skipped, ${left}s left of the ${BUDGET_S}s budget"
    SUMMARY+=("{\"step\": \"$name\", \"status\": \"skipped\", \"seconds\": 0}")
    return
  fi
  log "# $name (timeout ${t}s): $*"
  local t0=$SECONDS
  timeout -k 10 "$t" "$@" >>"$LOG" 2>&1
  local rc=$? status=ok
  [ $rc -eq 0 ] || { status=failed; FAILED=1; }
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status=timeout
  log "# $name: $status (rc $rc, $((SECONDS - t0))s)"
  SUMMARY+=("{\"step\": \"$name\", \"status\": \"$status\", \"rc\": $rc, \"seconds\": $((SECONDS - t0)), \"timeout_s\": $t}")
}

TRAIN_BACKEND=()
[[ "$DEVICE" == cpu* ]] && TRAIN_BACKEND=(--backend torch)  # DeepSpeed on CPU takes minutes; the GPU runs ZeRO-2
if [ -n "$SMOKE" ]; then
  B1=(--backbone tiny-qwen3); B2=(--backbone tiny)
else
  B1=(--backbone qwen-0.5b); B2=(--backbone qwen3-0.6b)
fi
TRAIN_ARGS=(--steps 30 --warmup 10 --batch 8 --seq 2048 --profile 3)  # the last 3 steps profiled, not timed

# launch and sync costs, printed to gpu_check.log only (the device tool brings back 8 files at most)
[[ "$DEVICE" == cuda* ]] && step gpu_launch 60 20 "$PY" benchmarks/gpu_launch.py
step train_qwen-0.5b 150 60 "$PY" benchmarks/train_throughput.py --gpu $SMOKE --device "$DEVICE" "${B1[@]}" \
  "${TRAIN_BACKEND[@]}" "${TRAIN_ARGS[@]}" --out "${TMPDIR:-/tmp}/lws-gpu-train" --json "$OUT_DIR/train_qwen-0.5b.json"
step engine_rtf 90 45 "$PY" benchmarks/gpu_engine.py rtf $SMOKE --device "$DEVICE" "${B1[@]}" --seconds 30 \
  --engine-path hf --json "$OUT_DIR/engine_rtf.json"
step engine_rtf_fast 90 45 "$PY" benchmarks/gpu_engine.py rtf $SMOKE --device "$DEVICE" "${B1[@]}" --seconds 30 \
  --engine-path fast --json "$OUT_DIR/engine_rtf_fast.json"
CAP_PATH=fast  # the fused forward batches sessions (Engine.step_many); the HF forward if it failed above
grep -q '"step": "engine_rtf_fast", "status": "ok"' <<<"${SUMMARY[*]}" || CAP_PATH=hf
step engine_capacity 150 60 "$PY" benchmarks/gpu_engine.py capacity $SMOKE --device "$DEVICE" "${B1[@]}" --units 10 \
  --engine-path "$CAP_PATH" --budget-s 100 --json "$OUT_DIR/engine_capacity.json"
if [ "$TESTS" = 1 ]; then
  step pytest_gpu 150 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu -x -rs
fi
step train_qwen3-0.6b 120 60 "$PY" benchmarks/train_throughput.py --gpu $SMOKE --device "$DEVICE" "${B2[@]}" \
  "${TRAIN_BACKEND[@]}" "${TRAIN_ARGS[@]}" --out "${TMPDIR:-/tmp}/lws-gpu-train3" --json "$OUT_DIR/train_qwen3-0.6b.json"

{
  echo "{\"device\": \"$DEVICE\", \"smoke\": $([ -n "$SMOKE" ] && echo true || echo false), \"python\": \"$PY\","
  echo " \"total_s\": $((SECONDS - START)), \"budget_s\": $BUDGET_S, \"steps\": ["
  for i in "${!SUMMARY[@]}"; do
    [ "$i" -gt 0 ] && echo ","
    echo -n "  ${SUMMARY[$i]}"
  done
  echo "]}"
} >"$OUT_DIR/summary.json"
log "# done in $((SECONDS - START))s; results in $OUT_DIR: $(cd "$OUT_DIR" && ls | tr '\n' ' ')"
exit $FAILED
