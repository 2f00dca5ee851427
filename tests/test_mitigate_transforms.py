"""Function preservation of the mitigation transforms: full-precision logits unchanged within float error."""
import pytest
import torch

from sysq.arch import get_adapter
from sysq.errors import SysqError
from sysq.mitigate.plan import Rotate, Smooth
from sysq.mitigate.rotate import apply_kron, factors, fit_rotation, mean_preserving, rotate, rotation
from sysq.mitigate.smooth import smooth

from mitigate_tiny import ALL, logits, rel_err, tiny, tokens

FAMILIES = ["llama", "qwen2", "qwen3", "phi3", "opt", "gemma", "gpt2", "gemma2", "bert"]


@pytest.mark.parametrize("n", [4, 12, 48, 64, 96, 576, 1536, 56, 36])
def test_rotation_is_orthogonal(n):
    q = rotation(n)
    assert torch.allclose(q @ q.t(), torch.eye(n, dtype=q.dtype), atol=1e-10)
    x = torch.randn(3, n, dtype=torch.float64)
    assert torch.allclose(apply_kron(x, factors(n)), x @ q, atol=1e-10)


def test_hadamard_used_where_one_exists():
    # 576 = 12 * 12 * 4 and 1536 = 12 * 128 have Hadamard matrices: every entry is +-1/sqrt(n)
    for n in (576, 1536, 48):
        q = rotation(n)
        assert torch.allclose(q.abs(), torch.full_like(q, n ** -0.5))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mappings", ["norm", "all"])
def test_smooth_preserves_logits(family, mappings):
    model, ids = tiny(family), tokens()
    ad = get_adapter(model)
    norm_before = ad.norm_weight(ad.attn_norm(0)).clone()
    ref = logits(model, ids)
    chosen = smooth(model, ids, Smooth(alpha=0.5, mappings=mappings), quiet=True)
    norms = 0 if ad.post_ln else 4          # post-LN (BERT): a norm output is the residual, nothing folds there
    assert len(chosen) == len(ad.mappings(0)) * 2 if mappings == "all" else len(chosen) == norms
    assert rel_err(logits(model, ids), ref) < 1e-4
    # the fold really happened (a post-LN norm is left alone)
    assert torch.allclose(ad.norm_weight(ad.attn_norm(0)), norm_before) == ad.post_ln


@pytest.mark.parametrize("family", FAMILIES)
def test_smooth_search_preserves_logits_and_lowers_error(family):
    model, ids = tiny(family), tokens()
    ref = logits(model, ids)
    smooth(model, ids, Smooth(alphas=[0.25, 0.5, 0.75]), quiet=True)
    assert rel_err(logits(model, ids), ref) < 1e-4


@pytest.mark.parametrize("family", ALL)
def test_rotate_preserves_logits(family):
    """Every family takes every rotation it can keep exact: RMSNorm and LayerNorm families (OPT, GPT-2: mean-free
    stream, mean-preserving rotation) the residual one too; post-norm (Gemma 2/3) and post-LN (BERT, RoBERTa)
    families the per-head v->o and online down_proj ones."""
    model, ids = tiny(family), tokens()
    ref = logits(model, ids)
    cfg, notes = fit_rotation(Rotate(), model)
    summary = rotate(model, cfg)
    assert rel_err(logits(model, ids), ref) < 1e-4
    residual = family not in ("gemma2", "gemma3_text", "bert", "roberta")
    assert ("residual" in summary) == residual and bool(notes) != residual
    assert set(summary) >= {"heads", "down"}


