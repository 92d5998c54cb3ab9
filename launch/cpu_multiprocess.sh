#!/usr/bin/env bash
# Two processes on one CPU machine forming one 8-device mesh (4 fake devices each, gloo collectives): a local
# rehearsal of a multi-host launch (python -m vrrl_jax.launch run does the same on TPU VM workers). The command gets
# --multihost appended; vrrl_jax.train then initialises jax.distributed from VRRL_COORDINATOR, VRRL_NUM_PROCESSES
# and VRRL_PROCESS_ID. The command is its words, or one string split on whitespace (no quoting inside it):
#   launch/cpu_multiprocess.sh "python -m vrrl_jax.train --config configs/frozenlake_tiny_cpu.py --workdir runs/mp"
#   launch/cpu_multiprocess.sh python -m vrrl_jax.train --config configs/frozenlake_tiny_cpu.py --workdir runs/mp
# Each process writes to the terminal; the script fails if either process fails.
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi
if [ $# -eq 1 ]; then
  read -r -a COMMAND <<< "$1"
else
  COMMAND=("$@")
fi
PORT=${PORT:-12355}
PIDS=()
for i in 0 1; do
  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
  VRRL_COORDINATOR=127.0.0.1:$PORT VRRL_NUM_PROCESSES=2 VRRL_PROCESS_ID=$i \
    "${COMMAND[@]}" --multihost &
  PIDS+=("$!")
done
STATUS=0
for pid in "${PIDS[@]}"; do
  wait "$pid" || STATUS=$?
done
exit "$STATUS"
