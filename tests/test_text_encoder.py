"""CoOpTextEncoder: prompt assembly against open_clip's own text forward, freezing, errors."""
import pytest
import torch

from mfuser.datasets import CITYSCAPES_CLASSES
from mfuser.models.text_encoder import CoOpTextEncoder

TINY = dict(text_cfg=dict(width=32, heads=2, layers=2), embed_dim=24)


def reference_tower(enc, context_length):
    """open_clip's TextTransformer with the encoder's weights and a shorter context."""
    import open_clip
    from open_clip.model import _build_text_tower
    cfg = open_clip.get_model_config(enc.model_name)
    text_cfg = dict(cfg['text_cfg'], **TINY['text_cfg'], context_length=context_length)
    ref = _build_text_tower(TINY['embed_dim'], text_cfg,
                            quick_gelu=bool(cfg.get('quick_gelu', False)))
    state = {k: v for k, v in enc.state_dict().items()}
    state['positional_embedding'] = state['positional_embedding'][:context_length]
    ref.load_state_dict(state)
    return ref.eval()


def test_shapes_and_attributes():
    enc = CoOpTextEncoder(**TINY)
    assert enc.num_classes == 19 and enc.class_names == CITYSCAPES_CLASSES
    assert enc.width == 32 and enc.embed_dim == 24 and enc.context_length == 13
    ctx = torch.randn(1, 8, 32)
    assert enc(ctx).shape == (19, 24)  # shared context (the segmentor's parameter)
    assert enc(ctx[0]).shape == (19, 24)
    assert enc(torch.randn(3, 8, 32)).shape == (3, 19, 24)  # per-sample contexts


def test_context_equal_to_word_embeddings_reproduces_open_clip_prompt():
    """Context vectors = embeddings of 'a photo of a' must give open_clip's own encoding of
    'a photo of a <class>.' -- proves SOS/context/name order, positions, mask and EOS shift."""
    from open_clip.tokenizer import SimpleTokenizer
    names = ['road', 'traffic light', 'motorcycle']
    enc = CoOpTextEncoder(class_names=names, n_ctx=4, **TINY)
    tok = SimpleTokenizer()
    words = tok('a photo of a', context_length=6)[0, 1:5]  # drop SOS/EOS
    ctx = enc.token_embedding(words)[None]  # (1, 4, 32)
    ref = reference_tower(enc, 9)
    with torch.no_grad():
        ours = enc(ctx)
        theirs = ref(tok([f'a photo of a {n}' for n in names], context_length=9))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_no_context_equals_open_clip_forward():
    enc = CoOpTextEncoder(n_ctx=0, **TINY)
    ref = reference_tower(enc, 5)
    with torch.no_grad():
        torch.testing.assert_close(enc(torch.zeros(1, 0, 32)), ref(enc.tokens),
                                   atol=1e-5, rtol=1e-5)


def test_batched_contexts_are_independent():
    enc = CoOpTextEncoder(**TINY)
    a, b = torch.randn(1, 8, 32), torch.randn(1, 8, 32)
    with torch.no_grad():
        both = enc(torch.cat([a, b]))
        torch.testing.assert_close(both[0], enc(a))
        torch.testing.assert_close(both[1], enc(b))


def test_gradients_reach_contexts_only_and_encoder_stays_eval():
    enc = CoOpTextEncoder(**TINY)
    enc.train()
    assert not enc.training and not enc.transformer.training
    ctx = torch.randn(1, 8, 32, requires_grad=True)
    enc(ctx).square().sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in enc.parameters())


@pytest.mark.parametrize('variant,quick', [('clip', True), ('eva02', False)])
def test_text_tower_mlps_compute_the_activation_the_weights_were_trained_with(variant, quick):
    """The text tower the config names computes x * sigmoid(1.702 x) (QuickGELU: OpenAI CLIP)
    or the exact GELU (EVA02-CLIP) in every block's MLP, checked against both by hand."""
    import os.path as osp

    from mmengine.config import Config
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    cfg = Config.fromfile(osp.join(repo, 'configs', f'mfuser_{variant}_gta.py'))
    enc = CoOpTextEncoder(model_name=cfg.model.text_encoder.model_name, **TINY)
    x = torch.randn(3, 7, 32) * 2
    with torch.no_grad():
        for block in enc.transformer.resblocks:
            h = block.mlp.c_fc(x)
            by_quick = block.mlp.c_proj(h * torch.sigmoid(1.702 * h))
            by_gelu = block.mlp.c_proj(torch.nn.functional.gelu(h))
            want, other = (by_quick, by_gelu) if quick else (by_gelu, by_quick)
            torch.testing.assert_close(block.mlp(x), want, rtol=1e-5, atol=1e-5)
            assert (block.mlp(x) - other).abs().max() > 1e-3


