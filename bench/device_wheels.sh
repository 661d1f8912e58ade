#!/usr/bin/env bash
# The packages a lent GPU machine lacks, as wheels for its Python, in .whl/ (git-ignored).
#
#   bash bench/device_wheels.sh          # here, once: ~40 MiB; then carry .whl to the machine
#
# The device tool's machines have torch, lightning, numpy, scipy, opencv and the other common
# packages (/work/.library/device/KINDS.md) but not Hydra, gymnasium, ale-py or dm-control, and
# nothing can be fetched there. Each wheel here has the version this checkout's .venv runs, so
# the GPU figures come from the code the tests pass with. A carried call's working tree is
# capped at 64 MiB: dm-control's wheel (56 MB) is rebuilt without what no DMC suite task
# reads (the locomotion and soccer assets, and the dog domain's meshes: `suite.load('dog', …)`
# fails there, every other domain loads).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}  # the machines' python3 (KINDS.md)
OUT=.whl
LIMIT_MIB=56  # leaves the checkout itself ~8 MiB of the 64

PACKAGES=(
  hydra-core omegaconf antlr4-python3-runtime           # configs
  gymnasium farama-notifications ale-py                 # envs, Atari (ale-py ships the ROMs)
  dm-control dm-env dm-tree mujoco glfw pyopengl websockets  # DMC
)

[ -x "$PYTHON" ] || { echo "no $PYTHON: run 'make install' first (the versions come from .venv)" >&2; exit 1; }
pins=()
for name in "${PACKAGES[@]}"; do
  version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || {
    echo "$name is not installed in .venv: run 'make install'" >&2
    exit 1
  }
  pins+=("$name==$version")
done

rm -rf "$OUT" && mkdir -p "$OUT"
platforms=()
for n in 17 24 27 28; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
binary=() source=()
for pin in "${pins[@]}"; do
  # antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is on PyPI as a source archive only.
  case "$pin" in antlr4-python3-runtime==*) source+=("$pin") ;; *) binary+=("$pin") ;; esac
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" \
  --implementation cp "${platforms[@]}" -d "$OUT" "${binary[@]}"
[ ${#source[@]} -eq 0 ] || "$PYTHON" -m pip wheel -q --no-deps -w "$OUT" "${source[@]}"

"$PYTHON" - "$OUT" <<'EOF'
"""Rewrite dm-control's wheel without the files no suite task reads, RECORD to match."""
import pathlib, sys, zipfile

DROP = ("dm_control/locomotion/", "dm_control/suite/dog_assets/")
wheel = next(pathlib.Path(sys.argv[1]).glob("dm_control-*.whl"))
trimmed = wheel.with_suffix(".trimmed")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        if info.filename.startswith(DROP):
            continue
        data = src.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            rows = data.decode().splitlines(keepends=True)
            data = "".join(row for row in rows if not row.startswith(DROP)).encode()
        dst.writestr(info, data)
trimmed.replace(wheel)
EOF

total=$(du -cm "$OUT"/*.whl | tail -n 1 | cut -f1)
ls -s --block-size=K "$OUT"
echo "$OUT: $(ls "$OUT" | wc -l) wheels, ${total} MiB (for Python $DEVICE_PYTHON, x86_64)"
if [ "$total" -gt "$LIMIT_MIB" ]; then
  echo "over ${LIMIT_MIB} MiB: with the checkout it would pass the device tool's 64 MiB carry limit" >&2
  exit 1
fi
