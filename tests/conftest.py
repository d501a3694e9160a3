"""Shared pytest set-up: deterministic seeds, CPU threads, a `cuda` marker skip and the
`needs_shared` marker (files of ../shared, see shared_files.py)."""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

os.environ.setdefault('OMP_NUM_THREADS', '2')
# Without a GPU, Triton kernels run in Triton's CPU interpreter (tests/test_selective_scan_triton
# .py); the switch must be set before Triton is first imported.
if not (osp.exists('/dev/nvidiactl') or shutil.which('nvidia-smi')):
    os.environ.setdefault('TRITON_INTERPRET', '1')

# Test this checkout, also in the subprocesses the tool tests start: the installed (editable)
# mfuser must be this one, not another clone that ran tools/setup_env.sh in a shared venv.
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# tests/ holds test scaffolding the subprocesses import (rank_check).
os.environ['PYTHONPATH'] = os.pathsep.join(
    p for p in (osp.join(REPO, 'tests'), os.environ.get('PYTHONPATH')) if p)
_installed = subprocess.run(  # located, not imported (no torch start-up)
    [sys.executable, '-c', 'import importlib.util as u; '
     'print(u.find_spec("mfuser").origin); print(u.find_spec("mfuser_tools").origin)'],
    cwd=osp.dirname(REPO), capture_output=True, text=True)
if [osp.dirname(osp.dirname(p)) for p in _installed.stdout.splitlines()] != [REPO, REPO]:
    raise RuntimeError(f'the installed mfuser / mfuser_tools are not this checkout ({REPO}): '
                       f'{_installed.stdout.strip() or _installed.stderr.strip()[-300:]}; run '
                       'bash tools/setup_env.sh here (or bash tools/run_tests.sh)')

# Build configs in mmseg's scope (as tools/train.py does), so that 'SegDataPreProcessor',
# 'CrossEntropyLoss', 'mmdet.DiceLoss' ... resolve.
from mmseg.utils import register_all_modules  # noqa: E402
from shared_files import shared_path  # noqa: E402

import mfuser  # noqa: E402,F401  registers the modules

register_all_modules(init_default_scope=True)


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'needs_shared(*parts): needs ../shared/<parts> (skipped in a plain clone, '
        'fails under CI=true; see tests/shared_files.py)')


def pytest_runtest_setup(item):
    for mark in item.iter_markers('needs_shared'):
        shared_path(*mark.args)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA device')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)
