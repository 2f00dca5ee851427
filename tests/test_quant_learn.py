"""Learned rounding and clipping (sysq/quant/learn.py) on tiny models: never worse than RTN per layer, deterministic."""
import copy

import pytest
import torch

from sysq import get_adapter
from sysq.quant import quantize
from sysq.quant.gptq import layer_inputs, run_layer
from sysq.quant.learn import output_loss
from tiny_models import VOCAB, tiny_model

FEW = {"learn_steps": 12}


def _rtn_twin(float_model, learned_model, recipe, calib):
    """Per layer, on the learned model's own inputs to that layer, against the float layer on the float inputs:
    (error of the learned layer, error of the same layer rounded to nearest), in the recipe's objective."""
    kind = recipe.get("learn_loss", "mse")
    errs = []
    xf, kw = layer_inputs(float_model, calib)
    xq, _ = layer_inputs(learned_model, calib)
    rtn = copy.deepcopy(float_model)
    quantize(rtn, {**recipe, "method": "rtn"}, calib, quiet=True)
    with torch.no_grad():
        for lf, lq, lr in zip(*(get_adapter(m).layers() for m in (float_model, learned_model, rtn))):
            yf = [run_layer(lf, x, kw) for x in xf]
            errs.append((sum(float(output_loss(run_layer(lq, x, kw), y, kind, "sum")) for x, y in zip(xq, yf)),
                         sum(float(output_loss(run_layer(lr, x, kw), y, kind, "sum")) for x, y in zip(xq, yf))))
            xq = [run_layer(lq, x, kw) for x in xq]
            xf = yf
    return errs


@pytest.mark.parametrize("recipe", [
    {"base": "w4a16-g32", **FEW},
    {"base": "w4a16-g32+fz", **FEW},
    {"base": "w4a8", **FEW},
    {"base": "w4a4+g32+fz", **FEW},      # 4-bit activations in the loop (straight-through), float zero points
    {"base": "w4a16-g32+fz", "learn_steps": 12, "learn_batch_size": 6},   # every window per step: best step kept
    {"base": "w4a16-g32+fz", "learn_loss": "token", **FEW},
    {"base": "w4a16-g32", "learn_steps": 6, "learn_lr": 4.0},     # a step far too large: RTN must be kept
    {"base": "w4a16-g32+fz+amp", **FEW},           # training under bf16 autocast, the error passes in float32
    {"base": "w4a4+g32+fz+amp", **FEW},
    {"base": "w4a4+g32+actclip", **FEW},          # the activation clip ratios learned too
])
def test_learned_rounding_never_increases_a_layers_calibration_output_error_over_rtn(recipe):
    model = tiny_model("llama", layers=2)
    calib = torch.randint(3, VOCAB, (6, 24), generator=torch.Generator().manual_seed(1))
    learned = copy.deepcopy(model)
    summary = quantize(learned, {**recipe, "method": "learned"}, calib, quiet=True)
    errs = _rtn_twin(model, learned, recipe, calib)
    for i, (e_learned, e_rtn) in enumerate(errs):
        assert e_learned <= e_rtn * (1 + 1e-6), (i, e_learned, e_rtn)
    info = summary.calibration["learned"]
    assert info["layers"] == 2 and info["steps_per_layer"] == recipe["learn_steps"]
    if recipe.get("learn_lr"):
        assert info["layers_kept"] == 0 and all(abs(e - r) <= 1e-6 * r for e, r in errs)
    else:                                     # and the learning does something
        assert info["layers_kept"] >= 1 and min(e / r for e, r in errs) < 0.9


@pytest.mark.parametrize("amp", [None, "bf16"])
def test_learned_step_is_deterministic_for_a_seed(amp):
    model = tiny_model("llama", layers=2)
    calib = torch.randint(3, VOCAB, (6, 24), generator=torch.Generator().manual_seed(1))

    def codes(seed):
        m = copy.deepcopy(model)
        quantize(m, {"base": "w4a16-g32+fz", "method": "learned", "learn_seed": seed, "learn_steps": 20,
                     "learn_amp": amp}, calib, quiet=True)
        return {ref.name: (ref.module.codes(), ref.module.w_scale, ref.module.w_zero)
                for ref in get_adapter(m).linear_refs()}

    a, b, c = codes(0), codes(0), codes(1)
    assert all(torch.equal(x, y) for k in a for x, y in zip(a[k], b[k]))
    assert any(not torch.equal(x, y) for k in a for x, y in zip(a[k], c[k]))     # the seed picks the batches


