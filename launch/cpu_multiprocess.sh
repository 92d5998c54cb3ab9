#!/usr/bin/env bash
# Two processes on one CPU machine forming one 8-device mesh (4 fake devices each, gloo collectives): a local
# rehearsal of a multi-host launch.
#   launch/cpu_multiprocess.sh "python -m vrrl_jax.train --config configs/frozenlake_tiny_cpu.py --workdir runs/mp"
set -euo pipefail
COMMAND=${1:?usage: $0 COMMAND}
PORT=${PORT:-12355}
for i in 0 1; do
  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
  VRRL_COORDINATOR=127.0.0.1:$PORT VRRL_NUM_PROCESSES=2 VRRL_PROCESS_ID=$i \
    $COMMAND --multihost &
done
wait
