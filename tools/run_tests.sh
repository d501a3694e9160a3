#!/usr/bin/env bash
# Set up the environment (idempotent; the first run on a new machine builds mmcv, ~16 min)
# and run the whole test suite, slow tests included. Extra arguments go to pytest.
#   bash tools/run_tests.sh              # everything
#   bash tools/run_tests.sh -m "not slow" # the fast part only
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MFUSER_VENV:-$HOME/.venvs/mfuser}"
bash "$REPO/tools/setup_env.sh"
cd "$REPO"
echo "[tests] environment:"
"$VENV/bin/python" -m mfuser.env
echo "[tests] ruff:"
"$VENV/bin/ruff" check mfuser mfuser_tools tools tests configs
echo "[tests] pytest:"
set +e
"$VENV/bin/python" -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "[tests] ERROR: pytest collected no tests (exit 5): the test selection is broken." >&2
  exit 1
fi
exit "$rc"
