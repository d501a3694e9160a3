"""Where the tests find ``../shared``: the reference goldens and real data samples that sit
next to the repository (not in it).

``shared_path('data', 'real', 'cityscapes')`` returns that path under the shared folder. When
the shared folder is absent (a plain clone) the calling test SKIPS, naming the missing folder;
under CI (``CI=true``, as ``.ci/run`` is run) it FAILS with the same message, so that CI never
passes by skipping. A shared folder that is present but lacks the path always fails (an
incomplete or outdated copy is a broken fixture, not a plain clone).

``MFUSER_SHARED=/path`` points the tests at another shared folder (``MFUSER_SHARED=/nonexistent``
shows what a plain clone does). For a whole module or test, the ``needs_shared`` marker
(``pytestmark = pytest.mark.needs_shared('data', 'real')``, see conftest.py) calls
``shared_path`` before each test; module constants take an unchecked location from
``shared_location``, which never skips (safe at import time).
"""
from __future__ import annotations

import os
import os.path as osp

import pytest

SHARED_ENV = 'MFUSER_SHARED'
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def shared_root() -> str:
    """The shared folder: ``$MFUSER_SHARED``, else ``../shared`` beside the repository."""
    return osp.abspath(os.environ.get(SHARED_ENV) or osp.join(osp.dirname(REPO), 'shared'))


def shared_location(*parts: str) -> str:
    """The path of ``parts`` under the shared folder, not checked (for module constants)."""
    return osp.join(shared_root(), *parts)


def in_ci() -> bool:
    return os.environ.get('CI', '').strip().lower() in ('1', 'true', 'yes')


def shared_path(*parts: str) -> str:
    """The path of ``parts`` under the shared folder; skips the test when the shared folder is
    missing (fails under CI), fails when the folder is there but lacks the path."""
    root, path = shared_root(), shared_location(*parts)
    if osp.exists(path):
        return path
    name = '/'.join(('../shared', *parts))
    if not osp.isdir(root):
        msg = (f'needs {name} (the reference data next to the repository); not found at {path}'
               f' (no shared folder at {root}; set {SHARED_ENV} to point at one)')
        if in_ci():
            pytest.fail(f'{msg} - CI must not skip it', pytrace=False)
        pytest.skip(msg)
    pytest.fail(f'needs {name}; the shared folder {root} is there but lacks {path} '
                '(an incomplete or outdated copy)', pytrace=False)
