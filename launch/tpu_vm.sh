#!/usr/bin/env bash
# Run a vrrl_jax command on every worker of a TPU VM slice (multi-host: jax.distributed initialises from the
# TPU metadata on each worker; see vrrl_jax/train.py --multihost).
#
#   launch/tpu_vm.sh TPU_NAME ZONE "python -m vrrl_jax.train --config configs/frozenlake_qwen25vl_3b.py \
#       --config.init_checkpoint=/mnt/ckpt/qwen25vl3b_orbax --workdir gs://BUCKET/runs/vrrl3b --multihost"
#
# Setup once per slice: launch/tpu_vm.sh TPU_NAME ZONE "bash vrrl_jax/launch/setup_tpu_vm.sh"
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: $0 TPU_NAME ZONE COMMAND" >&2
  exit 2
fi
TPU_NAME=$1
ZONE=$2
COMMAND=$3
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all \
  --command "cd ~/vrrl_jax && . .venv/bin/activate && $COMMAND"
