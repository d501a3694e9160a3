"""Evaluation: multi-domain mIoU (per target domain and averaged) for DGSS."""
from .dg_metric import DGIoUMetric

__all__ = ['DGIoUMetric']
