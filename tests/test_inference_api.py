"""mmseg's own inference API on an MFuser config and checkpoint, and import side effects."""
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from shared_files import shared_path

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'configs', 'mfuser_tiny_synthetic.py')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A runner-style checkpoint of the demo model: weights, dataset_meta and a message hub
    holding mmengine's HistoryBuffer (which plain weights-only loading refuses)."""
    from mmengine.config import Config
    from mmengine.logging import HistoryBuffer
    from mmseg.registry import MODELS

    from mfuser.datasets import CITYSCAPES_METAINFO
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(DEMO).model)
    path = tmp_path_factory.mktemp('api') / 'iter_4.pth'
    torch.save(dict(meta=dict(dataset_meta=CITYSCAPES_METAINFO, iter=4),
                    state_dict=model.state_dict(),
                    message_hub=dict(log_scalars={'train/loss': HistoryBuffer([1.0, 0.5],
                                                                               [1, 1])})),
               path)
    return str(path)


@pytest.fixture
def real_img():
    """A real 2048x1024 Cityscapes frame of ../shared."""
    return shared_path('data', 'real', 'cityscapes', 'leftImg8bit', 'train', 'aachen',
                       'aachen_000000_000019_leftImg8bit.png')


def test_init_model_inference_model_and_show_result(real_img, checkpoint, tmp_path):
    from mmseg.apis import inference_model, init_model, show_result_pyplot
    model = init_model(DEMO, checkpoint, device='cpu')
    assert model.dataset_meta['classes'][0] == 'road'
    result = inference_model(model, real_img)
    pred = result.pred_sem_seg.data
    assert pred.shape == (1, 1024, 2048) and int(pred.max()) < 19
    # the same as running the config's test pipeline and the model by hand
    from mmcv.transforms import Compose
    pipeline = Compose([t for t in model.cfg.test_pipeline if t['type'] != 'LoadAnnotations'])
    data = pipeline(dict(img_path=real_img))
    data = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
    with torch.no_grad():
        direct = model.test_step(data)[0].pred_sem_seg.data
    assert torch.equal(direct, pred)
    out = tmp_path / 'shown.png'
    drawn = show_result_pyplot(model, real_img, result, show=False, out_file=str(out),
                               opacity=0.5)
    assert out.is_file() and drawn.shape == (1024, 2048, 3)


def test_mmseg_inferencer(real_img, checkpoint, tmp_path):
    from mmseg.apis import MMSegInferencer
    inferencer = MMSegInferencer(model=DEMO, weights=checkpoint, device='cpu')
    out = inferencer(real_img, out_dir=str(tmp_path), return_datasamples=False)
    pred = np.asarray(out['predictions'])
    assert pred.shape == (1024, 2048) and pred.max() < 19
    assert list((tmp_path / 'vis').glob('*.png'))  # the painted overlay


def test_importing_mfuser_leaves_mmengine_untouched():
    """Importing the package only registers modules; the configs opt in to the safe loader
    (mfuser.engine.safe_loading), which does change the local-file loader."""
    code = (
        'from mmengine.runner.checkpoint import CheckpointLoader as C\n'
        'before = dict(C._schemes)\n'
        'import mfuser, mfuser.models, mfuser.datasets, mfuser.engine, mfuser.evaluation\n'
        'assert dict(C._schemes) == before, "import mfuser changed the checkpoint loaders"\n'
        'import mfuser.engine.safe_loading\n'
        'assert C._schemes[""] is not before[""]\n'
        'print("ok")\n')
    env = dict(__import__('os').environ)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-2000:]