@pytest.mark.parametrize("family", ["opt", "gpt2"])
def test_layernorm_rotation_keeps_the_modules_and_their_mean_free_stream(family):
    """QuaRot's LayerNorm step without swapping modules: the norms stay nn.LayerNorm with unit weight, the stream
    they read is mean-free after rotation (so their mean subtraction is a no-op), and the rotation spreads."""
    model, ids = tiny(family), tokens()
    ad = get_adapter(model)
    rotate(model, Rotate())
    seen = []
    h = ad.mlp_norm(1).register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    logits(model, ids)
    h.remove()
    x = seen[0]
    assert isinstance(ad.mlp_norm(1), torch.nn.LayerNorm)
    assert torch.allclose(ad.mlp_norm(1).weight, torch.ones_like(ad.mlp_norm(1).weight))
    assert x.mean(-1).abs().max() < 1e-4 * x.abs().max()


def test_mean_preserving_rotation_fixes_ones_and_spreads():
    for n in (48, 64, 576, 768):
        q = mean_preserving(rotation(n))
        ones = torch.ones(n, dtype=q.dtype)
        assert torch.allclose(q @ ones, ones, atol=1e-10)
        assert torch.allclose(q @ q.t(), torch.eye(n, dtype=q.dtype), atol=1e-10)
        assert q.abs().max() * n ** 0.5 < 5        # no channel left unrotated (a plain reflection leaves one)


def test_rotate_spreads_a_massive_channel():
    model, ids = tiny("llama"), tokens()
    ad = get_adapter(model)
    with torch.no_grad():
        ad.down(0).weight[5, :] *= 200.0          # plant a massive residual channel
    seen = {}
    h = ad.layers()[1].register_forward_pre_hook(lambda m, a, k=None: seen.__setitem__("x", a[0]) if a else None,
                                                 with_kwargs=False)
    logits(model, ids)
    before = seen["x"].abs().amax((0, 1))
    rotate(model, Rotate())
    logits(model, ids)
    h.remove()
    after = seen["x"].abs().amax((0, 1))
    ratio = lambda v: (v.max() / v.median()).item()
    assert ratio(after) < ratio(before) / 4


@pytest.mark.parametrize("family, word", [("gemma2", "post-sub-block"), ("bert", "post-LN")])
def test_rotate_refuses_the_residual_part_clearly(family, word):
    with pytest.raises(SysqError, match=word):
        rotate(tiny(family), Rotate())


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3", "opt", "gemma2"])
def test_rotate_then_smooth_preserves_logits(family):
    # smoothing must not fold into down_proj once rotate's online Hadamard sits on its input
    model, ids = tiny(family), tokens()
    ref = logits(model, ids)
    rotate(model, fit_rotation(Rotate(), model)[0])
    chosen = smooth(model, ids, Smooth(alpha=0.5), quiet=True)
    assert chosen and not any("down" in name for name in chosen)
    assert rel_err(logits(model, ids), ref) < 1e-4


def test_awq_scales_preserve_logits_and_never_raise_the_int4_output_error():
    """AWQ's mean|X|^a search (Smooth.statistic 'mean') on a weight-only INT4 recipe: the float function is kept,
    and the chosen scales lower (or, identity allowed, keep) the simulated output error on the calibration rows."""
    from sysq.mitigate.calib import input_stats
    from sysq.mitigate.qsim import fake_weight
    from sysq.quant import get_recipe
    model, ids = tiny("llama"), tokens()
    with torch.no_grad():                                # a salient input channel, as AWQ assumes
        get_adapter(model).attn_norm(0).weight[7] *= 20
    r = get_recipe({"base": "w4a16-g32+fz", "weight": {"group_size": 16}})
    ad = get_adapter(model)

    def err():
        q = ad.linears(0)["q"]
        st = input_stats(model, ids, {"q": q}, quiet=True)["q"]
        w = q.weight.float()
        return float((st.sample @ fake_weight(w, r.weight).t() - st.sample @ w.t()).pow(2).sum())

    ref, before = logits(model, ids), err()
    chosen = smooth(model, ids, Smooth(statistic="mean"), r, quiet=True)
    assert rel_err(logits(model, ids), ref) < 1e-4
    assert "layers.0.attn_norm->q,k,v" in chosen and err() < before
