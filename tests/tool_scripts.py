"""The tool scripts (tools/*.py, tools/*/*.py) in the test process.

The tools are scripts, not a package: :func:`tool` loads one from its file (what they share
with each other comes from the installed ``mfuser`` / ``mfuser_tools`` packages).
"""
import importlib.util
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def tool(name: str):
    """``tools/<name>.py`` (``name`` may hold a sub-folder, e.g.
    ``'model_converters/mfuser2mmseg'``) as a module, loaded once."""
    module_name = 'tools_' + name.replace('/', '_')
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            module_name, osp.join(REPO, 'tools', f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up here
        spec.loader.exec_module(module)
    return sys.modules[module_name]


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
