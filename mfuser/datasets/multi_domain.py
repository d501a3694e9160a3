"""Several target data sets evaluated in one run, each sample tagged with its domain."""
from __future__ import annotations

from collections.abc import Sequence

from mmengine.dataset import ConcatDataset
from mmseg.registry import DATASETS


def tag_domain(results, domain: str):
    """Write ``domain`` into the packed sample(s) (``data_samples`` metainfo) of ``results``."""
    if isinstance(results, dict):
        samples = results.get('data_samples')
        if samples is None:
            results['domain'] = domain
        for s in samples if isinstance(samples, (list, tuple)) else [samples]:
            if s is not None and hasattr(s, 'set_metainfo'):
                s.set_metainfo(dict(domain=domain))
    return results


@DATASETS.register_module()
class MultiDomainDataset(ConcatDataset):
    """Concatenation of data sets from different domains, for one multi-target test run.

    Every sample's ``data_samples`` metainfo gets ``domain`` (its data set's name), so
    :class:`~mfuser.evaluation.DGIoUMetric` can split the scores by domain; it works with any
    data set class (mmseg's ``CityscapesDataset`` included) and any pipeline ending in
    ``PackSegInputs``. ``metainfo['domains']`` lists the names in order (the metric's table
    order). All data sets must share the class list (checked by ``ConcatDataset``).

    Args:
        datasets: data set configs or instances.
        domains: one name per data set; default: each data set's ``domain`` attribute (the
            mfuser data set classes have one), else its lower-cased class name; duplicates get
            ``_2``, ``_3``... appended.
        pipeline: the pipeline for a single image from outside the sets (each data set keeps
            its own). mmseg's ``MMSegInferencer`` reads ``test_dataloader.dataset.pipeline``;
            the configs give the first target's test pipeline here.
        lazy_init, ignore_keys: as for mmengine's ``ConcatDataset``.
    """

    def __init__(self, datasets: Sequence, domains: Sequence[str] | None = None,
                 pipeline: Sequence[dict] | None = None, lazy_init: bool = False,
                 ignore_keys=None) -> None:
        self.pipeline_cfg = list(pipeline or [])
        built = [DATASETS.build(d) if isinstance(d, dict) else d for d in datasets]
        if not built:
            raise ValueError('MultiDomainDataset needs at least one data set')
        if domains is None:
            domains, seen = [], {}
            for d in built:
                name = getattr(d, 'domain', '') or type(d).__name__.lower().replace('dataset', '')
                seen[name] = seen.get(name, 0) + 1
                domains.append(name if seen[name] == 1 else f'{name}_{seen[name]}')
        domains = [str(x) for x in domains]
        if len(domains) != len(built):
            raise ValueError(f'got {len(domains)} domain names for {len(built)} data sets')
        if len(set(domains)) != len(domains):
            raise ValueError(f'domain names must be unique, got {domains}')
        self.domains = domains
        super().__init__(built, lazy_init=lazy_init, ignore_keys=ignore_keys)
        self._metainfo['domains'] = tuple(domains)

    def __getitem__(self, idx: int):
        dataset_idx, sample_idx = self._get_ori_dataset_idx(idx)
        return tag_domain(self.datasets[dataset_idx][sample_idx], self.domains[dataset_idx])

    def domain_of(self, idx: int) -> str:
        """Domain name of global sample index ``idx``."""
        return self.domains[self._get_ori_dataset_idx(idx)[0]]
