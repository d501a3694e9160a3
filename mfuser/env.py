"""Environment report: ``python -m mfuser.env``.

Prints the versions of the libraries MFuser is pinned to, whether mmcv's compiled ops
(``mmcv._ext``) are present (mmseg/mmdet models need them), and which selective-scan
backend runs on the CPU and on CUDA.
"""
from __future__ import annotations

import importlib
import platform
import sys
from collections import OrderedDict

_PACKAGES = ('torch', 'torchvision', 'mmengine', 'mmcv', 'mmseg', 'mmdet', 'timm',
             'open_clip', 'numpy', 'mamba_ssm')


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - report any import failure as text
        return f'not importable ({type(exc).__name__}: {exc})'.splitlines()[0]
    return getattr(mod, '__version__', 'unknown')


def collect_env() -> OrderedDict:
    """Return the environment facts as an ordered ``name -> str`` mapping."""
    import torch

    env = OrderedDict()
    env['python'] = sys.version.split()[0]
    env['platform'] = platform.platform()
    for name in _PACKAGES:
        env[name] = _version(name)
    try:
        importlib.import_module('mmcv._ext')
        env['mmcv._ext (compiled ops)'] = 'yes'
        from mmcv.ops import get_compiling_cuda_version
        env['mmcv compiled CUDA'] = get_compiling_cuda_version()
    except Exception as exc:  # noqa: BLE001
        env['mmcv._ext (compiled ops)'] = f'NO ({exc}); run tools/setup_env.sh'
    env['torch threads'] = str(torch.get_num_threads())
    env['CUDA available'] = str(torch.cuda.is_available())
    if torch.cuda.is_available():
        env['GPU'] = torch.cuda.get_device_name(0)

    from mfuser.ops import selective_scan as scan
    env['selective scan (cpu)'] = scan.active_backend('cpu')
    env['selective scan (cuda)'] = (scan.active_backend('cuda') if torch.cuda.is_available()
                                    else f'{scan.active_backend("cuda")} (no CUDA device here)')
    env['selective scan backends available'] = ', '.join(scan.available_backends())
    return env


def main() -> None:
    env = collect_env()
    width = max(len(k) for k in env)
    for key, value in env.items():
        print(f'{key:<{width}} : {value}')


if __name__ == '__main__':
    main()
