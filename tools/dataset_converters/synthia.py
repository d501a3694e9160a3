"""SYNTHIA RAND-CITYSCAPES: GT/LABELS/*.png (16-bit) -> *_labelTrainIds.png.

Usage: python tools/dataset_converters/synthia.py data/synthia [--nproc N]

Idempotent (complete existing outputs are skipped; --force redoes them), never overwrites
source files, lists unreadable files at the end (exit code 1 if any; 2 when there is nothing it
can convert; 130 after Ctrl-C, with no partial files left). The conversion logic is in
mfuser_tools.converters.
"""
import sys

from mfuser_tools.converters import cli

if __name__ == '__main__':
    sys.exit(cli('synthia'))
