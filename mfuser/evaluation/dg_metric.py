"""Multi-domain mIoU: per-domain and averaged scores of one test run over several targets."""
from __future__ import annotations

import json
import logging
import os
import os.path as osp
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable


def _r(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 2)


@METRICS.register_module()
class DGIoUMetric(IoUMetric):
    """mIoU per target domain and averaged over domains (the G -> C/B/M table of DGSS papers).

    Per sample it stores mmseg's ``IoUMetric.intersect_and_union`` areas with the sample's
    domain; per domain it sums them and calls ``IoUMetric.total_area_to_metrics``. The domain
    of a sample is, in this order:

    1. ``domain`` in its metainfo, set by :class:`~mfuser.datasets.MultiDomainDataset` (the
       recommended way: wrap the target sets in it);
    2. the first ``domain_prefixes`` entry ``{name: path_part}`` whose ``path_part`` occurs in
       the sample's ``img_path`` (for a plain ``ConcatDataset``);
    3. ``'all'``.

    Logs one table (per-class IoU per domain, each domain's mIoU/mAcc/aAcc and the mean over
    domains) and writes it as JSON to ``output_file`` if given, else to ``dg_results.json`` next
    to the runner's log file (``<work_dir>/<timestamp>/``); evaluations during training
    overwrite it.

    Returns (values in %, rounded to 2 decimals like mmseg): ``<domain>/mIoU``,
    ``<domain>/mAcc``, ``<domain>/aAcc`` for every domain, ``mean/mIoU`` (the average of the
    domains' mIoU), ``mean/mAcc``, ``mean/aAcc`` and ``mIoU`` (= ``mean/mIoU``, so configs using
    mmseg's usual ``save_best='mIoU'`` keep working).

    Args:
        domains: table order of the domains (default: ``dataset_meta['domains']`` from
            :class:`MultiDomainDataset`, then order of appearance).
        domain_prefixes: ``{domain: substring of img_path}`` fallback (see above).
        eval_classes: class names the mIoU/mAcc averages use (e.g. the 16 SYNTHIA classes);
            default all. The table always lists every class.
        output_file: JSON path (see above).
        protocol: free text naming the evaluation protocol (test resolutions), logged with
            the table and stored in the JSON, since DGSS papers use two that differ.
        mean_domains: the domains the mean (``mean/*`` and ``mIoU``) averages, e.g. the four
            ACDC conditions, leaving out the source domain's validation set (default: all).
            The others keep their own column and ``<domain>/*`` metrics.
        pooled_domains: ``{name: [domains]}``: extra columns scored on the summed
            intersections/unions of the listed domains, as one data set (ACDC's "all
            conditions" score); never part of the mean.
        train_data: free text naming what the model was trained on (e.g. the sources of a
            multi-source run), logged with the table and stored in the JSON.
        output_dir: also save every prediction as a train-ID PNG,
            ``<output_dir>/<domain>/<image path>.png`` (``tools/test.py --out``): the image's
            path below the first of ``output_roots`` that holds it (sub-folders kept, so
            ``val/a/X.png`` and ``val/b/X.png`` stay apart), else its file name; a name that
            another image of the run already took gets a hash of the image path added. Each
            file is written under a temporary name and renamed (complete or absent).
        output_roots: the image folders of the test sets (``tools/test.py`` sets them).
        format_only: only save the predictions (needs ``output_dir``; no ground truth is
            read and no metric is computed), e.g. for a benchmark server.
        ignore_index, nan_to_num, collect_device, prefix: as for mmseg's ``IoUMetric``.
    """

    def __init__(self, domains: Sequence[str] | None = None,
                 domain_prefixes: dict | None = None,
                 eval_classes: Sequence[str] | None = None,
                 output_file: str | None = None, protocol: str | None = None,
                 output_roots: Sequence[str] | None = None,
                 mean_domains: Sequence[str] | None = None,
                 pooled_domains: dict | None = None, train_data: str | None = None,
                 **kwargs) -> None:
        kwargs.setdefault('iou_metrics', ['mIoU'])
        if kwargs.get('format_only') and not kwargs.get('output_dir'):
            raise ValueError('DGIoUMetric(format_only=True) needs output_dir (where the '
                             'predictions go)')
        super().__init__(**kwargs)
        if list(self.metrics) != ['mIoU']:
            raise ValueError(f"DGIoUMetric computes mIoU only, got iou_metrics={self.metrics}")
        self.domains = list(domains) if domains else None
        self.domain_prefixes = dict(domain_prefixes or {})
        self.eval_classes = list(eval_classes) if eval_classes else None
        self.output_file = output_file
        self.protocol = protocol
        # deepest first, so that a nested image folder wins over its parent
        self.output_roots = sorted((osp.abspath(r) for r in output_roots or ()),
                                   key=len, reverse=True)
        self._saved: dict[str, str] = {}  # output file -> the image it was made from
        self.mean_domains = list(mean_domains) if mean_domains else None
        self.pooled_domains = {str(k): list(v) for k, v in (pooled_domains or {}).items()}
        self.train_data = train_data

    @property
    def dataset_meta(self) -> dict | None:
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, meta: dict | None) -> None:
        """Set by the loop when it is built: a wrong ``eval_classes`` fails then, not after
        the whole evaluation."""
        if meta and getattr(self, 'eval_classes', None):
            unknown = [c for c in self.eval_classes if c not in meta.get('classes', ())]
            if unknown:
                raise ValueError(f'eval_classes {unknown} are not classes of the data set '
                                 f'({list(meta.get("classes", ()))})')
        self._dataset_meta = meta

    def domain_of(self, data_sample: dict) -> str:
        dom = data_sample.get('domain')
        if dom:
            return str(dom)
        path = osp.normpath(str(data_sample.get('img_path', '')))
        for name, part in self.domain_prefixes.items():
            if osp.normpath(part) in path:
                return name
        return 'all'

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        num_classes = len(self.dataset_meta['classes'])
        for data_sample in data_samples:
            pred_label = data_sample['pred_sem_seg']['data'].squeeze()
            domain = self.domain_of(data_sample)
            if self.output_dir is not None:
                self._save_prediction(pred_label, data_sample, domain)
            if self.format_only:
                continue
            label = data_sample['gt_sem_seg']['data'].squeeze().to(pred_label)
            areas = self.intersect_and_union(pred_label, label, num_classes, self.ignore_index)
            self.results.append((domain, *areas))

    def prediction_file(self, img_path: str, domain: str) -> str:
        """Where the prediction of ``img_path`` goes (see ``output_dir``); never a file that
        another image of this run was saved to."""
        import hashlib
        path = osp.abspath(img_path)
        root = next((r for r in self.output_roots if path.startswith(osp.join(r, ''))), None)
        name = osp.splitext(osp.relpath(path, root) if root else osp.basename(path))[0]
        out = osp.join(self.output_dir, domain, f'{name}.png')
        if self._saved.setdefault(out, path) != path:
            digest = hashlib.sha1(path.encode('utf-8', 'surrogateescape')).hexdigest()[:8]
            out = osp.join(self.output_dir, domain, f'{name}_{digest}.png')
            self._saved[out] = path
        return out

    def _save_prediction(self, pred_label: torch.Tensor, data_sample: dict,
                         domain: str) -> None:
        """Write the (H, W) train-ID prediction to :meth:`prediction_file`, atomically."""
        from PIL import Image

        from mfuser.engine.atomic import atomic_open
        mask = pred_label.cpu().numpy()
        if data_sample.get('reduce_zero_label', False):
            mask = mask + 1
        with atomic_open(self.prediction_file(data_sample['img_path'], domain)) as f:
            Image.fromarray(mask.astype(np.uint8)).save(f, format='PNG')

    def _domain_order(self, results: list) -> list[str]:
        order = list(self.domains or (self.dataset_meta or {}).get('domains') or [])
        for r in results:
            if r[0] not in order:
                order.append(r[0])
        return [d for d in order if any(r[0] == d for r in results)]

    def compute_metrics(self, results: list) -> dict[str, float]:
        logger: MMLogger = MMLogger.get_current_instance()
        if self.format_only:
            print_log(f'predictions saved to {osp.abspath(self.output_dir)} (format_only: '
                      'no metrics)', logger)
            return OrderedDict()
        class_names = list(self.dataset_meta['classes'])
        if self.eval_classes:
            unknown = set(self.eval_classes) - set(class_names)
            if unknown:
                raise ValueError(f'eval_classes {sorted(unknown)} not in {class_names}')
            sel = np.array([class_names.index(c) for c in self.eval_classes])
        else:
            sel = np.arange(len(class_names))

        def score(rows):
            totals = [torch.stack([torch.as_tensor(r[i]) for r in rows]).sum(0) for i in range(4)]
            ret = self.total_area_to_metrics(*totals, self.metrics, self.nan_to_num, self.beta)
            iou, acc = np.asarray(ret['IoU'], np.float64), np.asarray(ret['Acc'], np.float64)
            return dict(
                num_samples=len(rows),
                mIoU=np.nanmean(iou[sel]) * 100, mAcc=np.nanmean(acc[sel]) * 100,
                aAcc=float(ret['aAcc']) * 100, IoU=iou * 100, Acc=acc * 100)

        per_domain = OrderedDict()
        for dom in self._domain_order(results):
            per_domain[dom] = score([r[1:] for r in results if r[0] == dom])
        averaged = [d for d in (self.mean_domains or per_domain) if d in per_domain]
        if not averaged:
            raise ValueError(f'none of mean_domains {self.mean_domains} was evaluated (domains: '
                             f'{list(per_domain)})')
        if len(averaged) < len(self.mean_domains or per_domain):
            print_log(f'the mean is over {averaged} only: '
                      f'{[d for d in self.mean_domains if d not in per_domain]} had no samples',
                      logger, level=logging.WARNING)
        for name, members in self.pooled_domains.items():
            rows = [r[1:] for r in results if r[0] in members]
            if rows:
                per_domain[name] = score(rows)

        metrics: dict[str, float] = {}
        for dom, m in per_domain.items():
            for k in ('mIoU', 'mAcc', 'aAcc'):
                metrics[f'{dom}/{k}'] = _r(m[k])
        with np.errstate(all='ignore'):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', RuntimeWarning)
                mean = {k: float(np.nanmean([per_domain[d][k] for d in averaged]))
                        for k in ('mIoU', 'mAcc', 'aAcc')}
                mean_iou = np.nanmean(np.stack([per_domain[d]['IoU'] for d in averaged]), 0)
        for k, v in mean.items():
            metrics[f'mean/{k}'] = _r(v)
        metrics['mIoU'] = metrics['mean/mIoU']

        # one table: classes x domains, then the summary rows
        table = PrettyTable()
        table.field_names = ['Class'] + list(per_domain) + ['mean']
        for j, name in enumerate(class_names):
            mark = '' if j in sel else ' (not in mIoU)'
            table.add_row([name + mark] + [_fmt(m['IoU'][j]) for m in per_domain.values()]
                          + [_fmt(mean_iou[j])])
        table.add_row(['-' * 8] * (len(per_domain) + 2))
        for k in ('mIoU', 'mAcc', 'aAcc'):
            table.add_row([k] + [_fmt(m[k]) for m in per_domain.values()] + [_fmt(mean[k])])
        table.add_row(['#images'] + [m['num_samples'] for m in per_domain.values()]
                      + [sum(per_domain[d]['num_samples'] for d in averaged)])
        for col in table.field_names[1:]:
            table.align[col] = 'r'
        self.last_table = table.get_string()
        proto = f' [protocol: {self.protocol}]' if self.protocol else ''
        trained = f' [trained on: {self.train_data}]' if self.train_data else ''
        notes = []
        if len(averaged) < len(per_domain):
            notes.append(f'mean = average over {", ".join(averaged)}')
        notes += [f'{name} = {" + ".join(members)} scored as one set'
                  for name, members in self.pooled_domains.items() if name in per_domain]
        print_log(f'multi-domain results (IoU per class, %){proto}{trained}:\n'
                  + self.last_table + ''.join(f'\n{n}' for n in notes), logger)

        report = dict(
            protocol=self.protocol,
            train_data=self.train_data,
            mean_over=averaged,
            pooled={k: v for k, v in self.pooled_domains.items() if k in per_domain},
            classes=class_names,
            eval_classes=[class_names[j] for j in sel],
            domains={dom: dict(num_samples=m['num_samples'], mIoU=_r(m['mIoU']),
                               mAcc=_r(m['mAcc']), aAcc=_r(m['aAcc']),
                               IoU=dict(zip(class_names, map(_r, m['IoU']))),
                               Acc=dict(zip(class_names, map(_r, m['Acc']))))
                     for dom, m in per_domain.items()},
            mean=dict(mIoU=_r(mean['mIoU']), mAcc=_r(mean['mAcc']), aAcc=_r(mean['aAcc']),
                      IoU=dict(zip(class_names, map(_r, mean_iou)))),
            metrics=metrics)
        path = self.output_file or _log_dir_file(logger, 'dg_results.json')
        if path:
            os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
            with open(path, 'w') as f:
                json.dump(report, f, indent=2)
            print_log(f'multi-domain results written to {path}', logger)
        self.last_report = report
        return metrics


def _fmt(x) -> str:
    return 'nan' if x is None or np.isnan(float(x)) else f'{float(x):.2f}'


def _log_dir_file(logger: logging.Logger, name: str) -> str | None:
    """``name`` in the folder of the logger's log file (mmengine: <work_dir>/<timestamp>/)."""
    for h in getattr(logger, 'handlers', []):
        if isinstance(h, logging.FileHandler):
            return osp.join(osp.dirname(h.baseFilename), name)
    return None
