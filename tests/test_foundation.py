"""The installable plugin: imports, registries, environment report, no mamba-ssm needed."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize('registry, names', [
    ('MODELS', ['MFuser', 'FusedEncoder', 'CoOpTextEncoder', 'MTEnhancerStack', 'MTEnhancer',
                'MVFuser', 'ConcatAttentionAdapter', 'SeparateAttentionAdapter',
                'TextQueriedMask2FormerHead', 'TextMSDeformAttnPixelDecoder',
                'PortableMSDeformAttn']),
    ('DATASETS', ['GTAVDataset', 'CityscapesDGDataset', 'BDD100KDGDataset', 'MapillaryDataset',
                  'SYNTHIADataset', 'MultiDomainDataset', 'RareClassSampledDataset']),
    ('METRICS', ['DGIoUMetric']),
    ('HOOKS', ['TrainingCurvesHook', 'NonFiniteLossHook', 'TrainableCheckpointHook']),
    ('TRANSFORMS', ['RandomRatioResize', 'LoadCheckedAnnotations', 'LoadCheckedImageFromFile']),
    ('PARAM_SCHEDULERS', ['PolyLRWithLinearWarmup']),
])
def test_project_modules_are_registered_in_mmseg(registry, names):
    import mmseg.registry as reg

    import mfuser  # noqa: F401
    table = getattr(reg, registry)
    missing = [n for n in names if table.get(n) is None]
    assert not missing, f'{registry} lacks {missing}'
    # they live in mmseg's registry (the scope configs run in), not in a private one
    for n in names:
        assert n in table.module_dict, n


def test_environment_report_names_the_scan_backend():
    out = subprocess.run([sys.executable, '-m', 'mfuser.env'], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    for key in ('PyTorch', 'mmcv', 'mmseg', 'mmdet', 'MMEngine', 'timm', 'open_clip',
                'mmcv._ext (compiled ops)', 'selective scan (cpu)', 'selective scan (cuda)'):
        assert key in out.stdout, key
    line = [ln for ln in out.stdout.splitlines() if ln.startswith('selective scan (cpu)')][0]
    assert line.split(':', 1)[1].strip().split()[0] in ('cpp', 'chunked')


def test_import_and_scan_work_when_mamba_ssm_is_absent():
    code = ('import sys; sys.modules["mamba_ssm"] = None\n'
            'import torch, mfuser\n'
            'from mfuser.ops import selective_scan_fn\n'
            'from mfuser.ops.selective_scan import active_backend\n'
            'u = torch.randn(1, 4, 7); A = -torch.rand(4, 2)\n'
            'y = selective_scan_fn(u, torch.rand(1, 4, 7), A, torch.randn(1, 2, 7), '
            'torch.randn(1, 2, 7))\n'
            'print(active_backend(torch.device("cpu")), tuple(y.shape))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    backend, shape = out.stdout.strip().splitlines()[-1].split(' ', 1)
    assert backend in ('cpp', 'chunked') and shape == '(1, 4, 7)'


def test_cpu_ddp_wrapper_is_where_the_runner_looks():
    """The tools' CPU (gloo) DDP wrapper registers in the root registry Runner.wrap_model
    reads (the tools import it; the package does not)."""
    from mmengine.registry import MODEL_WRAPPERS

    import mfuser.apis.distributed  # noqa: F401
    assert 'CPUDistributedDataParallel' in MODEL_WRAPPERS.module_dict
