"""Evaluation: multi-domain mIoU (per target domain and averaged) for DGSS, and the writers of
benchmark-server submissions."""
from .acdc_submission import ACDCSubmissionWriter, submission_path, train_id_to_label_id_lut
from .dg_metric import DGIoUMetric
from .format_only import use_format_only

__all__ = ['DGIoUMetric', 'ACDCSubmissionWriter', 'submission_path',
           'train_id_to_label_id_lut', 'use_format_only']
