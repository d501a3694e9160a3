"""Shared pytest set-up: deterministic seeds, CPU threads, a `cuda` marker skip and the
`needs_shared` marker (files of ../shared, see shared_files.py)."""
import os
import os.path as osp
import shutil
import sys

import pytest
import torch

os.environ.setdefault('OMP_NUM_THREADS', '2')
# Without a GPU, Triton kernels run in Triton's CPU interpreter (tests/test_selective_scan_triton
# .py); the switch must be set before Triton is first imported.
if not (osp.exists('/dev/nvidiactl') or shutil.which('nvidia-smi')):
    os.environ.setdefault('TRITON_INTERPRET', '1')

# Test this checkout, also in the subprocesses the tool tests start: an editable install in
# a shared environment points at whichever clone ran tools/setup_env.sh last.
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# tests/ holds test scaffolding the subprocesses import (rank_check). tools/ (the tools'
# library, mfuser_tools) goes on this process's path only, AFTER the standard library (its
# test.py must not shadow the stdlib 'test' package); the tool scripts find it themselves.
os.environ['PYTHONPATH'] = os.pathsep.join(
    p for p in (REPO, osp.join(REPO, 'tests'), os.environ.get('PYTHONPATH')) if p)
if osp.join(REPO, 'tools') not in sys.path:
    sys.path.append(osp.join(REPO, 'tools'))

import mfuser  # noqa: E402

if osp.dirname(osp.dirname(osp.abspath(mfuser.__file__))) != REPO:
    raise RuntimeError(f'mfuser is imported from {mfuser.__file__}, not from this checkout '
                       f'({REPO}); run the tests from the repository root '
                       '(bash tools/run_tests.sh)')

# Build configs in mmseg's scope (as tools/train.py does), so that 'SegDataPreProcessor',
# 'CrossEntropyLoss', 'mmdet.DiceLoss' ... resolve.
from mmseg.utils import register_all_modules  # noqa: E402
from shared_files import shared_path  # noqa: E402

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
