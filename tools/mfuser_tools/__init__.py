"""The tools' own library (not part of the importable ``mfuser`` package): config preflight
checks, CPU multi-process (gloo) support, the offline data-set converters and the synthetic
data generator. The scripts in ``tools/`` put this folder on ``sys.path``."""
