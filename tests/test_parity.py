"""Parity with the official MFuser model's own outputs (../shared/reference).

The reference folder holds outputs of the official code for generated weights on a real
Cityscapes crop (see its README and README_clip_siglip.md), for the three released variants.
The full-size tests build the model of ``configs/mfuser_{eva02,clip,siglip}_gta.py`` (~8 GB of
memory each; one at a time: one module fixture, parametrised by variant, built once per
session) and compare every field of both goldens, each from one forward, at the tolerances
the reference measured. Without ../shared (a plain clone) they skip, under CI they fail
(tests/shared_files.py); a shared folder that lacks a fixture fails them in any case.
"""
import gc
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from shared_files import shared_path
from tool_scripts import tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
op = tool('analysis/official_parity')

CROP = (slice(256, 768), slice(768, 1280))  # rows, cols of the golden crop (x=768, y=256)


#: the fields of every golden (the perturbed ones have no encode_decode; SigLIP's also hold
#: its placeholder logit constants), input/label/accuracy aside
FIELDS = {'text_tokens', 'text_embeddings_raw', 'context_decoder_out', 'text_embeddings_refined',
          'global_embedding', 'visual_embeddings', 'score_map', 'backbone_feat_channel_mean',
          *(f'backbone_feat{i}_sub8' for i in range(4)), 'mask_features', 'cls_logits_last',
          'mask_logits_last', 'seg_mask_head', 'encode_decode', 'pred_argmax_uint8',
          'loss_scr_map'}


def reference(*names, variant='eva02'):
    """The shared reference folder, holding the variant's key table, the generator and
    ``names`` (skips without ../shared, fails under CI or when a file is missing)."""
    try:
        return op.require_reference(shared_path('reference'), list(names), variant)
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope='module', params=['eva02', 'clip', 'siglip'])
def official_model(request):
    """The variant's full-size model (pytest finishes one variant before building the next)."""
    variant = request.param
    reference(variant=variant)
    model = op.build_variant(variant)
    yield variant, model
    del model
    gc.collect()


def expected_dropped(variant: str, dropped: dict) -> bool:
    """What the converter leaves out of the generated official state dict, per variant (the
    CLIP and SigLIP segmentors have no ``random_text``)."""
    mask_token = {'backbone.dinov2.mask_token'}
    if variant == 'eva02':
        common = mask_token | {'random_text'}
        return common <= set(dropped) and all(
            k in common or k.endswith(('rope.freqs_cos', 'rope.freqs_sin')) for k in dropped)
    if variant == 'clip':
        return set(dropped) == mask_token
    proj = {k for k in dropped if k.startswith('backbone.adapter_proj')}
    return set(dropped) - proj == mask_token and len(proj) == 2 * (2 * 24) + 2  # 1,2 x 24; 3


@pytest.mark.parametrize('variant', ['clip', 'siglip'])
def test_clip_and_siglip_goldens_share_the_verified_crop_and_our_inputs_match(variant):
    """The CLIP/SigLIP goldens hold the EVA02 golden's crop and label (checked against the real
    frame below); the CLIP config's preprocessor makes the golden's input, and the SigLIP one
    (mean = std = 127.5, as the SigLIP tower wants it) the same pixels."""
    from mmengine.config import Config
    from mmseg.registry import MODELS

    from mfuser.datasets import CITYSCAPES_CLASSES
    fname = op.VARIANTS[variant]['goldens']['main'][0]
    ref = reference(fname, op.GOLDENS['main'][0], variant=variant)
    golden = np.load(osp.join(ref, fname))
    eva02 = np.load(osp.join(ref, op.GOLDENS['main'][0]))
    for key in ('input', 'input_crop_rgb_uint8', 'label_trainid_uint8'):
        np.testing.assert_array_equal(golden[key], eva02[key])
    cfg = Config.fromfile(op.VARIANTS[variant]['config'])
    pre = MODELS.build(cfg.model.data_preprocessor)
    bgr = np.ascontiguousarray(golden['input_crop_rgb_uint8'][..., ::-1])
    ours = pre(dict(inputs=[torch.from_numpy(bgr).permute(2, 0, 1)]), training=False)['inputs']
    clip_mean = np.array([122.7709383, 116.7460125, 104.09373615]).reshape(1, 3, 1, 1)
    clip_std = np.array([68.5005327, 66.6321579, 70.32316305]).reshape(1, 3, 1, 1)
    pixels = golden['input'].astype(np.float64) * clip_std + clip_mean
    if variant == 'clip':
        np.testing.assert_allclose(ours.numpy(), golden['input'], rtol=0, atol=1e-6)
    else:
        np.testing.assert_allclose(ours.double().numpy() * 127.5 + 127.5, pixels, rtol=0,
                                   atol=1e-4)
        np.testing.assert_array_equal(  # the documented placeholder ids, made independently
            op.siglip_placeholder_token_ids(CITYSCAPES_CLASSES), golden['text_tokens'])


