#!/usr/bin/env bash
# The GPU check on a machine with no package registry, in two steps.
#
#   bash tools/analysis/gpu_bundle.sh prepare          # HERE (a machine that reaches PyPI):
#                                                      # wheels + mmcv source -> work_dirs/gpu_bundle
#   bash tools/analysis/gpu_bundle.sh run [--smoke]    # THERE (the GPU machine, bundle copied
#                                                      # beside the checkout): install, check
#
# The GPU machine is expected to have Python 3.12 with torch (CUDA) and Triton, OpenCV, SciPy,
# matplotlib, einops, safetensors and huggingface_hub (the lent machines' image). `prepare`
# downloads Python 3.12 wheels of the pure-Python rest (mmengine, mmsegmentation, mmdet, timm,
# open_clip, ...; pycocotools and shapely are binary manylinux wheels) and mmcv's source; ~20 MB.
# `run` installs them without a registry, builds mmcv's compiled ops against the machine's torch
# (CPU ops only by default: ~2-4 min on 16 cores, estimated from 16 min on 2 cores here;
# MMCV_CUDA=1 also builds its CUDA kernels for sm_90 (TORCH_CUDA_ARCH_LIST, default 9.0), not
# measured yet), installs this checkout without dependencies and runs
# tools/analysis/gpu_check.py (results in work_dirs/gpu_check.json).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUNDLE="${MFUSER_GPU_BUNDLE:-$REPO/work_dirs/gpu_bundle}"
MMCV_VERSION=2.1.0
# name==version as tools/constraints-verified.txt pins them (pure Python unless noted)
PACKAGES=(mmengine mmsegmentation mmdet timm open_clip_torch ftfy wcwidth prettytable addict
          yapf termcolor terminaltables platformdirs tomli regex pycocotools shapely
          cityscapesScripts
          "setuptools<70" wheel ninja)

say() { printf '[gpu-bundle] %s\n' "$*"; }

pin() {  # the verified version of a package, if constraints-verified.txt pins it
  local name="$1"
  grep -i -E "^${name}==" "$REPO/tools/constraints-verified.txt" 2>/dev/null | head -n1 || true
}

prepare() {
  mkdir -p "$BUNDLE/wheels"
  local specs=()
  for p in "${PACKAGES[@]}"; do
    case "$p" in *"<"*) specs+=("$p"); continue;; esac
    local v; v=$(pin "$p"); specs+=("${v:-$p}")
  done
  say "downloading Python 3.12 wheels: ${specs[*]}"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    -d "$BUNDLE/wheels" "${specs[@]}"
  say "downloading the mmcv $MMCV_VERSION source"
  # pip reads the sdist's metadata by running its setup.py, which imports torch and
  # pkg_resources: the project's environment (tools/setup_env.sh) with setuptools < 70 beside it
  local venv_py="${MFUSER_VENV:-$HOME/.venvs/mfuser}/bin/python" st
  [ -x "$venv_py" ] || venv_py=python3
  st=$(mktemp -d)
  "$venv_py" -m pip install -q --target "$st" "setuptools<70"
  PYTHONPATH="$st" "$venv_py" -m pip download -q --no-deps --no-binary :all: \
    --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUNDLE"
  rm -rf "$st"
  du -sh "$BUNDLE" | sed 's/^/[gpu-bundle] bundle size: /'
}

run() {
  local PY="${PYTHON:-python3}" t0 t1
  [ -d "$BUNDLE/wheels" ] || { echo "no bundle at $BUNDLE (run '$0 prepare' first)" >&2; exit 2; }
  PIP=("$PY" -m pip --disable-pip-version-check)
  say "installing the wheels (no registry)"
  "${PIP[@]}" install -q --no-index --no-deps "$BUNDLE"/wheels/*.whl
  if ! "$PY" -c 'import mmcv._ext' 2>/dev/null; then
    t0=$(date +%s)
    local src; src=$(mktemp -d)
    tar -xzf "$BUNDLE/mmcv-$MMCV_VERSION.tar.gz" -C "$src"
    # torch >= 2.14 needs C++20 (harmless before); mmcv 2.1.0's setup.py forces C++17
    sed -i 's/-std=c++17/-std=c++20/g' "$src/mmcv-$MMCV_VERSION/setup.py"
    say "building mmcv $MMCV_VERSION ops (MMCV_CUDA=${MMCV_CUDA:-0})"
    # mmcv's setup.py builds its CUDA kernels whenever torch sees a GPU: hide it for a CPU-ops
    # build (MMCV_CUDA=0, the default), which the PyTorch deformable-attention path then serves
    local hide=(); [ "${MMCV_CUDA:-0}" = 1 ] || hide=(env CUDA_VISIBLE_DEVICES=)
    ( cd "$src/mmcv-$MMCV_VERSION" && "${hide[@]}" MMCV_WITH_OPS=1 FORCE_CUDA="${MMCV_CUDA:-0}" \
        TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
        "${PIP[@]}" install -q --no-index --no-deps --no-build-isolation . )
    t1=$(date +%s)
    say "mmcv built in $((t1 - t0)) s"
  fi
  "${PIP[@]}" install -q --no-index --no-deps --no-build-isolation -e "$REPO"
  cd "$REPO"
  "$PY" -m mfuser.env
  "$PY" tools/analysis/gpu_check.py "$@"
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
