"""sysq.attention_mass in Triton's CPU interpreter. Not collected by itself: the interpreter must be on before triton
is first imported, so tests/test_detect.py runs this file in a subprocess with TRITON_INTERPRET=1."""
import os

import pytest
import torch

from sysq import attention_mass
from sysq.attention_mass import AttentionMass, received_mass
from sysq.capture import Recorder
from sysq.detect import Thresholds, detect
from test_detect import ids, planted
from tiny_models import tiny_model

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_detect.py"


@pytest.mark.parametrize("b, h, hkv, t, d", [(2, 4, 2, 37, 16), (1, 6, 2, 70, 24), (1, 4, 4, 64, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_equals_the_probabilities_column_sums(b, h, hkv, t, d, dtype):
    gen = torch.Generator().manual_seed(t * d + h)
    q = (3 * torch.randn(b, h, t, d, generator=gen)).to(dtype)
    k = (3 * torch.randn(b, hkv, t, d, generator=gen)).to(dtype)
    ref = AttentionMass(q, k, d ** -0.5, None).probabilities().sum(2, dtype=torch.float64)
    got = received_mass(q, k, d ** -0.5)
    assert got.shape == (b, h, t) and got.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # every query's probabilities sum to one: the mass over keys is the number of queries
    torch.testing.assert_close(got.sum(-1), torch.full((b, h), float(t), dtype=torch.float64), rtol=1e-6, atol=0)


def test_corner_is_the_first_windows_probabilities():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 30, 16, generator=gen), torch.randn(2, 2, 30, 16, generator=gen)
    m = AttentionMass(q, k, 0.25, None)
    torch.testing.assert_close(m.corner(12), m.probabilities()[0, :, :12, :12], rtol=1e-6, atol=1e-7)


def _close(a, b, where=""):
    """Equal structure, equal ints and strings, floats within 1e-4 (the two attentions' float32 roundings)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{k}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), where
    else:
        assert a == b, where


def test_detect_with_the_attention_mass_equals_eager(monkeypatch):
    model, x = planted(), ids(n=4, T=24)
    assert attention_mass.available("cpu")
    seen = []
    orig = attention_mass.mass_attention_forward
    monkeypatch.setattr(attention_mass, "mass_attention_forward",
                        lambda *a, **kw: seen.append(1) or orig(*a, **kw))
    fast = detect(model, x, quiet=True, batch_size=2)
    assert seen and model.config._attn_implementation == "sdpa"
    monkeypatch.setenv("SYSQ_ATTENTION_MASS", "0")
    n = len(seen)
    eager = detect(model, x, quiet=True, batch_size=2)
    assert len(seen) == n                          # the eager run did not pass through it
    _close(fast.summary, eager.summary, "summary")
    _close(fast.attention, eager.attention, "attention")
    _close(fast.consistency, eager.consistency, "consistency")
    assert any(l["outlier_keys"] for l in fast.attention["layers"])      # the planted BOS draws the mass


def test_a_sliding_window_mask_takes_the_probabilities(monkeypatch):
    # Mistral with a window shorter than the sequence: sdpa gets a mask, the mass comes from the probabilities
    model, x = tiny_model("mistral", layers=2, sliding_window=8), torch.randint(3, 300, (2, 20))
    got = {}
    for impl in ("sysq_mass", "eager"):
        rec = Recorder(model, Thresholds())
        if impl == "sysq_mass":
            ctx = attention_mass.enabled(model)
        else:
            model.set_attn_implementation("eager")
            ctx = torch.no_grad()
        with ctx:
            rec.attach()
            rec.run(x, 0)
            rec.detach()
        got[impl] = [st.sink_sum.clone() for st in rec.attn]
        model.set_attn_implementation("sdpa")
    for a, b in zip(got["sysq_mass"], got["eager"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