@pytest.mark.slow
def test_official_mvfuser_unit_fixture():
    rows = op.run_mvfuser_unit(reference(op.UNIT))
    bad = [(r['field'], r['error']) for r in rows if not r['ok']]
    assert len(rows) == 5 and not bad, bad


def test_the_golden_input_is_what_our_pipeline_makes_from_the_real_image():
    """The official test pipeline on the real Cityscapes frame (BGR read, resize to 2048x1024 =
    scale 1, CLIP normalisation, RGB) equals ours: mmcv loading + the config's data
    preprocessor; the label through the Cityscapes id -> train-id table equals the golden's."""
    from cityscapesscripts.helpers.labels import labels as cs_labels
    from mmcv.transforms import LoadImageFromFile
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from PIL import Image
    golden = np.load(osp.join(reference(op.GOLDENS['main'][0]), op.GOLDENS['main'][0]))
    real = ('data', 'real', 'cityscapes')
    img_path = shared_path(*real, 'leftImg8bit', 'train', 'aachen',
                           'aachen_000000_000019_leftImg8bit.png')
    lab_path = shared_path(*real, 'gtFine', 'train', 'aachen',
                           'aachen_000000_000019_gtFine_labelIds.png')
    bgr = LoadImageFromFile()(dict(img_path=img_path))['img']
    assert bgr.shape == (1024, 2048, 3)  # the Resize to (2048, 1024) keeps scale 1
    cfg = Config.fromfile(op.CONFIG)
    pre = MODELS.build(cfg.model.data_preprocessor)
    data = pre(dict(inputs=[torch.from_numpy(bgr.copy()).permute(2, 0, 1)]), training=False)
    ours = data['inputs'][:, :, CROP[0], CROP[1]]
    np.testing.assert_array_equal(bgr[CROP][..., ::-1], golden['input_crop_rgb_uint8'])
    np.testing.assert_allclose(ours.numpy(), golden['input'], rtol=0, atol=1e-6)
    lut = np.full(256, 255, np.uint8)
    for label in cs_labels:
        if 0 <= label.id < 256 and label.trainId not in (255, -1):
            lut[label.id] = label.trainId
    ids = np.asarray(Image.open(lab_path))
    np.testing.assert_array_equal(lut[ids][CROP], golden['label_trainid_uint8'])