def test_learned_rounding_after_rotation_with_grouped_4bit_activations_in_the_loop():
    """w4a4 with rotation (online down_proj Hadamard) and activation groups that must be halved to divide the
    width: the mitigation's simulation and the learned step both run, and no layer ends above RTN's error."""
    from sysq.mitigate.api import mitigate, plan

    model = tiny_model("llama", layers=2)
    calib = torch.randint(3, VOCAB, (6, 24), generator=torch.Generator().manual_seed(1))
    width = model.config.hidden_size
    recipe = f"w4a4+g32+ag{width * 2}+kv4+learned12"        # halved until it divides the width
    r = mitigate(model, plan(None, recipe, "rotate+smooth+learned"), calib, quiet=True)
    assert r.method == "learned" and r.learn_steps == 12
    summary = quantize(model, r, calib, quiet=True)
    info = summary.calibration["learned"]
    assert info["layers"] == 2 and all(e <= 1.0 for e in info["error_vs_rtn"])
    q = get_adapter(model).linear_refs()[0].module
    assert q.act_group_size == width and q.act_spec.granularity == "group"
    assert torch.isfinite(model(calib[:2]).logits).all()


@pytest.mark.parametrize("recipe", [
    {"base": "w4a16-g32+fz", **FEW},
    {"base": "w4a16-g32", "learn_steps": 6, "learn_lr": 4.0},     # RTN kept: the RTN pass's outputs
    {"base": "w4a16-g32+fz", "learn_steps": 12, "learn_batch_size": 6},   # the best step's pass
    {"base": "w4a8", **FEW},                                     # activation quantizer in the pass
    {"base": "w8a8", **FEW},                                     # INT8 W8A8: integer product, computed again
])
def test_learn_block_hands_on_the_committed_layers_outputs(recipe):
    """The next layer's inputs learn_block passes on (from its last error pass) are what the committed
    QuantLinears compute, bit for bit."""
    from sysq.quant.api import prepare
    from sysq.quant.learn import LearnConfig, learn_block
    from sysq.quant.linear import QuantLinear
    from sysq.quant.recipes import get_recipe

    model = tiny_model("llama", layers=2)
    calib = torch.randint(3, VOCAB, (6, 24), generator=torch.Generator().manual_seed(1))
    r = get_recipe({**recipe, "method": "learned"})
    prepare(model, r)
    inputs, kw = layer_inputs(model, calib)
    layer = get_adapter(model).layers()[0]
    qls = [m for m in layer.modules() if isinstance(m, QuantLinear)]
    out = []
    cfg = LearnConfig(r.learn_steps, r.learn_lr, r.learn_batch_size)
    with torch.no_grad():
        learn_block(layer, qls, inputs, lambda l, x: run_layer(l, x, kw), cfg, outputs=out)
        again = [run_layer(layer, x, kw) for x in inputs]
    assert all(q.quantized for q in qls) and len(out) == len(inputs)
    assert all(torch.equal(a, b) for a, b in zip(out, again))


def test_bf16_autocast_trains_in_bf16_and_keeps_the_model_float32():
    """learn_amp="bf16" runs the training steps' linears in bfloat16 (what makes it fast) and nothing else: the targets
    and the error passes (RTN against learned, the state kept) run in float32 and the committed weights stay float32;
    a bad value is refused."""
    from sysq.errors import SysqError
    from sysq.quant.api import prepare
    from sysq.quant.learn import LearnConfig, learn_block
    from sysq.quant.linear import QuantLinear
    from sysq.quant.recipes import get_recipe

    base = tiny_model("llama", layers=1)
    calib = torch.randint(3, VOCAB, (4, 24), generator=torch.Generator().manual_seed(1))
    for amp in (None, "bf16"):
        model = copy.deepcopy(base)
        r = get_recipe({"base": "w4a16-g32+fz", "method": "learned", "learn_steps": 8, "learn_amp": amp})
        prepare(model, r)
        inputs, kw = layer_inputs(model, calib)
        layer = get_adapter(model).layers()[0]
        qls = [m for m in layer.modules() if isinstance(m, QuantLinear)]
        seen = []
        qls[0].register_forward_hook(lambda mod, a, out: seen.append((torch.is_grad_enabled(), out.dtype)))
        with torch.no_grad():
            learn_block(layer, qls, inputs, lambda l, x: run_layer(l, x, kw),
                        LearnConfig(r.learn_steps, r.learn_lr, r.learn_batch_size, amp=r.learn_amp))
        assert {dt for grad, dt in seen if grad} == ({torch.bfloat16} if amp else {torch.float32}), (amp, seen)
        assert {dt for grad, dt in seen if not grad} == {torch.float32}           # targets and the error passes
        assert all(q.quantized and q.dequantized_weight().dtype == torch.float32 for q in qls)
    with pytest.raises(SysqError, match="learn_amp"):
        get_recipe({"base": "w4a16-g32", "method": "learned", "learn_amp": "fp16"})


