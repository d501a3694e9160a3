"""tests/shared_files.py: a plain clone skips what needs ../shared, CI fails on it."""
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
from shared_files import SHARED_ENV, shared_location, shared_path

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture
def no_ci(monkeypatch):
    monkeypatch.delenv('CI', raising=False)


def test_the_path_under_the_shared_folder_is_returned(tmp_path, monkeypatch, no_ci):
    (tmp_path / 'data' / 'real').mkdir(parents=True)
    monkeypatch.setenv(SHARED_ENV, str(tmp_path))
    assert shared_path('data', 'real') == str(tmp_path / 'data' / 'real')
    assert shared_location('data', 'x.png') == str(tmp_path / 'data' / 'x.png')  # unchecked


def test_without_a_shared_folder_the_test_skips_naming_it(tmp_path, monkeypatch, no_ci):
    missing = tmp_path / 'no_shared_here'
    monkeypatch.setenv(SHARED_ENV, str(missing))
    with pytest.raises(pytest.skip.Exception) as info:
        shared_path('data', 'real')
    msg = str(info.value)
    assert 'needs ../shared/data/real' in msg and str(missing / 'data' / 'real') in msg


@pytest.mark.parametrize('ci', ['true', '1', 'TRUE'])
def test_without_a_shared_folder_ci_fails_instead(tmp_path, monkeypatch, ci):
    missing = tmp_path / 'no_shared_here'
    monkeypatch.setenv(SHARED_ENV, str(missing))
    monkeypatch.setenv('CI', ci)
    with pytest.raises(pytest.fail.Exception) as info:
        shared_path('data', 'real')
    msg = str(info.value)
    assert 'needs ../shared/data/real' in msg and str(missing / 'data' / 'real') in msg


def test_ci_false_still_skips(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARED_ENV, str(tmp_path / 'absent'))
    monkeypatch.setenv('CI', 'false')
    with pytest.raises(pytest.skip.Exception):
        shared_path('reference')


def test_a_shared_folder_lacking_the_file_fails_also_outside_ci(tmp_path, monkeypatch, no_ci):
    (tmp_path / 'reference').mkdir()
    monkeypatch.setenv(SHARED_ENV, str(tmp_path))
    with pytest.raises(pytest.fail.Exception) as info:
        shared_path('reference', 'golden.npz')
    assert str(tmp_path / 'reference' / 'golden.npz') in str(info.value)


def test_the_marker_skips_before_fixtures_and_fails_under_ci(tmp_path):
    """``needs_shared`` on a module: every test skips (exit 0) before its fixtures run in a
    plain clone, and errors (exit 1) under CI=true."""
    (tmp_path / 'test_needs.py').write_text(textwrap.dedent("""
        import pytest
        pytestmark = pytest.mark.needs_shared('data', 'real')

        @pytest.fixture
        def expensive():
            raise AssertionError('fixture ran')

        def test_a(expensive):
            pass
        """))
    env = {k: v for k, v in os.environ.items() if k != 'CI'}
    env.update({SHARED_ENV: str(tmp_path / 'absent'),
                'PYTHONPATH': osp.join(REPO, 'tests')})
    cmd = [sys.executable, '-m', 'pytest', '-q', '-rs', '-p', 'no:cacheprovider',
           '-p', 'conftest', str(tmp_path / 'test_needs.py')]  # this suite's conftest
    plain = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert plain.returncode == 0 and '1 skipped' in plain.stdout, plain.stdout[-2000:]
    assert 'needs ../shared/data/real' in plain.stdout
    ci = subprocess.run(cmd, cwd=tmp_path, env=dict(env, CI='true'), capture_output=True,
                        text=True, timeout=300)
    assert ci.returncode == 1 and '1 error' in ci.stdout, ci.stdout[-2000:]
    assert 'fixture ran' not in ci.stdout
