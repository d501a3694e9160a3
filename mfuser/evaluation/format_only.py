"""``tools/test.py --format-only``: a test config turned into a prediction writer."""
from __future__ import annotations


def use_format_only(cfg, output_dir: str) -> None:
    """Make ``cfg``'s test run only write predictions into ``output_dir`` (no labels read).

    A config whose benchmark split differs from its scored test set names both parts of the
    submission run: ``format_only_dataloader`` (e.g. the unlabelled ACDC test split) replaces
    ``test_dataloader`` and ``format_only_evaluator`` (e.g. :class:`ACDCSubmissionWriter`)
    replaces ``test_evaluator``. Otherwise the test set stays and its evaluators (e.g.
    :class:`DGIoUMetric`, which then saves train-ID PNGs per domain) get ``format_only``.
    Every evaluator gets ``format_only=True`` and ``output_dir``.
    """
    from mfuser.apis.errors import ConfigCheckError
    if not output_dir:
        raise ConfigCheckError('--format-only needs --out DIR (where the predictions go)')
    if cfg.get('format_only_dataloader'):
        cfg.test_dataloader = cfg.format_only_dataloader
    if cfg.get('format_only_evaluator'):
        cfg.test_evaluator = cfg.format_only_evaluator
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [
        cfg.test_evaluator]
    for evaluator in evaluators:
        evaluator['format_only'] = True
        evaluator['output_dir'] = output_dir
