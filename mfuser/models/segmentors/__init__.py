"""Segmentors."""
from .mfuser import MFuser

__all__ = ['MFuser']