def test_bf16_autocast_falls_back_to_the_models_dtype_where_bf16_is_emulated(monkeypatch, caplog):
    """On a device without native bf16 (an AVX2 CPU, where it runs 6x slower than float32) learn_model trains in the
    model's dtype, says so, and records it: the same weights as amp=None, bit for bit."""
    from sysq.quant import learn
    from sysq.quant.api import prepare
    from sysq.quant.linear import QuantLinear
    from sysq.quant.recipes import get_recipe

    base = tiny_model("llama", layers=1)
    calib = torch.randint(3, VOCAB, (4, 24), generator=torch.Generator().manual_seed(1))
    weights, errors, amps = {}, {}, {}
    for native, amp in ((False, "bf16"), (False, None), (True, "bf16")):
        monkeypatch.setattr(learn, "bf16_native", lambda device, native=native: native)
        model = copy.deepcopy(base)
        prepare(model, get_recipe({"base": "w4a16-g32+fz", "method": "learned", "learn_steps": 6}))
        caplog.clear()
        summary = learn.learn_model(model, calib, learn.LearnConfig(steps=6, amp=amp), quiet=True)
        amps[(native, amp)] = summary.config.amp
        assert ("no native bf16" in caplog.text) == (amp == "bf16" and not native)
        weights[(native, amp)] = [m.dequantized_weight() for m in model.modules() if isinstance(m, QuantLinear)]
        errors[(native, amp)] = [b.learned for b in summary.layers]      # what the trained state reached
    assert amps == {(False, "bf16"): None, (False, None): None, (True, "bf16"): "bf16"}
    assert all(torch.equal(a, b) for a, b in zip(weights[(False, "bf16")], weights[(False, None)]))
    assert errors[(False, "bf16")] == errors[(False, None)] != errors[(True, "bf16")]


@pytest.mark.parametrize("base", ["w4a16-g32+fz", "w4a16-g32", "w4a8"])
def test_the_fake_quantizers_by_hand_give_autograds_gradients_bit_for_bit(base, monkeypatch):
    """_FloatZeroFakeQuant and _IntZeroFakeQuant (the training step's weight, written out by hand for speed) give
    the same weights and the same gradients of V, a and b as autograd's graph of _Learner.codes, over SignSGD steps
    that move V and the clip factors (so codes clamp, and rows clip)."""
    from sysq.quant.api import prepare
    from sysq.quant.learn import _Learner
    from sysq.quant.linear import QuantLinear

    from sysq.quant import cpu_kernels
    monkeypatch.setattr(cpu_kernels, "applies", lambda *ts: False)     # the torch functions (the C pass: below)
    model = tiny_model("llama", layers=1)
    prepare(model, {"base": base, "method": "learned"})
    qls = [m for m in model.modules() if isinstance(m, QuantLinear)]
    g = torch.Generator().manual_seed(0)
    for q in qls:
        q.weight.data = torch.randn(q.weight.shape, generator=g) * torch.rand(q.weight.shape[1], generator=g) * 3
        fast, slow = _Learner(q, 0.5), _Learner(q, 0.5)
        x = torch.randn(7, q.weight.shape[1], generator=g)

        def reference(lrn):
            c, scale, zero = lrn.codes(ste=True)
            w = c * scale + zero if lrn.float_zero else (c - zero) * scale
            return w.reshape(lrn.w.shape)

        for step in range(8):
            wf, ws = fast.weight(), reference(slow)
            assert torch.equal(wf, ws), (q, step)
            target = torch.randn(7, q.weight.shape[0], generator=g)
            for lrn, w in ((fast, wf), (slow, ws)):
                (x @ w.T - target).pow(2).sum().backward()
            assert all(torch.equal(pf.grad, ps.grad) for pf, ps in zip(fast.params(), slow.params())), (q, step)
            fast.step(0.2)
            slow.step(0.2)


