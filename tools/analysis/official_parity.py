"""Compare this project's MFuser with the official model's own outputs (../shared/reference).

    python tools/analysis/official_parity.py                # both goldens + MVFuser unit
    python tools/analysis/official_parity.py --golden main   # one of them

The reference folder (made by running the official code, github devinxzhang/MFuser) holds the
official EVA02 key table, a generator that fills it with seeded weights
(``official_checkpoint.make_state_dict``) and the official model's outputs for those weights
on a real Cityscapes crop. This script builds the model of ``configs/mfuser_eva02_gta.py``
(full size, random towers, no weight files needed), converts the generated official state dict
with :func:`mfuser.models.official_release.convert_official_state_dict`, loads it strictly,
runs the crop and prints, for every golden field, ``max|ours - golden| / max|golden|`` next to
the tolerance the reference README measured. Needs ~7 GB of memory; ~1 min per golden on a
2-core CPU.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import os.path as osp
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_REF = osp.join(osp.dirname(REPO), 'shared', 'reference')
CONFIG = osp.join(REPO, 'configs', 'mfuser_eva02_gta.py')
KEYS = 'mfuser_eva02_official.keys.json'
GOLDENS = {'main': ('mfuser_eva02_official_golden.npz', 'constant'),
           'perturbed': ('mfuser_eva02_official_golden_perturbed.npz', 'perturb')}
UNIT = 'mfuser_eva02_official_mvfuser_unit.npz'
EXACT = ('text_tokens', 'pred_argmax_uint8')
TOL_F32, TOL_F16, TOL_LOSS, TOL_UNIT = 1e-5, 1e-3, 1e-6, 1e-6
TAU = 0.07


def require_reference(ref: str = DEFAULT_REF, names=()) -> str:
    """The reference folder, or FileNotFoundError naming what is missing (tests fail on it)."""
    needed = [KEYS, 'official_checkpoint.py', *names]
    missing = [n for n in needed if not osp.isfile(osp.join(ref, n))]
    if missing:
        raise FileNotFoundError(f'parity fixtures missing in {ref}: {", ".join(missing)} '
                                '(they ship in shared/reference beside the repository)')
    return ref


def official_generator(ref: str = DEFAULT_REF):
    """The reference folder's ``official_checkpoint`` module (imported from its file)."""
    path = osp.join(require_reference(ref), 'official_checkpoint.py')
    spec = importlib.util.spec_from_file_location('official_checkpoint', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(config: str = CONFIG, cfg_options: dict | None = None) -> torch.nn.Module:
    """The config's model with random towers (no weight files), in eval mode, on the CPU."""
    if osp.join(REPO, 'tools') not in sys.path:
        sys.path.append(osp.join(REPO, 'tools'))
    from mfuser_tools.models import build_model_without_pretrained
    return build_model_without_pretrained(config, cfg_options=cfg_options).eval()


def load_official(model: torch.nn.Module, official: dict) -> dict[str, str]:
    """Convert an official state dict and load it strictly; returns what was dropped."""
    from mfuser.models.official_release import convert_official_state_dict
    converted, dropped, _ = convert_official_state_dict(official)
    model.load_state_dict(converted, strict=True)
    return dropped


@torch.no_grad()
def run_fields(model: torch.nn.Module, inp: torch.Tensor, label: torch.Tensor
               ) -> dict[str, np.ndarray]:
    """Every golden field, computed by this project's model from the normalised crop."""
    out: dict[str, torch.Tensor] = {}
    out['text_tokens'] = model.text_encoder.tokens
    text = model.text_embeddings()
    out['text_embeddings_raw'] = text
    feats, global_emb, dense = model.backbone(inp)
    out['global_embedding'] = global_emb
    out['visual_embeddings'] = dense
    out['backbone_feat_channel_mean'] = torch.stack([f.mean((2, 3))[0] for f in feats])
    for i, f in enumerate(feats):
        out[f'backbone_feat{i}_sub8'] = f[:, :, ::8, ::8]
    visual = torch.cat([global_emb, dense.flatten(2).transpose(1, 2)], dim=1)
    batch_text = text.unsqueeze(0).expand(inp.shape[0], -1, -1)
    out['context_decoder_out'] = model.context_decoder(batch_text, visual)
    refined = model.refine_text(text, global_emb, dense)
    out['text_embeddings_refined'] = refined
    score = model.score_map(refined, dense)
    out['score_map'] = score
    head = model.decode_head
    mask_features, _ = head.pixel_decoder(feats, refined)
    out['mask_features'] = mask_features[:, :, ::4, ::4]
    cls_preds, mask_preds = head(feats, refined)
    out['cls_logits_last'] = cls_preds[-1]
    out['mask_logits_last'] = mask_preds[-1]
    out['seg_mask_head'] = head.semantic_inference(cls_preds[-1], mask_preds[-1],
                                                   mask_preds[-1].shape[-2:])
    seg = model.encode_decode(inp, [dict(ori_shape=inp.shape[-2:])])
    out['encode_decode'] = seg
    out['pred_argmax_uint8'] = seg.argmax(1)[0].to(torch.uint8)
    logits = F.interpolate(score / TAU, size=label.shape[-2:], mode='bilinear',
                           align_corners=False)
    out['loss_scr_map'] = model.loss_vl(logits, label[None].long(), ignore_index=255)
    return {k: v.detach().double().numpy() if v.is_floating_point() else v.numpy()
            for k, v in out.items()}


def compare(ours: dict[str, np.ndarray], golden) -> list[dict]:
    """One row per golden field: error, tolerance, pass."""
    rows = []
    for name in golden.files:
        if name.startswith(('input', 'label')) or name == 'acc_scr_map':
            continue
        ref = golden[name]
        got = ours[name]
        if got.shape != ref.shape:
            rows.append(dict(field=name, error=float('inf'), tol=0.0, ok=False,
                             note=f'shape {got.shape} vs {ref.shape}'))
        elif name in EXACT:
            bad = int((got != ref).sum())
            rows.append(dict(field=name, error=float(bad), tol=0.0, ok=bad == 0,
                             note='exact (number of differing entries)'))
        elif name == 'loss_scr_map':
            err = abs(float(got) - float(ref)) / abs(float(ref))
            rows.append(dict(field=name, error=err, tol=TOL_LOSS, ok=err <= TOL_LOSS,
                             note=f'{float(got):.10f} vs {float(ref):.10f}'))
        else:
            ref64 = ref.astype(np.float64)
            err = float(np.abs(got - ref64).max() / np.abs(ref64).max())
            if ref.dtype == np.float16:
                spacing = np.spacing(np.abs(ref)).astype(np.float64)
                ulps = np.abs(got.astype(np.float16).astype(np.float64) - ref64) / spacing
                ok = err <= TOL_F16 or bool((ulps <= 1).all())
                rows.append(dict(field=name, error=err, tol=TOL_F16, ok=ok,
                                 note=f'float16: max {ulps.max():.0f} ulp, '
                                      f'{(ulps == 0).mean():.2%} bit-equal'))
            else:
                rows.append(dict(field=name, error=err, tol=TOL_F32, ok=err <= TOL_F32,
                                 note='float32'))
    return rows


def run_golden(which: str, model: torch.nn.Module | None = None, ref: str = DEFAULT_REF
               ) -> tuple[list[dict], dict[str, str]]:
    """Load the generated official weights for golden ``which`` and compare every field."""
    fname, zero_std = GOLDENS[which]
    require_reference(ref, [fname])
    gen = official_generator(ref)
    golden = np.load(osp.join(ref, fname))
    model = model if model is not None else build_model()
    official = gen.make_state_dict(osp.join(ref, KEYS), zero_std=zero_std)
    dropped = load_official(model, official)
    del official
    inp = torch.from_numpy(golden['input'])
    label = torch.from_numpy(golden['label_trainid_uint8'])
    return compare(run_fields(model, inp, label), golden), dropped


@torch.no_grad()
def run_mvfuser_unit(ref: str = DEFAULT_REF, tmp_dir: str | None = None) -> list[dict]:
    """The official MVFuser ``backbone.adapter.0`` on the fixture's seeded input."""
    import tempfile

    from mfuser.models.mvfuser import MVFuser
    require_reference(ref, [UNIT])
    gen = official_generator(ref)
    fixture = np.load(osp.join(ref, UNIT))
    with open(osp.join(ref, KEYS)) as f:
        table = json.load(f)
    prefix = 'backbone.adapter.0.'
    table['keys'] = {k: v for k, v in table['keys'].items() if k.startswith(prefix)}
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        path = osp.join(tmp, 'adapter0.keys.json')
        with open(path, 'w') as f:
            json.dump(table, f)
        state = gen.make_state_dict(path)
    fuser = MVFuser(1024, d_state=16).eval()
    fuser.load_state_dict({k[len(prefix):]: v for k, v in state.items()}, strict=True)
    g = torch.Generator().manual_seed(zlib.crc32(b'mfuser-parity-v1mvfuser_unit_input'))
    x = torch.randn(1, 128, 1024, generator=g)
    rows = []
    inp_err = float((x.double() - torch.from_numpy(fixture['input']).double()).abs().max())
    rows.append(dict(field='unit:input', error=inp_err, tol=0.0, ok=inp_err == 0,
                     note='seeded input regenerated'))
    captured = {}

    import mfuser.models.mvfuser as mv
    real_scan = mv.selective_scan_fn

    def spy(u, delta, *args, **kwargs):
        y = real_scan(u, delta, *args, **kwargs)
        captured.update(scan_u=u, scan_delta_in=delta, scan_y=y)
        return y
    mv.selective_scan_fn = spy
    try:
        out = fuser(x)
    finally:
        mv.selective_scan_fn = real_scan
    ours = dict(output=out, **captured)
    for name in ('output', 'scan_u', 'scan_delta_in', 'scan_y'):
        ref_v = fixture[name].astype(np.float64)
        got = ours[name].double().numpy().reshape(ref_v.shape)
        err = float(np.abs(got - ref_v).max() / np.abs(ref_v).max())
        rows.append(dict(field=f'unit:{name}', error=err, tol=TOL_UNIT, ok=err <= TOL_UNIT,
                         note='float32'))
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = ['| field | max rel. error | tolerance | ok | note |', '|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['field']} | {r['error']:.2e} | {r['tol']:.0e} | "
                     f"{'yes' if r['ok'] else 'NO'} | {r['note']} |")
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--golden', choices=['main', 'perturbed', 'unit', 'all'], default='all')
    parser.add_argument('--ref', default=DEFAULT_REF, help='the shared/reference folder')
    parser.add_argument('--json', help='also write the rows as JSON here')
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '2')))
    rows = []
    if args.golden in ('unit', 'all'):
        rows += run_mvfuser_unit(args.ref)
    model = None
    for which in ('main', 'perturbed'):
        if args.golden in (which, 'all'):
            model = model or build_model()
            got, dropped = run_golden(which, model, args.ref)
            rows += [dict(r, field=f'{which}:{r["field"]}') for r in got]
    print(format_rows(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    bad = [r['field'] for r in rows if not r['ok']]
    print(f'{len(rows) - len(bad)} passed, {len(bad)} failed' + (f': {bad}' if bad else ''))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