def test_siglip_needs_local_tokenizer_and_works_with_one():
    with pytest.raises(ValueError, match='tokenizer'):
        CoOpTextEncoder(model_name='ViT-L-16-SigLIP-384', **TINY)

    def fake_tokenizer(texts, context_length):  # T5-style: no start token, EOS=1, pad=0
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [3 + (ord(c) % 50) for c in t][:context_length - 1] + [1]
            out[i, :len(ids)] = torch.tensor(ids)
        return out

    enc = CoOpTextEncoder(model_name='ViT-L-16-SigLIP-384', tokenizer=fake_tokenizer,
                          class_names=['car', 'sky'], **TINY)
    # as released, the context goes after SigLIP's first (word) token; the last token pools
    assert enc.num_start_tokens == 1 and enc.pool_type == 'last' and enc.attn_mask is None
    assert enc(torch.randn(2, 8, 32)).shape == (2, 2, 24)
    with pytest.raises(FileNotFoundError, match='tokenizer'):
        CoOpTextEncoder(model_name='ViT-L-16-SigLIP-384', tokenizer='/nonexistent/tok', **TINY)


def test_token_ids_replace_the_tokenizer_for_any_text_tower():
    """model.text_encoder.token_ids: the ids are used as given (the encoding equals the one
    from a tokenizer returning the same ids), SigLIP builds without a tokenizer directory, and
    every malformed input is a one-line error naming the key."""
    ids = [[2015, 1, 1, 1, 1], [18890, 2324, 1, 1, 1]]  # placeholder SigLIP ids

    def same_ids(texts, context_length):
        return torch.tensor(ids)

    torch.manual_seed(1)
    given = CoOpTextEncoder(model_name='ViT-L-16-SigLIP-384', token_ids=ids,
                            class_names=['road', 'traffic light'], **TINY)
    torch.manual_seed(1)
    via_tok = CoOpTextEncoder(model_name='ViT-L-16-SigLIP-384', tokenizer=same_ids,
                              class_names=['road', 'traffic light'], **TINY)
    assert given.tokens.tolist() == ids and given.num_start_tokens == 1
    ctx = torch.randn(1, 8, 32)
    torch.testing.assert_close(given(ctx), via_tok(ctx), rtol=0, atol=0)
    # CLIP too: the ids open_clip's tokenizer makes give the same encoding as the tokenizer
    clip = CoOpTextEncoder(model_name='ViT-L-14-336-quickgelu', **TINY)
    clip_ids = CoOpTextEncoder(model_name='ViT-L-14-336-quickgelu', token_ids=clip.tokens.tolist(),
                               **TINY)
    clip_ids.load_state_dict(clip.state_dict())
    torch.testing.assert_close(clip_ids(ctx), clip(ctx), rtol=0, atol=0)

    def build(token_ids, **kw):
        return CoOpTextEncoder(model_name='ViT-L-16-SigLIP-384', token_ids=token_ids,
                               class_names=['road', 'traffic light'], **TINY, **kw)
    for bad, match in (([ids[0]], 'has 1 rows but there are 2 class names'),
                       ([ids[0], ids[1][:4]], 'row 1 has 4 ids.*name_context_length=5'),
                       ([ids[0], [1, 1, 1, 1, 32000]], 'id 32000, outside the vocabulary'),
                       ([ids[0], [-1, 1, 1, 1, 1]], 'id -1, outside'),
                       ([ids[0], [1.5, 1, 1, 1, 1]], 'integer lists'),
                       (5, 'integer lists')):
        with pytest.raises(ValueError, match='model.text_encoder.token_ids.*' + match):
            build(bad)
    with pytest.raises(ValueError, match='either token_ids or tokenizer'):
        build(ids, tokenizer=same_ids)


def test_class_name_errors_and_presets():
    with pytest.raises(ValueError, match='empty'):
        CoOpTextEncoder(class_names=[], **TINY)
    with pytest.raises(ValueError, match='Unknown class-name set'):
        CoOpTextEncoder(class_names='ade20k', **TINY)
    with pytest.raises(ValueError, match='duplicates'):
        CoOpTextEncoder(class_names=['car', 'car'], **TINY)
    assert CoOpTextEncoder(class_names='synthia', **TINY).num_classes == 16
    with pytest.raises(ValueError, match='Unknown open_clip model'):
        CoOpTextEncoder(model_name='nope', **TINY)
    enc = CoOpTextEncoder(**TINY)
    with pytest.raises(ValueError, match='contexts must be'):
        enc(torch.randn(1, 7, 32))
    with pytest.raises(FileNotFoundError, match='text_encoder.checkpoint'):
        CoOpTextEncoder(checkpoint='/nonexistent/EVA02.pt', **TINY)


def test_registry_build():
    from mmseg.registry import MODELS
    enc = MODELS.build(dict(type='CoOpTextEncoder', class_names=['a', 'b'], **TINY))
    assert enc(torch.randn(1, 8, 32)).shape == (2, 24)
