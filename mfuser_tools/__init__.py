"""The harness around MFuser, a second package beside ``mfuser`` (installed with it): the
offline data-set converters behind ``tools/dataset_converters/*.py``, the synthetic scene
renderer of the CPU demo (``tools/make_synthetic_data.py``) and the table printer of the
benchmarks in ``tools/analysis/``. Nothing in ``mfuser`` imports it."""
