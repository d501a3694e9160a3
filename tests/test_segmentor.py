"""The MFuser segmentor end to end at toy size: training signal, gradients, inference."""
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from tiny_models import NUM_CLASSES, tiny_mfuser_cfg

import mfuser  # noqa: F401  (registers)


def build(**kw):
    model = MODELS.build(tiny_mfuser_cfg(**kw))
    model.init_weights()
    return model


def batch(n=2, size=(56, 56), seed=0):
    """Images (0..255, BGR like mmcv loads them) and label maps with a learnable structure:
    class = horizontal band (top sky ... bottom road) with a coloured car box."""
    g = torch.Generator().manual_seed(seed)
    H, W = size
    imgs, samples = [], []
    for _ in range(n):
        lab = torch.zeros(H, W, dtype=torch.long)
        lab[: H // 3] = 2          # sky
        lab[H // 3: 2 * H // 3] = 1  # building
        lab[2 * H // 3:] = 0       # road
        y = int(torch.randint(H // 3, 2 * H // 3, (1,), generator=g))
        x = int(torch.randint(0, W - W // 4, (1,), generator=g))
        lab[y:y + H // 5, x:x + W // 4] = 3  # car
        colours = torch.tensor([[90, 90, 90], [60, 100, 160], [230, 180, 120],
                                [40, 40, 220], [200, 60, 200]], dtype=torch.float)
        img = colours[lab].permute(2, 0, 1) + 10 * torch.randn(3, H, W, generator=g)
        imgs.append(img.clamp(0, 255))
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=lab[None])
        s.set_metainfo(dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        samples.append(s)
    return dict(inputs=imgs, data_samples=samples)


def test_registry_and_loss_terms():
    model = build()
    data = model.data_preprocessor(batch(), training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert 'vl.loss_ce' in losses
    for key in ('decode.loss_cls', 'decode.loss_mask', 'decode.loss_dice'):
        assert key in losses
    # deep supervision: one set of terms per decoder layer (3 layers -> d0, d1 + final)
    assert 'decode.d0.loss_cls' in losses and 'decode.d1.loss_dice' in losses
    assert all(torch.isfinite(v).all() for v in losses.values())


def test_trainable_parts_get_gradients_and_frozen_weights_do_not():
    model = build()
    model.train()
    data = model.data_preprocessor(batch(), training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    total, _ = model.parse_losses(losses)
    total.backward()
    frozen_prefixes = ('backbone.vfm.', 'backbone.vlm.', 'text_encoder.')
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable and frozen
    assert all(n.startswith(frozen_prefixes) for n in frozen), \
        [n for n in frozen if not n.startswith(frozen_prefixes)]
    assert not any(n.startswith(frozen_prefixes) for n in trainable)
    for n, p in frozen.items():
        assert p.grad is None, n
    # every trainable group receives a non-zero gradient
    for prefix in ('contexts', 'gamma', 'context_decoder.', 'backbone.adapter.',
                   'backbone.fpn1.', 'backbone.fpn2.', 'decode_head.pixel_decoder.',
                   'decode_head.transformer_decoder.', 'decode_head.text_proj.',
                   'decode_head.query_embed.', 'decode_head.cls_embed.'):
        grads = [p.grad for n, p in trainable.items() if n.startswith(prefix)]
        assert grads, prefix
        assert any(g is not None and g.abs().sum() > 0 for g in grads), prefix
    # as released, the frozen towers follow the train mode (weights frozen); the text
    # encoder (no stochastic layers) stays in eval mode
    assert model.backbone.vfm.training and model.backbone.vlm.training
    assert not model.text_encoder.training
    assert model.decode_head.training and model.context_decoder.training


def test_overfitting_a_fixed_batch_lowers_the_loss():
    torch.manual_seed(0)
    model = build()
    model.train()
    data = model.data_preprocessor(batch(n=2), training=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    history = []
    for _ in range(30):
        losses = model.loss(data['inputs'], data['data_samples'])
        total, _ = model.parse_losses(losses)
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(float(total))
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.7 * first, history


@pytest.mark.parametrize('size', [(56, 56), (45, 71), (33, 20)])
def test_prediction_shapes_for_odd_sizes(size):
    model = build().eval()
    data = batch(n=2, size=size)
    data = model.data_preprocessor(data, training=False)
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])
    assert len(out) == 2
    for s in out:
        assert s.seg_logits.data.shape == (NUM_CLASSES, *size)
        assert s.pred_sem_seg.data.shape == (1, *size)
        assert int(s.pred_sem_seg.data.max()) < NUM_CLASSES


def test_slide_equals_whole_when_the_crop_covers_the_image():
    model = build().eval()
    data = model.data_preprocessor(batch(n=1, size=(48, 40)), training=False)
    metas = [s.metainfo for s in data['data_samples']]
    with torch.no_grad():
        whole = model.inference(data['inputs'], metas)
        model.test_cfg = dict(mode='slide', crop_size=(64, 64), stride=(32, 32))
        slide = model.inference(data['inputs'], metas)
    torch.testing.assert_close(slide, whole)
    # overlapping windows really average: a crop smaller than the image runs several windows
    model.test_cfg = dict(mode='slide', crop_size=(32, 32), stride=(16, 16))
    with torch.no_grad():
        tiled = model.inference(data['inputs'], metas)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()


def test_text_embeddings_computed_once_per_batch(monkeypatch):
    model = build().eval()
    calls = []
    orig = model.text_encoder.forward
    monkeypatch.setattr(model.text_encoder, 'forward',
                        lambda *a, **k: calls.append(1) or orig(*a, **k))
    model.test_cfg = dict(mode='slide', crop_size=(32, 32), stride=(16, 16))
    data = model.data_preprocessor(batch(n=2, size=(48, 48)), training=False)
    with torch.no_grad():
        model.predict(data['inputs'], data['data_samples'])
    assert len(calls) == 1


def test_released_parameter_names_and_shapes():
    model = build()
    names = dict(model.named_parameters())
    assert names['contexts'].shape == (1, 4, 32)
    assert names['gamma'].shape == (24, )
    assert any(n.startswith('context_decoder.memory_proj.0') for n in names)
    assert any(n.startswith('backbone.adapter.1.A_log') for n in names)


def test_mismatched_class_counts_and_widths_are_clear_errors():
    cfg = tiny_mfuser_cfg()
    cfg['decode_head']['num_classes'] = 7
    with pytest.raises(ValueError, match='class names'):
        MODELS.build(cfg)
    cfg = tiny_mfuser_cfg()
    cfg['text_encoder']['embed_dim'] = 16
    with pytest.raises(ValueError, match='width'):
        MODELS.build(cfg)
    # a swapped tower changes widths: the error names the keys to set and their values
    cfg = tiny_mfuser_cfg()
    cfg['decode_head']['in_channels'] = [48] * 4
    cfg['decode_head']['text_dim'] = 16
    cfg['context_decoder']['visual_dim'] = 16
    with pytest.raises(ValueError) as info:
        MODELS.build(cfg)
    msg = str(info.value)
    assert 'set decode_head.in_channels=[64, 64, 64, 64]' in msg
    assert 'set decode_head.text_dim=24' in msg and 'set context_decoder.visual_dim=24' in msg
    cfg = tiny_mfuser_cfg(test_cfg=dict(mode='tiles'))
    model = MODELS.build(cfg).eval()
    data = model.data_preprocessor(batch(n=1), training=False)
    with pytest.raises(ValueError, match='slide'):
        model.inference(data['inputs'], [s.metainfo for s in data['data_samples']])
