"""sysq.attention's decode kernel in Triton's CPU interpreter. Not collected by itself: the interpreter must be
on before triton is first imported, so tests/test_attention.py runs this file in a subprocess with
TRITON_INTERPRET=1."""
import os

import pytest
import torch
from transformers import StaticCache

from sysq import attention
from tiny_models import tiny_model

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_attention.py"


def _reference(q, k, v, mask, scale):
    g = q.shape[1] // k.shape[1]     # repeat_kv, then float32 attention
    m = None if mask is None else mask[:, None, None, :]
    return torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.repeat_interleave(g, 1).float(), v.repeat_interleave(g, 1).float(), attn_mask=m,
        scale=scale).transpose(1, 2)


# both dtypes and both paths on the two small shapes; the 8B-like heads (the interpreter's costliest) in bf16
@pytest.mark.parametrize("b, h, hkv, length, d, split, dtype", [
    (*shape, split, dtype) for shape in [(1, 4, 2, 40, 16), (2, 8, 2, 70, 24)] for split in (False, True)
    for dtype in (torch.float32, torch.bfloat16)] + [(1, 32, 8, 107, 128, s, torch.bfloat16) for s in (False, True)])
def test_kernel_equals_attention_over_the_expanded_cache(b, h, hkv, length, d, split, dtype, monkeypatch):
    monkeypatch.setattr(attention, "KEYS_PER_SPLIT", 16 if split else 512)
    assert (attention.splits(b, hkv, length) > 1) == split
    gen = torch.Generator().manual_seed(b * length + d)
    q, k, v = (torch.randn(b, n, t, d, generator=gen).to(dtype) for n, t in [(h, 1), (hkv, length), (hkv, length)])
    mask = torch.rand(b, length, generator=gen) < 0.6
    mask[:, 0] = True
    for m in (mask, None):
        y = torch.ops.sysq.decode_attention(q, k, v, m, d ** -0.5)
        assert y.shape == (b, 1, h, d) and y.dtype == dtype
        ref = _reference(q, k, v, m, d ** -0.5)
        if dtype == torch.float32:
            torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
        else:   # float32 inside, one rounding to bf16 at the end (round to nearest even, as the GPU stores)
            assert torch.equal(y, ref.to(dtype)) or (y.float() - ref).abs().max() <= 2 * (ref.to(dtype).float() - ref).abs().max()


@pytest.mark.parametrize("block, split", [(16, 1), (32, 1), (16, 3), (32, 2), (16, 4)])
def test_any_launch_config_gives_the_same_attention(block, split):
    """decode_attention with an explicit config (the bench's sweep); 40 keys in blocks of 16 over 4 slices leave
    the last slice empty, which the combine must ignore."""
    gen = torch.Generator().manual_seed(block + split)
    q, k, v = (torch.randn(1, n, t, 32, generator=gen).to(torch.bfloat16) for n, t in [(8, 1), (2, 40), (2, 40)])
    mask = torch.rand(1, 40, generator=gen) < 0.7
    mask[:, 0] = True
    for m in (mask, None):
        y = attention.decode_attention(q, k, v, m, 32 ** -0.5, dict(BLOCK_L=block, SPLIT=split, num_warps=2))
        ref = _reference(q, k, v, m, 32 ** -0.5)
        bound = 2 * (ref.to(y.dtype).float() - ref).abs().max()     # twice the output's own bf16 rounding
        assert y.shape == (1, 1, 8, 32) and (y.float() - ref).abs().max() <= bound


def test_a_launch_out_of_shared_memory_retries_smaller_and_keeps_it(monkeypatch):
    """The kernel's first launch failing with Triton's OutOfResources (the shared-memory estimate short) is retried
    with half the keys per iteration (no stages off the GPU) and the smaller config kept for the next calls."""
    from triton.runtime.errors import OutOfResources
    from sysq import _attention_triton
    real, blocks = _attention_triton.kernel(), []

    class Fussy:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                blocks.append(kw["BLOCK_L"])
                if kw["BLOCK_L"] > 16:
                    raise OutOfResources(300000, 232448, "shared memory")
                return real[grid](*args, **kw)
            return launch
    monkeypatch.setattr(_attention_triton, "kernel", lambda: Fussy())
    monkeypatch.setattr(attention, "_SHRUNK", {})
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, n, t, 32, generator=gen) for n, t in [(8, 1), (2, 40), (2, 40)])
    cfg = dict(BLOCK_L=64, SPLIT=1)
    y = attention.decode_attention(q, k, v, None, 32 ** -0.5, cfg)
    torch.testing.assert_close(y, _reference(q, k, v, None, 32 ** -0.5).to(y.dtype), rtol=1e-5, atol=1e-5)
    assert blocks == [64, 32, 16]
    attention.decode_attention(q, k, v, None, 32 ** -0.5, cfg)
    assert blocks == [64, 32, 16, 16]                     # kept: no failed launch the second time
    with pytest.raises(OutOfResources):                   # nothing smaller left
        monkeypatch.setattr(attention, "_SHRUNK", {})
        Fussy.__getitem__ = lambda self, grid: (lambda *a, **kw: (_ for _ in ()).throw(OutOfResources(1, 0, "smem")))
        attention.decode_attention(q, k, v, None, 32 ** -0.5, cfg)


