"""MFuser: Mamba-bridged VFM x VLM fusion for domain-generalized semantic segmentation.

Importing this package registers its models, datasets, transforms, metrics and hooks into
mmseg's registries (``custom_imports = dict(imports=['mfuser'])`` in a config does that).
"""
__version__ = '0.1.0'

from . import datasets, engine, evaluation, models, ops  # noqa: E402,F401  (registration)