@pytest.mark.parametrize("recipe", ["w4a4+g32+kv4", "w4a4+g32+ag32+amp"])
def test_linears_that_share_an_input_share_its_activation_quantizer_with_the_same_codes(recipe, monkeypatch):
    """q, k, v (and gate, up) get the same input: the learned step quantizes it once per layer call and, under bf16
    autocast, casts it once; the codes and the outputs are torch.equal to those of one quantizer per linear."""
    from sysq.quant import learn
    from sysq.quant.linear import QuantLinear

    model = tiny_model("llama", layers=2)
    calib = torch.randint(3, VOCAB, (6, 24), generator=torch.Generator().manual_seed(1))
    calls = []
    original = QuantLinear.quantize_input
    monkeypatch.setattr(QuantLinear, "quantize_input", lambda self, x: calls.append(self.name) or original(self, x))

    def run(share: bool):
        m = copy.deepcopy(model)
        if not share:
            monkeypatch.setattr(learn, "_same_input_quantizer", lambda a, b: False)
        calls.clear()
        quantize(m, {"base": recipe, "method": "learned", "learn_steps": 5}, calib, quiet=True)
        n = len(calls)
        monkeypatch.undo()
        monkeypatch.setattr(QuantLinear, "quantize_input", lambda self, x: calls.append(self.name) or original(self, x))
        codes = {ref.name: (ref.module.codes(), ref.module.w_scale, ref.module.w_zero)
                 for ref in get_adapter(m).linear_refs()}
        with torch.no_grad():
            return codes, m(calib[:2]).logits, n

    shared, logits, n_shared = run(True)
    alone, logits_alone, n_alone = run(False)
    assert all(torch.equal(x, y) for k in shared for x, y in zip(shared[k], alone[k]))
    assert torch.equal(logits, logits_alone)
    assert n_shared * 7 == n_alone * 4        # 4 quantizer calls per layer call instead of 7: q/k/v, o, gate/up, down


@pytest.mark.parametrize("base", ["w4a4", "w4a4+ag16", "w4a8"])
def test_the_learned_activation_clip_gets_lsqs_gradient(base):
    """_ActClip's term carries d xq / d c of LSQ: autograd through round_ste(clamp(x / s, qmin, qmax)) * s with
    s = c * max|x| / qmax (per token or per group), for a loss on the linear's output; and the value is xq's."""
    from sysq.quant.learn import _ActClip, _mode, _Learner
    from sysq.quant.linear import QuantLinear
    from sysq.quant.math import qrange, rows
    from sysq.quant.recipes import get_recipe

    torch.manual_seed(0)
    r = get_recipe(base)
    q = QuantLinear(torch.nn.Linear(64, 24), r.weight, r.act, "t", r.ragged)
    lrn = _Learner(q, 0.5)
    x = torch.randn(3, 10, 64) * torch.linspace(0.2, 3.0, 64)
    clip = _ActClip([q], 0.5)
    with torch.no_grad():
        clip.c.fill_(0.8)
    clip.sync()
    target = torch.randn(3, 10, 24)
    with torch.enable_grad(), _mode([lrn], "learned", {q: clip}):
        out = q(x)
        ((out - target) ** 2).sum().backward()
    got = clip.c.grad.clone()

    s = q.act_spec
    qmin, qmax = qrange(s.bits)
    c = torch.tensor(0.8, requires_grad=True)
    r = rows(x, s.granularity, q.act_group_size)
    scale = c * r.abs().amax(1, keepdim=True) / qmax
    t = torch.clamp(r / scale, qmin, qmax)
    xq = (t + (torch.round(t) - t).detach()) * scale
    w = lrn.weight(ste=False).detach()
    ref_out = torch.nn.functional.linear(xq.reshape(x.shape), w, q.bias)
    ((ref_out - target) ** 2).sum().backward()
    assert torch.allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    assert torch.allclose(got, c.grad, rtol=1e-4, atol=1e-4), (got, c.grad)
    assert float(got) != 0.0


