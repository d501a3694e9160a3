"""Importing this module installs the safe checkpoint loader for the process.

The configs opt in with ``custom_imports = dict(imports=['mfuser', 'mfuser.engine.safe_loading'])``
so that mmseg's own APIs (``init_model``, ``MMSegInferencer``) read MFuser runner checkpoints
under torch >= 2.6; ``import mfuser`` alone only registers modules
(see :func:`mfuser.engine.checkpoint.install_safe_loader`).
"""
from .checkpoint import install_safe_loader

install_safe_loader()
