"""Size of a full-size MFuser checkpoint with and without the frozen pretrained parts.

    python tools/analysis/checkpoint_size.py [--config configs/mfuser_eva02_gta.py]

Builds the config's model (random towers, no weight files needed), then saves what
``TrainableCheckpointHook`` keeps (the default) and the whole model (``keep_frozen=True``), plus
the AdamW state an ``iter_*.pth`` carries for resuming, and prints the file sizes.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import tempfile
from types import SimpleNamespace

import torch

from mfuser_tools.table import print_table

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def saved_mb(obj, folder: str) -> float:
    path = osp.join(folder, 'x.pth')
    torch.save(obj, path)
    size = os.path.getsize(path) / 2**20
    os.remove(path)
    return size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=osp.join(REPO, 'configs', 'mfuser_eva02_gta.py'))
    args = parser.parse_args(argv)
    from mmengine.config import Config

    from mfuser.engine import TrainableCheckpointHook, build_model_without_pretrained
    named = Config.fromfile(args.config)  # names the pretrained files, as a training run's
    model = build_model_without_pretrained(named)
    full = dict(meta={}, state_dict=model.state_dict())
    slim = dict(meta={}, state_dict=dict(model.state_dict()))
    TrainableCheckpointHook().before_save_checkpoint(SimpleNamespace(model=model, cfg=named),
                                                     slim)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=1e-4)
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optim.step()
    n_train = sum(p.numel() for p in trainable)
    n_all = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            ['whole model (keep_frozen=True)', f'{n_all / 1e6:.1f}', f'{saved_mb(full, tmp):.0f}'],
            ['trainable parts + BN statistics (default)', f'{n_train / 1e6:.1f}',
             f'{saved_mb(slim, tmp):.0f}'],
            ['AdamW state (resume)', '', f'{saved_mb(optim.state_dict(), tmp):.0f}'],
        ]
    print_table(f'Checkpoint size at full size ({osp.basename(args.config)})',
                ['saved', 'parameters (M)', 'MiB'], rows)
    return 0


if __name__ == '__main__':
    sys.exit(main())
