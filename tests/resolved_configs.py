"""The resolved form of every leaf config (``configs/*.py``), for the test that keeps config
refactorings honest: ``python tests/resolved_configs.py --write`` stores them under
``tests/data/resolved_configs/`` and ``test_configs.py`` compares against those files."""
from __future__ import annotations

import argparse
import glob
import json
import os.path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SNAPSHOTS = osp.join(REPO, 'tests', 'data', 'resolved_configs')


def leaf_configs() -> list[str]:
    """Names of the runnable configs (``configs/*.py``, not the ``_base_`` parts)."""
    return sorted(osp.basename(p) for p in glob.glob(osp.join(REPO, 'configs', '*.py')))


def _plain(value):
    """A JSON-able form of a config value (tuples as lists, anything else by its repr)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def resolved(name: str) -> dict:
    """The config ``configs/<name>`` with every ``_base_`` merged, as plain JSON values."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, 'configs', name), import_custom_modules=False)
    return _plain(cfg.to_dict())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--write', action='store_true', help='store the snapshots')
    args = parser.parse_args()
    for name in leaf_configs():
        text = json.dumps(resolved(name), indent=1, sort_keys=True)
        path = osp.join(SNAPSHOTS, name.replace('.py', '.json'))
        if args.write:
            with open(path, 'w') as f:
                f.write(text + '\n')
        print(f'{name}: {len(text)} characters' + (f' -> {path}' if args.write else ''))


if __name__ == '__main__':
    main()
