#!/usr/bin/env bash
# Installs vrrl_jax with TPU jax on one TPU VM worker (run on every worker via launch/tpu_vm.sh).
set -euo pipefail
cd ~/vrrl_jax
python3 -m venv .venv
. .venv/bin/activate
pip install -U pip
pip install "jax[tpu]" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
pip install -e .
python -c "import jax; print(jax.device_count(), 'devices,', jax.process_count(), 'processes')"
