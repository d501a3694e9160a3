"""The benchmark scripts of tools/analysis run end to end (tiny sizes) and print their tables."""
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run(script, *args):
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'analysis', script), *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def table_rows(out, header_start):
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith('|'):
            break
        rows.append([c.strip() for c in line.strip('|').split('|')])
    return rows


def test_selective_scan_benchmark():
    out = run('benchmark_selective_scan.py', '--batch', '1', '--dim', '8', '--length', '64',
              '--repeats', '1', '--backends', 'cpp', 'chunked', '--mamba-ref-length', '16')
    rows = table_rows(out, '| implementation')
    assert [r[0].split(' ')[0] for r in rows] == ['loop', 'cpp', 'chunked']
    for r in rows:  # the numeric cells are the last four: forward, backward, total, speed-up
        fwd, bwd, total = (float(c) for c in r[-4:-1])
        assert total == pytest.approx(fwd + bwd, abs=2e-3)
        assert r[-1].endswith('x')
    assert 'at L=16' in out and 'selective_scan_ref pattern' in out


def test_adapter_complexity_reports_each_adapters_parameters():
    out = run('adapter_complexity.py', '--d-model', '64', '--tokens-per-stream', '16',
              '--batch', '1', '--tokens', '32', '64')
    from mfuser.models.adapters import ConcatAttentionAdapter, SeparateAttentionAdapter
    from mfuser.models.mvfuser import MVFuser
    rows = {r[0]: r for r in table_rows(out, '| adapter               | params')}
    for name, cls in (('MVFuser (Mamba)', MVFuser),
                      ('self-attn over concat', ConcatAttentionAdapter),
                      ('separate self-attn', SeparateAttentionAdapter)):
        assert rows[name][1] == f'{sum(p.numel() for p in cls(64).parameters()):,}'
    assert rows['MVFuser (Mamba)'][3] == '1.67'  # the paper's number next to it
    assert 'ConcatAttentionAdapter     tokens=64' in out


@pytest.mark.slow
def test_encoder_benchmark_on_the_demo_config():
    out = run('benchmark_encoder.py', '--config', osp.join(REPO, 'configs',
                                                           'mfuser_tiny_synthetic.py'),
              '--size', '64', '--repeats', '1')
    assert 'fused encoder (towers + 4 MVFusers + necks)' in out
    assert 'whole MFuser' in out


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_section_on_the_cpu(tmp_path):
    """The GPU check rehearsed on the CPU (the demo model, tiny sizes): every section runs,
    the tables are printed and the JSON holds no error."""
    import json
    out = run('gpu_check.py', '--smoke', '--out', str(tmp_path / 'check.json'))
    for title in ('Environment', 'Selective scan vs the float64 loop',
                  'Selective scan fwd+bwd at', 'Triton scan block sizes', 'Training iteration',
                  'Slide inference',
                  'mmcv CUDA deformable attention'):
        assert title in out, title
    res = json.loads((tmp_path / 'check.json').read_text())
    errors = {k: v for k, v in res.items() if isinstance(v, dict) and 'error' in v}
    assert not errors, errors
    acc = {(r['backend'], r['dtype']): r for r in res['scan-accuracy']}
    assert {b for b, _ in acc} >= {'cpp', 'chunked'}
    for (backend, dtype), r in acc.items():  # each within its dtype's rounding
        assert r['y'] < {'fp32': 1e-5, 'fp16': 3e-3, 'bf16': 2e-2}[dtype], (backend, dtype, r)
    train = {r['mode']: r for r in res['train']}
    assert train['fp32']['finite'] and train['fp32 + with_cp']['ms_per_iter'] > 0
    assert train['bf16']['skipped'] == 'AMP needs CUDA'
    assert res['slide']['pred_shape'] == [64, 128]
