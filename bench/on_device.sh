#!/usr/bin/env bash
# The benchmark suite on a lent GPU machine (the device tool), from the repository root:
#
#   here, once:       make device-wheels (bash bench/device_wheels.sh)
#   the device call:  command "bash bench/on_device.sh --minutes 5.5", carry [".whl"], timeout_s 420
#   a second call:    "bash bench/on_device.sh --minutes 5 --only e2e_dmc search_configs_cudagraphs"
#
# Arguments go to bench/suite.py. The machine has torch and lightning but no package index:
# the carried wheels are installed beside its Python, effzero runs from src/ (nothing is
# built), and what the suite writes lands in $OUT, which comes back with the call.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .whl ] || { echo "no .whl/ here: run 'bash bench/device_wheels.sh' and carry .whl" >&2; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
# State-based DMC renders nothing, and the machine may lack EGL's libraries.
export MUJOCO_GL="${MUJOCO_GL:-disable}"
# The replay and batch slots are shared memory: a VM's /dev/shm may be too small for Atari's.
if [ "$(df -k --output=size /dev/shm | tail -n 1)" -lt $((32 * 1024 * 1024)) ]; then
  mount -o remount,size=48G /dev/shm || echo "# /dev/shm stays small: the Atari steps may refuse to start" >&2
fi
df -h --output=size,avail,target /dev/shm | tail -n 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
python3 -c "import torch, lightning; print('# torch', torch.__version__, 'lightning', lightning.__version__)"
exec python3 bench/suite.py --out "${OUT:-logs/bench-suite}" "$@"