def test_learned_activation_clip_ratios_are_stored_per_shared_input_and_saved(tmp_path):
    """+actclip: one ratio per input the layer quantizes (q/k/v, o, gate/up, down), in [clip_min, 1], moved from
    1 somewhere; the linears' activation specs carry them, and they come back from a saved folder."""
    import sysq

    model = tiny_model("llama", layers=2)
    calib = torch.randint(3, VOCAB, (6, 24), generator=torch.Generator().manual_seed(1))
    s = quantize(model, {"base": "w4a4+g32+actclip", **FEW, "method": "learned"}, calib, quiet=True)
    ratios = s.calibration["learned"]["act_clip_ratios"]
    assert [len(r) for r in ratios] == [4, 4]
    assert all(0.5 <= a <= 1.0 for r in ratios for a in r) and any(a < 1.0 for r in ratios for a in r)
    refs = {ref.role: ref.module for ref in get_adapter(model).linear_refs() if ref.layer == 1}
    got = [refs[k].act_spec.clip_ratio for k in ("q", "o", "gate", "down")]
    assert got == pytest.approx(ratios[1], abs=1e-4)
    assert refs["q"].act_spec.clip_ratio == refs["k"].act_spec.clip_ratio == refs["v"].act_spec.clip_ratio
    assert refs["gate"].act_spec.clip_ratio == refs["up"].act_spec.clip_ratio
    with torch.no_grad():
        before = model(calib[:2]).logits
    sysq.save(model, tmp_path / "m")
    again, _ = sysq.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(again(calib[:2]).logits, before)


def test_actclip_needs_a_dynamic_int_activation_quantizer():
    from sysq.errors import SysqError
    from sysq.quant.recipes import get_recipe

    with pytest.raises(SysqError, match=r"\+actclip"):
        get_recipe("w4a16+learned+actclip")
    with pytest.raises(SysqError, match=r"\+actclip"):
        get_recipe("w8a8-static+learned+actclip")
    assert get_recipe("w4a4+learned+actclip").learn_act_clip


def test_actclip_goes_with_learned_rounding_from_a_plan_and_says_so_without_it(caplog):
    """+actclip on a recipe an INT4 plan gives learned rounding keeps its flag; with RTN weights it warns."""
    from sysq.mitigate.api import mitigate, plan

    model = tiny_model("llama", layers=2)
    calib = torch.randint(3, VOCAB, (6, 24), generator=torch.Generator().manual_seed(1))
    r = mitigate(copy.deepcopy(model), plan(None, "w4a4+g32+actclip", "rotate+learned"), calib, quiet=True)
    assert r.method == "learned" and r.learn_act_clip
    with caplog.at_level("WARNING", logger="sysq.quant.api"):
        quantize(copy.deepcopy(model), "w4a4+g32+actclip", calib, quiet=True)
    assert "+actclip learns the activation clip ratios with learned rounding" in caplog.text


@pytest.mark.parametrize("base", ["w4a16-g32+fz", "w4a16-g32", "w4a8"])
def test_the_c_fake_quantizer_gives_the_torch_weights_and_rounding_gradients_bit_for_bit(base, monkeypatch):
    """sysq.quant.cpu_kernels (the CPU step's fake quantizer and SignSGD update in one C pass each): the same weights,
    the same gradient of V and the same update as the torch functions, to the bit; the clip factors' gradients (row
    sums in another order, with the chain rule's exact simplifications) agree to float rounding, and with the same
    sign wherever they are not rounding noise."""
    from sysq.quant import cpu_kernels
    from sysq.quant.api import prepare
    from sysq.quant.learn import _Learner
    from sysq.quant.linear import QuantLinear
    if cpu_kernels._library() is None:
        pytest.skip("no C compiler here: learn.py keeps its torch ops")
    model = tiny_model("llama", layers=1)
    prepare(model, {"base": base, "method": "learned"})
    g = torch.Generator().manual_seed(1)
    for q in [m for m in model.modules() if isinstance(m, QuantLinear)]:
        q.weight.data = torch.randn(q.weight.shape, generator=g) * torch.rand(q.weight.shape[1], generator=g) * 3
        c, t = _Learner(q, 0.5), _Learner(q, 0.5)
        x = torch.randn(7, q.weight.shape[1], generator=g)
        for step in range(8):
            with monkeypatch.context() as m:
                wc = c.weight()
                m.setattr(cpu_kernels, "applies", lambda *ts: False)
                wt = t.weight()
            assert torch.equal(wc, wt), (q, step)
            target = torch.randn(7, q.weight.shape[0], generator=g)
            for w in (wc, wt):
                (x @ w.T - target).pow(2).sum().backward()
            assert torch.equal(c.V.grad, t.V.grad), (q, step)
            for pc, pt in ((c.a, t.a), (c.b, t.b)):
                scale = pt.grad.abs().max()
                assert torch.allclose(pc.grad, pt.grad, rtol=1e-4, atol=1e-5 * float(scale)), (q, step)
                real = pt.grad.abs() > 1e-3 * scale
                assert torch.equal(pc.grad.sign()[real], pt.grad.sign()[real]), (q, step)
            c.a.grad, c.b.grad = t.a.grad.clone(), t.b.grad.clone()     # the same update from here, V's by the C pass
            c.step(0.2)
            with monkeypatch.context() as m:
                m.setattr(cpu_kernels, "applies", lambda *ts: False)
                t.step(0.2)
            assert all(torch.equal(pc, pt) for pc, pt in zip(c.params(), t.params())), (q, step)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "phi3", "qwen3"])
