#!/usr/bin/env bash
# Peak resident memory of each pipeline step on the default config, to size `pipeline.resources`.
#
# Each step runs through its CLI (the same lws_core.ops code the KFP components call) under GNU time, with
# the default config except fewer optimiser steps: a step's memory is its data, features and model, which do
# not grow with the step count. Prints one "step peak_rss_mb wall_s" line per step.
#
# usage: benchmarks/step_memory.sh WORKDIR [STEPS]    (WORKDIR is created; STEPS default 30)
set -euo pipefail
work=${1:?usage: benchmarks/step_memory.sh WORKDIR [STEPS]}
steps=${2:-30}
lws=${LWS:-.venv/bin/lws}
mkdir -p "$work"

measure() {  # name, command...
  local name=$1; shift
  /usr/bin/time -v -o "$work/$name.time" "$@" --quiet > "$work/$name.log" 2>&1
  local kb wall
  kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/$name.time")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/$name.time")
  printf '%-18s %6d MB  %s\n' "$name" $((kb / 1024)) "$wall"
}

measure synthesize "$lws" data synth --out "$work/ds"
measure pretrain_backbone "$lws" pretrain backbone --out "$work/backbone" --set pretrain.backbone.max_steps="$steps"
measure pretrain_encoder "$lws" pretrain encoder --data "$work/ds" --out "$work/encoder" --set pretrain.encoder.max_steps="$steps"
measure train "$lws" train --data "$work/ds" --out "$work/model" --backbone "$work/backbone" --encoder "$work/encoder" \
  --set train.max_steps="$steps"
measure evaluate "$lws" eval run --model "$work/model" --data "$work/ds" --out "$work/eval"