@pytest.mark.slow
def test_converter_cli_and_direct_loading_of_an_official_file(tmp_path):
    """An official-format EVA02 file (mmcv 1.x: meta + state_dict incl. the non-persistent
    causal mask, + optimizer) converts with tools/model_converters/mfuser2mmseg.py into a file
    that fits the config's model exactly; the converter never overwrites; the project's
    checkpoint reader (tools/test.py, tools/infer.py) converts the official file in memory."""
    import subprocess

    from tests_official_helpers import meta_model_shapes
    ref = reference()
    gen = op.official_generator(ref)
    sd = gen.make_state_dict(osp.join(ref, op.KEYS), include_nonpersistent=True)
    assert 'text_encoder.attn_mask' in sd
    spot = {'backbone.adapter.3.A_log': 'backbone.adapter.3.A_log',
            'backbone.blocks.5.attn.q_bias': 'backbone.vlm.blocks.5.attn.q_proj.bias',
            'backbone.dinov2.blocks.2.ls1.gamma': 'backbone.vfm.blocks.2.ls1.gamma',
            'decode_head.pixel_decoder.encoder.layers.0.attentions.1.attn.in_proj_weight':
                'decode_head.pixel_decoder.encoder.layers.0.cross_attn.attn.in_proj_weight',
            'decode_head.transformer_decoder.layers.8.attentions.0.attn.out_proj.bias':
                'decode_head.transformer_decoder.layers.8.cross_attn.attn.out_proj.bias'}
    expected = {ours: sd[theirs].clone() for theirs, ours in spot.items()}
    src, dst = tmp_path / 'mfuser_eva_official.pth', tmp_path / 'converted.pth'
    torch.save(dict(meta=dict(CLASSES=gen.CITYSCAPES_CLASSES, PALETTE=gen.CITYSCAPES_PALETTE,
                              iter=20000),
                    state_dict=sd,
                    optimizer=dict(state={}, param_groups=[dict(lr=1e-6, params=[0])])), src)
    del sd
    cli = [sys.executable, osp.join(REPO, 'tools', 'model_converters', 'mfuser2mmseg.py'),
           str(src), str(dst)]
    run = subprocess.run(cli, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    for text in ("variant 'eva02'", "dropped 'optimizer'", 'dropped random_text',
                 'dropped text_encoder.attn_mask', 'dropped backbone.rope.freqs_cos',
                 'dropped backbone.dinov2.mask_token'):
        assert text in run.stdout, text
    from mfuser.engine import load_trusted_local, read_state_dict
    out = load_trusted_local(str(dst), map_location='cpu', mmap=True)
    assert out['meta']['official_variant'] == 'eva02'
    assert out['meta']['dataset_meta']['classes'] == gen.CITYSCAPES_CLASSES
    shapes = meta_model_shapes('eva02')
    state = out['state_dict']
    assert set(state) == set(shapes)
    assert all(state[k].shape == shapes[k] for k in state)
    for name, value in expected.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0)
    # never overwrites
    again = subprocess.run(cli, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert again.returncode != 0 and 'exists' in again.stderr
    # the official file is accepted directly (converted in memory)
    direct = read_state_dict(str(src))
    assert set(direct) == set(shapes)
    torch.testing.assert_close(direct['backbone.adapter.3.A_log'],
                               expected['backbone.adapter.3.A_log'], rtol=0, atol=0)


# Last in the module: the full-size model of the last variant lives until the module ends.
@pytest.mark.slow
@pytest.mark.parametrize('which', ['main', 'perturbed'])
def test_official_golden_outputs_are_reproduced(official_model, which):
    """Official state dict (generator) -> converter -> strict load -> the golden crop through
    the config's data preprocessor -> one encode_decode -> every golden field in tolerance."""
    variant, model = official_model
    ref = reference(op.VARIANTS[variant]['goldens'][which][0], variant=variant)
    rows, dropped = op.run_golden(which, model, ref=ref, variant=variant)
    fields = FIELDS - ({'encode_decode'} if which == 'perturbed' else set())
    if variant == 'siglip':
        fields |= {'logit_scale', 'logit_bias'}
    assert {r['field'] for r in rows} == fields
    bad = [f"{r['field']}: {r['error']:.3g} > {r['tol']:.0e} ({r['note']})"
           for r in rows if not r['ok']]
    assert not bad, bad
    assert expected_dropped(variant, dropped), sorted(dropped)
