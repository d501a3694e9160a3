#!/usr/bin/env bash
# One-stop, idempotent environment setup for MFuser.
#
#   bash tools/setup_env.sh            # create/update the venv, print how to activate it
#
# Creates a virtual environment OUTSIDE the repository (default ~/.venvs/mfuser, override
# with MFUSER_VENV), installs torch/torchvision, builds mmcv 2.1.0 with compiled CPU ops
# from its source distribution (once; the wheel is cached in MFUSER_CACHE, default
# ~/.cache/mfuser/wheels), installs the remaining pinned dependencies and this package in
# editable mode. A second run only checks and takes seconds.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MFUSER_VENV:-$HOME/.venvs/mfuser}"
CACHE="${MFUSER_CACHE:-$HOME/.cache/mfuser/wheels}"
PY="${MFUSER_PYTHON:-python3.11}"
TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
MMCV_VERSION="2.1.0"

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] ERROR:\033[0m %s\n' "$*" >&2; exit 1; }
t0=$(date +%s)

command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
  || die "Python 3.11 is required (found: $("$PY" --version 2>&1)). Set MFUSER_PYTHON to a 3.11 interpreter."

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment at $VENV"
  "$PY" -m venv "$VENV" || die "could not create a venv at $VENV (is python3.11-venv installed?)"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check)

have() { "$VPY" - "$@" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, _, want = spec.partition('==')
    try:
        got = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if want and got.split('+')[0] != want:
        sys.exit(1)
PYEOF
}

if have "$TORCH_PIN" "$TORCHVISION_PIN"; then
  say "torch/torchvision already installed"
else
  say "installing $TORCH_PIN $TORCHVISION_PIN (large download, a few minutes)"
  "${PIP[@]}" install -q "$TORCH_PIN" "$TORCHVISION_PIN" || die "torch install failed"
fi

if have "mmcv==$MMCV_VERSION" && "$VPY" -c 'import mmcv._ext' 2>/dev/null; then
  say "mmcv $MMCV_VERSION with compiled ops already installed"
else
  mkdir -p "$CACHE"
  WHEEL=$(ls "$CACHE"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$WHEEL" ]; then
    say "building mmcv $MMCV_VERSION with compiled CPU ops from source."
    say "THIS TAKES ABOUT 16 MINUTES ON 2 CORES (once; the wheel is cached in $CACHE)."
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    "${PIP[@]}" install -q "setuptools<70" wheel ninja packaging || die "could not install build tools"
    "${PIP[@]}" download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$BUILD" \
      || die "could not download the mmcv $MMCV_VERSION source distribution"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.14 headers need C++20; mmcv 2.1.0 forces C++17 for the CPU extension.
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    grep -q 'c++20' "$SRC/setup.py" || die "could not patch mmcv's setup.py for C++20"
    ( cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
        "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$CACHE" . ) \
      || die "mmcv build failed (see the compiler output above)"
    WHEEL=$(ls "$CACHE"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)
  else
    say "using cached mmcv wheel $WHEEL"
  fi
  "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL" || die "could not install $WHEEL"
fi

# The editable install is redone only when pyproject.toml changed or the venv points at
# another checkout (CI clones afresh each run).
STAMP="$VENV/.mfuser-install-stamp"
WANT="$(cat "$REPO/pyproject.toml" "$REPO/tools/constraints-verified.txt" | sha256sum | cut -d' ' -f1) $REPO"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
   && "$VPY" -c "import mfuser, sys; sys.exit(not mfuser.__file__.startswith('$REPO/'))" 2>/dev/null; then
  say "mfuser (editable) and its dependencies already installed for $REPO"
else
  say "installing mfuser and its pinned dependencies (editable, with [dev] extras)"
  "${PIP[@]}" install -q -e "$REPO[dev]" -c "$REPO/tools/constraints-verified.txt" \
    || die "dependency install failed"
  echo "$WANT" > "$STAMP"
fi

say "checking imports and compiling the C++ selective-scan kernel (once; cached in torch's extensions dir)"
"$VPY" - <<'PYEOF' || die "import check failed: the environment is incomplete (see above)"
import mmcv._ext  # noqa: F401  compiled ops present
import mmseg.models, mmdet.models  # noqa: F401,E401
import mfuser  # noqa: F401
from mfuser.ops.selective_scan import build_cpu_extension
build_cpu_extension()  # needs a C++ compiler; raises with what to install
PYEOF

say "done in $(( $(date +%s) - t0 )) s. Activate with:  source $VENV/bin/activate"
