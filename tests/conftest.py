"""Shared pytest set-up: deterministic seeds, CPU threads, and a `cuda` marker skip."""
import os

import pytest
import torch

os.environ.setdefault('OMP_NUM_THREADS', '2')

# Build configs in mmseg's scope (as tools/train.py does), so that 'SegDataPreProcessor',
# 'CrossEntropyLoss', 'mmdet.DiceLoss' ... resolve.
from mmseg.utils import register_all_modules  # noqa: E402

register_all_modules(init_default_scope=True)


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
