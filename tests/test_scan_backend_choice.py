"""The CUDA scan backend is chosen honestly, for each way mamba-ssm can be installed.

Stand-in ``mamba_ssm`` packages are put on ``sys.path`` in the three layouts users have:
a release whose compiled kernel is missing or built for another torch (the import fails), a
version installed without its kernel (imports with ``selective_scan_cuda = None`` and raises
at the first call), and a working install.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from mfuser.ops import selective_scan as ss

RELEASED_BROKEN = '''
import selective_scan_cuda  # as mamba-ssm <= 2.3.2.post1: unguarded
def selective_scan_fn(*args, **kwargs):
    raise AssertionError('never reached')
'''
NO_KERNEL = '''
try:  # as mamba-ssm main since f577286: a plain pip install skips the kernel
    import selective_scan_cuda
except ImportError:
    selective_scan_cuda = None
def selective_scan_fn(*args, **kwargs):
    if selective_scan_cuda is None:
        raise RuntimeError('selective_scan_cuda is not installed')
'''
WORKING = '''
import selective_scan_cuda
def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                      delta_softplus=False, return_last_state=False):
    from mfuser.ops import selective_scan_ref
    return selective_scan_ref(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                              delta_softplus=delta_softplus,
                              return_last_state=return_last_state)
'''


def _install_standin(root, interface: str, with_kernel: bool):
    pkg = root / 'mamba_ssm'
    (pkg / 'ops').mkdir(parents=True)
    (pkg / '__init__.py').write_text("__version__ = '9.9.9'\n")
    (pkg / 'ops' / '__init__.py').write_text('')
    (pkg / 'ops' / 'selective_scan_interface.py').write_text(textwrap.dedent(interface))
    if with_kernel:
        (root / 'selective_scan_cuda.py').write_text('')
    return root


@pytest.fixture
def fresh(monkeypatch):
    """Forget what an earlier test found out about the backends."""
    for name in [m for m in sys.modules if m.startswith('mamba_ssm') or
                 m == 'selective_scan_cuda']:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(ss, '_mamba_fn', None)
    monkeypatch.setattr(ss, '_mamba_error', None)
    monkeypatch.setattr(ss, '_probe_results', {})
    monkeypatch.setattr(ss, '_warned_chunked', False)
    monkeypatch.delenv(ss.ENV_VAR, raising=False)
    yield monkeypatch
    for name in [m for m in sys.modules if m.startswith('mamba_ssm') or
                 m == 'selective_scan_cuda']:
        sys.modules.pop(name)


def _triton_importable() -> bool:
    return ss._load_triton() is not None


def test_released_mamba_without_a_loadable_kernel_is_passed_over(tmp_path, fresh):
    fresh.syspath_prepend(str(_install_standin(tmp_path, RELEASED_BROKEN, with_kernel=False)))
    why = ss.cuda_backend_status()['mamba_ssm']
    assert 'cannot be imported' in why and 'selective_scan_cuda' in why
    assert 'MAMBA_KEEP_CUDA_BUILD=TRUE pip install mamba-ssm --no-build-isolation' in why
    assert ss.active_backend('cuda') == ('triton' if _triton_importable() else 'chunked')
    assert 'mamba_ssm not usable' in ss.describe_cuda_choice()


def test_mamba_installed_without_its_kernel_is_not_chosen(tmp_path, fresh):
    """mamba-ssm's main imports fine with ``selective_scan_cuda = None``: choosing it would
    crash the first forward."""
    fresh.syspath_prepend(str(_install_standin(tmp_path, NO_KERNEL, with_kernel=False)))
    why = ss.cuda_backend_status()['mamba_ssm']
    assert 'mamba-ssm 9.9.9 is installed without its CUDA selective-scan kernel' in why
    assert ss.active_backend('cuda') != 'mamba_ssm'
    with pytest.raises(RuntimeError, match='MAMBA_KEEP_CUDA_BUILD=TRUE pip install mamba-ssm'):
        ss.active_backend('cuda', backend='mamba_ssm')


def test_working_mamba_is_the_first_choice(tmp_path, fresh):
    fresh.syspath_prepend(str(_install_standin(tmp_path, WORKING, with_kernel=True)))
    assert ss.cuda_backend_status()['mamba_ssm'] is None
    assert ss.active_backend('cuda') == 'mamba_ssm'
    assert ss.describe_cuda_choice() == 'mamba_ssm'


def test_without_mamba_and_triton_cuda_falls_back_to_chunked_with_a_warning(fresh):
    fresh.setattr(ss, '_mamba_error', 'mamba-ssm is not installed')
    fresh.setattr(ss, '_triton_fn', None)
    fresh.setattr(ss, '_triton_error', 'Triton cannot be imported (test)')
    with pytest.warns(RuntimeWarning, match='slow, memory-hungry "chunked"'):
        assert ss.active_backend('cuda') == 'chunked'
    text = ss.describe_cuda_choice()
    assert text.startswith('chunked') and 'WARNING' in text and 'Triton cannot' in text
    with pytest.raises(RuntimeError, match='"triton" was requested but Triton cannot'):
        ss.active_backend('cuda', backend='triton')


def test_a_backend_failing_its_test_call_is_not_chosen(tmp_path, fresh):
    """A kernel that imports but fails on this GPU (e.g. no image for its architecture) is
    passed over with the failure as the reason."""
    fresh.syspath_prepend(str(_install_standin(tmp_path, WORKING, with_kernel=True)))
    fresh.setattr(ss, '_probe_results', {'mamba_ssm': 'failed a test call on GPU X: boom'})
    assert ss.active_backend('cuda') != 'mamba_ssm'
    assert 'failed a test call' in ss.describe_cuda_choice()
    with pytest.raises(RuntimeError, match='failed a test call'):
        ss.active_backend('cuda', backend='mamba_ssm')


def test_env_report_names_the_cuda_backend_and_why(tmp_path):
    root = _install_standin(tmp_path, NO_KERNEL, with_kernel=False)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ['PYTHONPATH']]))
    env.pop(ss.ENV_VAR, None)
    out = subprocess.run([sys.executable, '-m', 'mfuser.env'], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith('selective scan (cuda)'))
    assert 'mamba_ssm not usable' in line and 'without its CUDA selective-scan kernel' in line
    assert not line.split(':', 1)[1].strip().startswith('mamba_ssm')
