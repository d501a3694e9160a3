"""Multi-GPU training uses SyncBN in the necks by default (as the release trained)."""
import pytest
from mmengine.config import Config

from mfuser.apis.distributed import default_sync_bn


@pytest.mark.parametrize('launcher,cuda,enabled,expect', [
    ('pytorch', True, True, 'torch'),    # torchrun on GPUs: SyncBN
    ('slurm', True, True, 'torch'),
    ('pytorch', False, True, None),      # torchrun on CPUs (gloo): plain BN
    ('none', True, True, None),          # one GPU: plain BN
    ('pytorch', True, False, None),      # train.py --no-sync-bn
])
def test_sync_bn_decision(launcher, cuda, enabled, expect):
    cfg = Config(dict(launcher=launcher))
    assert default_sync_bn(cfg, enabled=enabled, cuda=cuda) == expect
    assert cfg.get('sync_bn') == expect


@pytest.mark.parametrize('value', [None, 'mmcv'])
def test_a_config_that_sets_sync_bn_is_respected(value):
    cfg = Config(dict(launcher='pytorch', sync_bn=value))
    assert default_sync_bn(cfg, cuda=True) == value and cfg.sync_bn == value
