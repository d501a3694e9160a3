"""Generate the synthetic domain-generalisation data sets (and convert them) for tests and the demo.

    python tools/make_synthetic_data.py --out data/synthetic --convert

writes ``data/synthetic/{gta,cityscapes,bdd100k,mapillary,synthia}`` in the raw on-disk formats
of the real data sets (see mfuser_tools/synthetic.py) and, with ``--convert``, runs the label
converters on them exactly as on real data (GTAV, Cityscapes, Mapillary incl. half-resolution
copies, SYNTHIA; BDD100K masks need no conversion). configs/_base_/datasets/dg_synthetic.py
reads the result. ``--domains ... acdc`` adds an ACDC-layout set (fog / night / rain / snow
looks, train / val / unlabelled test splits; labels are train IDs as ACDC ships them).
"""
import argparse
import sys

from mfuser_tools.synthetic import DEFAULT_DOMAINS, DOMAINS, prepare

MIN_SIZE = 16


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='data/synthetic', help='output root (default data/synthetic)')
    p.add_argument('--domains', nargs='+', default=list(DEFAULT_DOMAINS), choices=DOMAINS,
                   help=f'default: {" ".join(DEFAULT_DOMAINS)}')
    p.add_argument('--num-train', type=int, default=100,
                   help='images per train split (and for the source-only gta/synthia sets)')
    p.add_argument('--num-val', type=int, default=50, help='images per val split')
    p.add_argument('--size', type=int, nargs=2, default=(256, 128), metavar=('W', 'H'),
                   help='image size (mapillary uses W x 0.75W)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--nproc', type=int, default=2, help='worker processes')
    p.add_argument('--convert', action='store_true', help='run the label converters afterwards')
    a = p.parse_args(argv)
    for flag, value in (('--num-train', a.num_train), ('--num-val', a.num_val)):
        if value < 1:
            p.error(f'{flag} must be at least 1, got {value}: every generated data set needs '
                    'images in each of its splits (the configs train and validate on them)')
    if a.nproc < 1:
        p.error(f'--nproc must be at least 1, got {a.nproc}')
    if min(a.size) < MIN_SIZE:
        p.error(f'--size must be at least {MIN_SIZE} {MIN_SIZE} (W H), got '
                f'{a.size[0]} {a.size[1]}: smaller scenes cannot hold the objects')
    return a


def main(argv=None):
    a = parse_args(argv)
    reports = prepare(a.out, a.domains, a.num_train, a.num_val, a.size, a.seed, a.nproc,
                      a.convert)
    return 1 if any(r.failed for r in reports.values()) else 0


if __name__ == '__main__':
    sys.exit(main())