@torch.no_grad()
def _decode_logits(model, steps: int, compiled: bool, prompt: int = 12, seed: int = 0):
    """Logits of a static-cache prefill and `steps` one-token steps (greedy), as sysq bench decodes."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (1, prompt), generator=gen)
    cache = StaticCache(config=model.config, max_cache_len=prompt + steps + 3)
    kw = dict(cache=cache, use_cache=True)
    out = [model(input_ids=ids, position_ids=torch.arange(prompt)[None], **kw).logits[:, -1]]
    fwd = torch.compile(model.forward, dynamic=False) if compiled else model.forward
    for t in range(steps):
        tok = out[-1].argmax(-1, keepdim=True)
        out.append(fwd(input_ids=tok, position_ids=torch.tensor([[prompt + t]]), **kw).logits[:, -1])
    return torch.stack(out)


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_decode_logits_equal_sdpa(family):
    model = tiny_model(family, layers=2)
    ref = _decode_logits(model, 4, compiled=False)
    assert attention.enable(model) == "sdpa"
    mine = _decode_logits(model, 4, compiled=False)
    torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5)
    attention.disable(model)
    assert model.config._attn_implementation == "sdpa"


def test_decode_logits_equal_sdpa_under_compile():
    model = tiny_model("llama", layers=2)
    ref = _decode_logits(model, 3, compiled=False)
    attention.enable(model)
    torch._dynamo.reset()
    mine = _decode_logits(model, 3, compiled=True)
    torch._dynamo.reset()
    torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5)


def test_the_kernel_runs_for_decode_steps_only(monkeypatch):
    model = tiny_model("llama", layers=2)
    attention.enable(model)
    seen = []
    real = attention.available

    def spy(device):      # asked only once a call qualifies (one query token, a boolean mask, no grad)
        seen.append(str(device))
        return real(device)
    monkeypatch.setattr(attention, "available", spy)
    _decode_logits(model, 2, compiled=False)
    assert seen == ["cpu"] * 4      # 2 layers x 2 steps; the 12-token prefill went to sdpa
    with torch.enable_grad():       # a forward that may be differentiated goes to sdpa too
        model(input_ids=torch.tensor([[5]]))
    assert len(seen) == 4


def test_generate_equal_to_sdpa():
    model = tiny_model("llama", layers=2)
    ids = torch.randint(3, 300, (1, 10), generator=torch.Generator().manual_seed(3))
    kw = dict(max_new_tokens=8, do_sample=False, cache_implementation="static", pad_token_id=0)
    ref = model.generate(ids, **kw)
    attention.enable(model)
    out = model.generate(ids, **kw)
    assert torch.equal(out, ref)


def test_shared_length_cache_gives_the_same_logits_and_positions():
    model = tiny_model("llama", layers=3)
    attention.enable(model)
    ref = _decode_logits(model, 3, compiled=False)
    made = []
    real = attention.static_cache

    def cache_of(config, max_cache_len):
        made.append(real(model, max_cache_len))
        return made[-1]
    import attention_cases
    attention_cases.StaticCache = cache_of
    try:
        mine = _decode_logits(model, 3, compiled=False)
        torch._dynamo.reset()
        mine_c = _decode_logits(model, 3, compiled=True)
        torch._dynamo.reset()
    finally:
        attention_cases.StaticCache = StaticCache
    assert torch.equal(mine, ref)
    torch.testing.assert_close(mine_c, ref, rtol=1e-5, atol=1e-5)
    cache = made[0]
    assert all(layer.cumulative_length is cache.layers[0].cumulative_length for layer in cache.layers)
    assert int(cache.get_seq_length()) == 12 + 3           # advanced once per forward, not once per layer
    cache.crop(-2)
    assert int(cache.get_seq_length()) == 13