def test_the_cached_attention_gives_the_layers_output_bit_for_bit(family):
    """learn.py's second phase (LearnConfig.attn_steps) answers the attention from a cache of its outputs: the
    layer's output on any batch of cached windows is the one the layer computes, to the bit."""
    from sysq.quant.learn import _cached_attention
    model = tiny_model(family, layers=2)
    calib = torch.randint(1, VOCAB, (4, 24), generator=torch.Generator().manual_seed(0))
    inputs, kw = layer_inputs(model, calib)
    adapter = get_adapter(model)
    for i, layer in enumerate(adapter.layers()):
        def run(layer, x):
            return run_layer(layer, x, kw)
        with torch.no_grad():
            want = [run(layer, torch.cat([inputs[j] for j in idx])) for idx in ([2], [0, 3])]
            with _cached_attention(layer, adapter.attention(i), inputs, run) as use:
                got = []
                for idx in ([2], [0, 3]):
                    use(idx)
                    got.append(run(layer, torch.cat([inputs[j] for j in idx])))
            assert all(torch.equal(a, b) for a, b in zip(want, got)), (family, i)
            assert "forward" not in vars(adapter.attention(i))          # the module's own forward is back


def test_the_attention_steps_split_the_learned_step():
    """attn_steps: the attention's linears train in the first N steps only. N = steps is the plain step, bit for bit;
    N = 0 leaves the attention's linears at round-to-nearest while the MLP's learn; and each layer's calibration
    output error stays at most RTN's."""
    calib = torch.randint(1, VOCAB, (6, 32), generator=torch.Generator().manual_seed(0))
    base = tiny_model("llama", layers=2)
    recipe = {"base": "w4a16-g32+fz", "method": "learned", "learn_steps": 12}
    out = {}
    for attn in (None, 12, 0, 6):
        m = copy.deepcopy(base)
        s = quantize(m, {**recipe, "learn_attn_steps": attn}, calib, quiet=True)
        assert s.calibration["learned"]["attn_steps"] == attn
        out[attn] = m
    a, b = (get_adapter(out[k]).linear_refs() for k in (None, 12))
    assert all(torch.equal(x.module.codes(), y.module.codes()) for x, y in zip(a, b))
    rtn = copy.deepcopy(base)
    quantize(rtn, {**recipe, "method": "rtn"}, calib, quiet=True)
    for r0, rr in zip(get_adapter(out[0]).linear_refs(), get_adapter(rtn).linear_refs()):
        same = torch.equal(r0.module.codes(), rr.module.codes())
        assert same == (r0.role in ("q", "k", "v", "o")), r0.name    # the attention's: RTN's codes; the MLP's: learned
    for errs in (_rtn_twin(base, out[k], recipe, calib) for k in (0, 6)):
        assert all(e <= r for e, r in errs), errs


def test_learned_recipe_names_the_attention_steps():
    from sysq.errors import SysqError
    from sysq.quant import get_recipe
    r = get_recipe("w4a16-g64+fz+learned200x1a100")
    assert (r.learn_steps, r.learn_batch_size, r.learn_attn_steps) == (200, 1, 100)
    assert "(100 for the attention)" in r.describe()
    assert get_recipe("w4a16+learned50").learn_attn_steps is None
    with pytest.raises(SysqError, match=r"\+learnedNxBaA"):
        get_recipe("w4a16+learned200x1ab")
    with pytest.raises(SysqError, match="learn_attn_steps=300"):
        get_recipe({"base": "w4a16", "method": "learned", "learn_steps": 200, "learn_attn_steps": 300})
