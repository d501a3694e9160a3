"""The tool scripts (tools/*.py, tools/model_converters/*.py) in the test process.

The tools are scripts, not a package, so importing one puts its folder on ``sys.path`` for the
duration of the import only (the one place the tests do so).
"""
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def tool(name: str):
    """Import ``tools/<name>.py`` (``name`` may hold a sub-folder, e.g.
    ``'model_converters/mfuser2mmseg'``) as a module."""
    folder, module = osp.split(name)
    sys.path.insert(0, osp.join(REPO, 'tools', folder))
    try:
        return __import__(module)
    finally:
        sys.path.pop(0)


def main_in_process(module, argv, capsys):
    """``module.main(argv)`` in this process: (exit code, stdout, stderr); a
    ``sys.exit('error: ...')`` counts as exit 1 with its message on stderr."""
    capsys.readouterr()
    try:
        code = module.main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    if isinstance(code, str):
        return 1, out, err + code
    return code, out, err
