"""Environment report: ``python -m mfuser.env``.

Prints the versions of the libraries MFuser is pinned to, whether mmcv's compiled ops
(``mmcv._ext``) are present (mmseg/mmdet models need them), and which selective-scan
backend runs on the CPU and on CUDA (and why a faster CUDA backend was not taken).
"""
from __future__ import annotations

import importlib
import platform
from collections import OrderedDict

_PACKAGES = ('mmcv', 'mmseg', 'mmdet', 'timm', 'open_clip', 'numpy', 'mamba_ssm')  # + mmengine's


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - report any import failure as text
        return f'not importable ({type(exc).__name__}: {exc})'.splitlines()[0]
    return getattr(mod, '__version__', 'unknown')


def collect_env() -> OrderedDict:
    """mmengine's environment report (Python, CUDA, GCC, PyTorch, OpenCV, MMEngine, ...) plus
    the libraries MFuser builds on, mmcv's compiled ops and the selective-scan backends, as an
    ordered ``name -> str`` mapping."""
    import torch
    from mmengine.utils.dl_utils import collect_env as collect_base_env

    skip = ('PyTorch compiling details', 'numpy_random_seed')  # long / irrelevant here
    env = OrderedDict((k, str(v)) for k, v in collect_base_env().items() if k not in skip)
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
    cuda = scan.describe_cuda_choice()
    env['selective scan (cuda)'] = cuda if torch.cuda.is_available() else \
        f'{cuda} [no CUDA device here: what a CUDA run would use]'
    for name, why in scan.cuda_backend_status().items():
        env[f'  {name}'] = 'usable' if why is None else f'not usable: {why}'
    env['selective scan backends available'] = ', '.join(scan.available_backends())
    return env


def main() -> None:
    env = collect_env()
    width = max(len(k) for k in env)
    for key, value in env.items():
        print(f'{key:<{width}} : {value}')


if __name__ == '__main__':
    main()
