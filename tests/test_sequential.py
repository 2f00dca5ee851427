"""The device-resident capture and the layer-sequential pipeline give what the in-memory host path gives.

* detect: the device-resident Recorder against the host-only v1 Recorder (tests/capture_v1.py), and the
  sequential pipeline against the in-memory one: identical report.json, to the last digit;
* quantize: static scales, GPTQ and RTN codes identical; mitigate: alphas, clip ratios, channels, weights identical;
* memory: the sequential path's working memory does not grow with depth (2 vs 8 layers).
"""
import contextlib
import importlib
import json

import pytest
import torch

from capture_v1 import V1Recorder
from sysq import capture
from sysq.capture import MAX_TRACKED
from sysq.detect import detect
from sysq.errors import SysqError
from sysq.sequential import choose_pipeline
from test_detect import ids, planted


def _report(r) -> str:
    d = r.to_dict()
    d.pop("cost")
    return json.dumps(d)


def _detect_v1(monkeypatch, model, x, **kw):
    with monkeypatch.context() as m:
        m.setattr(importlib.import_module("sysq.detect"), "Recorder", V1Recorder)   # sysq.detect is also a function
        return detect(model, x, quiet=True, pipeline="memory", **kw)


def test_round5_is_pythons_formatting():
    """The report's per-channel lists: vectorized rounding gives exactly float(f"{v:.5g}"), midpoints included, also
    split as detect runs it (the device part without a read, the few leftovers formatted on the host)."""
    from sysq.detect.activation import exact5, round5, round5_parts
    g = torch.Generator().manual_seed(0)
    values = [torch.rand(20000, generator=g, dtype=torch.float64) * 10.0 ** e for e in range(-12, 14, 3)]
    values += [(torch.rand(20000, generator=g) * 10.0 ** e) for e in range(-9, 9, 3)]
    values.append(torch.randint(0, 2**20, (20000,), generator=g).double() / 2.0 ** torch.randint(0, 30, (20000,),
                                                                                                  generator=g))
    # bf16 and float32 activations: exact when scaled, on midpoints often (4 <= v < 8 on a 1/32 grid, say)
    values += [(torch.randn(20000, generator=g) * 10.0 ** e).to(dt).double() for e in range(-4, 7, 2)
               for dt in (torch.bfloat16, torch.float32)]
    values.append(torch.tensor([12345.5, 99999.5, 9999.95, 1e4, 1e5, 0.0, -0.0, 1e-20, 1e20, 1234.55, -2.5,
                                float("inf"), float("nan"), 4.03125, 99999.5 / 2**10, 1.0, 5e-5, 65536.0 * 3],
                               dtype=torch.float64))
    for v in values:
        got, want = round5(v).tolist(), [float(f"{x:.5g}") for x in v.tolist()]
        assert json.dumps(got) == json.dumps(want)
        # detect's form: the device part, then the values it leaves (zeros, inf, NaN, midpoints) formatted on the host
        assert json.dumps(exact5(*(t.numpy() for t in round5_parts(v))).tolist()) == json.dumps(want)
    assert not round5_parts(values[-1])[1].all()               # the host part had work to do


@pytest.fixture(scope="module")
def planted_model():
    return planted()


@pytest.mark.parametrize("dense,deferred", [(False, False), (True, False), (True, True)])
def test_device_capture_equals_the_host_only_v1(monkeypatch, planted_model, dense, deferred):
    """dense=True runs the accelerator's whole-tensor kernels (here on the CPU), False the CPU's sparse forms;
    deferred: the host work waits for the flush and its one copy, as it does for tensors on a GPU."""
    from sysq.capture import Pending, Recorder
    x, kw = ids(n=6, T=24), {"attention_windows": 2, "batch_size": 4}    # batches with and without attention
    old = _detect_v1(monkeypatch, planted_model, x, **kw)
    monkeypatch.setattr(Recorder, "dense", dense)
    if deferred:
        monkeypatch.setattr(Pending, "defer", True)
    new = detect(planted_model, x, quiet=True, pipeline="memory", **kw)
    assert new.lifecycle and new.attention["layers"]          # the comparison covers every part
    assert _report(new) == _report(old)


@pytest.mark.parametrize("chunk_bytes,layers", [(1, 1), ("two", 2), (2**40, None)])
def test_chunked_reductions_equal_per_layer(monkeypatch, planted_model, chunk_bytes, layers):
    """The accelerator's forms keep a batch's activations for a chunk of layers (capture.CHUNK_BYTES) and reduce
    them stacked across the layers: one chunk per layer (the per-layer reductions), two layers, all of them, in
    memory and layer by layer, all give the CPU form's report to the last digit."""
    from sysq import capture
    depth = planted_model.config.num_hidden_layers
    x, kw = ids(n=6, T=24), {"attention_windows": 2, "batch_size": 4}
    if chunk_bytes == "two":               # batches alike, a budget reached at the second layer: chunks of two
        x, kw = ids(n=4, T=24), {"attention_windows": 4, "batch_size": 2}
    sparse = detect(planted_model, x, quiet=True, pipeline="memory", **kw)
    _as_on_a_gpu(monkeypatch)
    if chunk_bytes == "two":
        chunk_bytes = detect(planted_model, x, quiet=True, pipeline="memory", **kw).cost["chunk_bytes"] / depth * 1.5
    monkeypatch.setattr(capture, "CHUNK_BYTES", chunk_bytes)
    dense = detect(planted_model, x, quiet=True, pipeline="memory", **kw)
    assert dense.cost["chunk_layers"] == (layers or depth)
    assert _report(dense) == _report(sparse)
    seq = detect(planted_model, x, quiet=True, pipeline="sequential", device="cpu", **kw)
    assert seq.cost["chunk_layers"] == 1 and _report(seq) == _report(sparse)


@pytest.mark.parametrize("model_type", ["gpt2", "opt", "phi3", "gemma2", "qwen3"])
def test_chunked_reductions_every_family(monkeypatch, model_type):
    """The accelerator's forms on each family's layout (positional layer arguments, flattened tokens, fused
    projections, sandwich norms, q/k norms): the tensors kept for a chunk are not changed in place before it is
    reduced (checked by their version counters), and the report is the CPU form's."""
    from tiny_models import tiny_model
    model = tiny_model(model_type, layers=3)
    x = torch.randint(3, 300, (3, 12))
    x[:, 0] = 1
    sparse = detect(model, x, quiet=True, pipeline="memory", batch_size=2, attention_windows=2)
    _as_on_a_gpu(monkeypatch)
    dense = detect(model, x, quiet=True, pipeline="memory", batch_size=2, attention_windows=2)
    assert dense.cost["chunk_layers"] == 3 and _report(dense) == _report(sparse)


def _as_on_a_gpu(monkeypatch):
    """The accelerator's hook forms on the CPU: whole-tensor kernels, host work deferred to the flush."""
    from sysq.capture import Pending, Recorder
    monkeypatch.setattr(Recorder, "dense", True)
    monkeypatch.setattr(Pending, "defer", True)


HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu", "numpy")


def test_hooks_never_wait_for_the_device(monkeypatch, planted_model):
    """Inside every capture hook (dense form), any read of a tensor's value on the host (item, tolist, bool(),
    int(), nonzero, boolean-mask indexing, cpu()) raises: on a GPU each would stall the forward. (The layers'
    host-share hooks, Recorder._host_handles, make the previous batch's records from its host copy: not guarded.)
    The report still equals the CPU form's, with more hits per layer than the lifecycle keeps (the fixed-size
    selection), and the records of every batch but the last are made during the next batch's forward."""
    from sysq.capture import Recorder
    x, kw = ids(n=6, T=24), {"attention_windows": 2, "batch_size": 4, "thresholds": {"massive_abs": 0.1}}
    sparse = detect(planted_model, x, quiet=True, **kw)
    _as_on_a_gpu(monkeypatch)
    guard = {"on": False, "calls": 0}

    def forbidden(name, fn):
        def wrapped(self, *a, **k):
            if guard["on"]:
                raise AssertionError(f"Tensor.{name} inside a capture hook")
            return fn(self, *a, **k)
        return wrapped

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, forbidden(name, getattr(torch.Tensor, name)))
    getitem = torch.Tensor.__getitem__

    def no_mask(self, idx):
        if guard["on"] and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                               for i in (idx if isinstance(idx, tuple) else (idx,))):
            raise AssertionError("boolean-mask indexing inside a capture hook")
        return getitem(self, idx)
    monkeypatch.setattr(torch.Tensor, "__getitem__", no_mask)
    monkeypatch.setattr(torch, "nonzero", forbidden("torch.nonzero", torch.nonzero))

    def guarded(fn):
        def hook(*a, **k):
            guard["on"], guard["calls"] = True, guard["calls"] + 1
            try:
                return fn(*a, **k)
            finally:
                guard["on"] = False
        return hook

    attach = Recorder.attach

    def attach_guarded(self, layers=None):
        attach(self, layers)
        for h in self._handles:
            hooks = h.hooks_dict_ref()
            hooks[h.id] = guarded(hooks[h.id])
        return self
    monkeypatch.setattr(Recorder, "attach", attach_guarded)
    counts, select = [], Recorder._select_hits

    def spy(count, *rest):
        counts.append(int(count))
        return select(count, *rest)
    monkeypatch.setattr(Recorder, "_select_hits", staticmethod(spy))
    in_forward = []
    step = Recorder._step_backlog

    def spy_step(self, n=None):
        if self._backlog is not None and n is not None and n > 0:
            in_forward.append(n)
        return step(self, n)
    monkeypatch.setattr(Recorder, "_step_backlog", spy_step)
    dense = detect(planted_model, x, quiet=True, **kw)
    assert guard["calls"] > 0 and in_forward
    assert max(counts) > MAX_TRACKED and min(counts) <= MAX_TRACKED    # both branches of the selection
    assert _report(dense) == _report(sparse)


def test_sequential_detect_equals_in_memory(planted_model):
    x = ids(n=6, T=24)
    kw = dict(attention_windows=2, batch_size=4)
    mem = detect(planted_model, x, quiet=True, pipeline="memory", **kw)
    seq = detect(planted_model, x, quiet=True, pipeline="sequential", device="cpu", **kw)
    assert seq.cost["pipeline"] == "sequential" and mem.cost["pipeline"] == "memory"
    assert _report(seq) == _report(mem)
    assert seq.arrays["snapshot"][0] == mem.arrays["snapshot"][0]
    assert torch.equal(seq.arrays["snapshot"][1], mem.arrays["snapshot"][1])


@pytest.mark.parametrize("model_type", ["gpt2", "opt", "phi3", "gemma2"])
def test_sequential_detect_every_family(model_type):
    """Positional layer arguments (GPT-2), flattened tokens (OPT), fused projections, sandwich norms."""
    from tiny_models import tiny_model
    model = tiny_model(model_type, layers=2)
    x = torch.randint(3, 300, (3, 12))
    x[:, 0] = 1
    mem = detect(model, x, quiet=True, pipeline="memory", batch_size=2)
    seq = detect(model, x, quiet=True, pipeline="sequential", device="cpu", batch_size=2)
    assert _report(seq) == _report(mem)


def test_choose_path():
    model = planted()
    assert choose_pipeline(model, "auto", "cpu").kind == "memory"
    assert choose_pipeline(model, "sequential", "cpu").sequential
    with pytest.raises(SysqError, match="unknown pipeline"):
        choose_pipeline(model, "layerwise")
    model.hf_device_map = {"model.embed_tokens": "cpu", "model.layers.0": 0}
    with pytest.raises(SysqError, match="accelerate"):
        choose_pipeline(model, "sequential", "cpu")


# ---- the quant engine: static scales and GPTQ, layer by layer ----------------------------------------------
def _quantized(model_type: str, recipe: str, pipeline: str, x):
    from sysq.quant import quantize
    from tiny_models import tiny_model
    model = tiny_model(model_type, layers=3)
    quantize(model, recipe, x, quiet=True, pipeline=pipeline, device="cpu")
    return model


@pytest.mark.parametrize("model_type,recipe", [("llama", "w8a8-static"), ("llama", "w4a16+gptq"),
                                               ("qwen2", "w8a8-static+gptq"), ("gpt2", "w4a8+gptq"),
                                               ("opt", "w4a16")])
def test_sequential_quantize_equals_in_memory(model_type, recipe):
    """Static activation scales (from the float model), GPTQ codes (from the quantized prefix), RTN codes."""
    from sysq.quant.api import quant_linears
    x = torch.randint(3, 300, (3, 16))
    x[:, 0] = 1
    mem, seq = (_quantized(model_type, recipe, p, x) for p in ("memory", "sequential"))
    qm, qs = quant_linears(mem), quant_linears(seq)
    assert qm and len(qm) == len(qs)
    for a, b in zip(qm, qs):
        assert a.name == b.name and a.quantized and b.weight is None
        assert torch.equal(a.qweight, b.qweight) and torch.equal(a.w_scale, b.w_scale)
        if "static" in recipe:
            assert a.act_scale is not None and torch.equal(a.act_scale, b.act_scale)
    with torch.no_grad():
        assert torch.equal(mem(x).logits, seq(x).logits)


def test_sequential_gptq_is_not_rtn():
    """The GPTQ step really ran: its codes differ from round-to-nearest on the same weights."""
    from sysq.quant.api import quant_linears
    x = torch.randint(3, 300, (3, 16))
    gptq, rtn = _quantized("llama", "w4a16+gptq", "sequential", x), _quantized("llama", "w4a16", "sequential", x)
    assert any(not torch.equal(a.qweight, b.qweight) for a, b in zip(quant_linears(gptq), quant_linears(rtn)))


# ---- mitigation: rotation, smoothing and clipping searches, layer by layer --------------------------------
@pytest.mark.parametrize("family,recipe,method,with_report", [
    ("llama", "w8a8-static", "rotate+smooth+clip+preserve-tokens", True),
    ("qwen3", "w4a16+gptq", "auto-fast", True),     # (plain w4a16's auto is learned rounding alone)
    ("opt", "w8a8-static", "rotate+smooth+clip", False),      # LayerNorm: writers centered, mean-preserving Q
    ("phi3", "w4a8", "smooth+clip+preserve-channels", False),
    ("opt", "w8a8-static", "smooth+clip", False),
    ("qwen2", "w8a8-static", "smooth+token-scales", True),
])
def test_sequential_mitigate_equals_in_memory(family, recipe, method, with_report):
    """Same alphas, clip ratios, preserved channels and weights as the in-memory path, to the last bit."""
    import copy
    from mitigate_tiny import logits, tiny, tokens
    from sysq.mitigate.api import mitigate, plan
    model, calib = tiny(family), tokens(n=6, seqlen=16)
    report = detect(model, calib, quiet=True, snapshot=False) if with_report else None
    runs = {}
    for pipeline in ("memory", "sequential"):
        m, p = copy.deepcopy(model), plan(report, recipe, method)
        r = mitigate(m, p, calib, quiet=True, report=report, pipeline=pipeline, device="cpu")
        runs[pipeline] = (m, p, r)
    (mm, pm, rm), (ms, ps, rs) = runs["memory"], runs["sequential"]
    assert pm.smooth.chosen and pm.smooth.chosen == ps.smooth.chosen
    if pm.clip:
        assert pm.clip.chosen and pm.clip.chosen == ps.clip.chosen
    if pm.preserve_channels:
        assert pm.preserve_channels.channels == ps.preserve_channels.channels
    assert rm == rs
    sd_m, sd_s = mm.state_dict(), ms.state_dict()
    assert sd_m.keys() == sd_s.keys() and all(torch.equal(sd_m[k], sd_s[k]) for k in sd_m)
    x = tokens(n=2, seqlen=12, seed=5)
    assert torch.equal(logits(mm, x), logits(ms, x))


def test_sequential_refuses_measured_auto():
    """Measured auto copies the whole model per candidate: the sequential path names the fix instead."""
    from mitigate_tiny import tiny, tokens
    from sysq.mitigate.api import mitigate, plan
    model, calib = tiny("llama"), tokens(n=4, seqlen=16)
    with pytest.raises(SysqError, match="auto-fast"):
        mitigate(model, plan(None, "w8a8-static", "auto"), calib, quiet=True, pipeline="sequential", device="cpu")


# ---- memory: the sequential path holds one layer's working state, whatever the depth ------------------------
def _allocations(fn) -> tuple[int, int]:
    """(peak, still allocated at the end) of the CPU allocator's bytes allocated inside fn, from torch.profiler's
    memory events (blocks that existed before are not counted, nor are their frees). Each allocation or free counts
    at the start of the innermost op around it (at its own time when outside every op), as prof.events()' self
    memory does; read from the raw events, without building prof.events() (most of the time on a deep model)."""
    import itertools
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import _filter_name
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    raw = prof.profiler.kineto_results
    t0, cpu = raw.trace_start_ns(), DeviceType.CPU
    ops, mem = [], []
    for e in raw.events():
        name = e.name()
        if name == "[memory]":
            if e.device_type() in (cpu, DeviceType.MKLDNN, DeviceType.IDEEP):
                mem.append((e.start_ns(), e.nbytes()))
        elif e.device_type() == cpu and not _filter_name(name):
            ops.append([e.start_ns(), -e.end_ns(), 0])
    ops.sort(key=lambda o: (o[0], o[1]))
    mem.sort(key=lambda m: m[0])
    loose, stack, i = [], [], 0
    for t, nbytes in mem:
        while i < len(ops) and ops[i][0] <= t:          # open every op started by t, nested in what is still open
            while stack and -stack[-1][1] < ops[i][0]:
                stack.pop()
            stack.append(ops[i])
            i += 1
        while stack and -stack[-1][1] < t:
            stack.pop()
        if stack:
            stack[-1][2] += nbytes
        else:
            loose.append(((t - t0) / 1000, nbytes))
    events = sorted([((s - t0) / 1000, b) for s, _, b in ops] + loose)
    total = list(itertools.accumulate(m for _, m in events)) or [0]
    return max(total), total[-1]


@pytest.mark.parametrize("step", ["detect", "mitigate", "static", "gptq"])
def test_sequential_peak_memory_does_not_grow_with_depth(step):
    """Working memory (peak minus what the step keeps: codes, the plan) of 8 layers is that of 2 layers up to half
    of one layer's weights (detect's per-layer statistics): no layer's activations (about one layer's worth for
    six layers here), Hessians or caches pile up."""
    from sysq.mitigate.api import mitigate, plan
    from sysq.quant import quantize
    from sysq.sequential import tensor_bytes
    from tiny_models import tiny_model
    x = torch.randint(3, 300, (8, 64))
    x[:, 0] = 1
    seq = dict(quiet=True, pipeline="sequential", device="cpu")
    run = {"detect": lambda m: detect(m, x, **seq),
           "mitigate": lambda m: mitigate(m, plan(None, "w8a8-static", "rotate+smooth+clip"), x, **seq),
           "static": lambda m: quantize(m, "w8a8-static", x, **seq),
           "gptq": lambda m: quantize(m, "w4a16+gptq", x, **seq)}[step]
    # detect: wide enough that a layer's weights dwarf its statistics; the others keep no per-layer statistics
    # and run narrower (GPTQ loops over columns)
    width = {"detect": 256, "static": 128, "mitigate": 64, "gptq": 32}[step]

    def model(layers):
        return tiny_model("llama", layers=layers, hidden_size=width, intermediate_size=2 * width,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=width // 4)

    run(model(1))                                        # warm the caches (rotation matrices, kernels)
    work = {}
    for layers in (2, 8):
        # the least of two runs on fresh models: a one-off allocation (a lazily made buffer, ~100 KB once in CI)
        # is not growth with depth, which shows in every run
        work[layers] = min(peak - kept for peak, kept in
                           (_allocations(lambda m=model(layers): run(m)) for _ in range(2)))
    layer = tensor_bytes(model(1).model.layers[0])
    assert work[2] > 0
    assert work[8] <= work[2] + layer / 2, (work, layer)


# ---- a model placed by accelerate (device_map): hooks move the activations; results unchanged -----------------
def test_accelerate_dispatched_model_gives_the_same_results():
    """Every decoder layer behind its own accelerate hook (as on several GPUs, here all on the CPU): detect and
    GPTQ run unchanged and give what the plain model gives."""
    import copy
    from accelerate import dispatch_model
    from sysq.quant import quantize
    from sysq.quant.api import quant_linears
    from tiny_models import tiny_model
    plain = tiny_model("llama", layers=2)
    x = torch.randint(3, 300, (3, 16))
    x[:, 0] = 1
    names = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "model.rotary_emb", "lm_head"]
    split = dispatch_model(copy.deepcopy(plain), {n: "cpu" for n in names}, force_hooks=True)
    assert hasattr(split.model.layers[1], "_hf_hook")
    assert choose_pipeline(split, "auto", "cpu").kind == "memory"
    assert _report(detect(split, x, quiet=True, batch_size=2)) == _report(detect(plain, x, quiet=True, batch_size=2))
    for m in (plain, split):
        quantize(m, "w4a16+gptq", x, quiet=True)
    assert all(torch.equal(a.qweight, b.qweight) for a, b in zip(quant_linears(plain), quant_linears(split)))


def _value_reads(fn) -> int:
    """Reads of a tensor's value through torch while fn runs: aten::_local_scalar_dense (item, int(), float(),
    bool()) and aten::nonzero (a data-dependent shape). On a GPU each one of a device tensor is a wait."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.name in ("aten::_local_scalar_dense", "aten::nonzero") for e in prof.events())


@torch.no_grad()
def test_host_reads_do_not_grow_with_layers_or_batches(monkeypatch):
    """The accelerator's forms (here on the CPU): beyond what the model's own forward reads, detect reads no value
    through torch, whatever the number of layers and batches: the statistics reach the host in one copy per flush
    and the host reads those copies through numpy (the rounding's leftovers too: exact5)."""
    from test_detect import tiny
    from sysq.detect.attention import eager_attention
    _as_on_a_gpu(monkeypatch)
    extra = []
    for layers, n in ((2, 2), (4, 6)):
        model, x = tiny(layers=layers), ids(n=n, T=24)
        kw = {"attention_windows": 2, "batch_size": 2}
        detect(model, x[:1], quiet=True, **kw)                               # warm-up

        def plain():      # as detect runs it: without transformers' packed-sequence check (one read a batch)
            for s in range(0, n, 2):
                with eager_attention(model) if s < 2 else torch.no_grad(), capture._windows_unpacked():
                    model.model(input_ids=x[s:s + 2], use_cache=False)
        extra.append(_value_reads(lambda: detect(model, x, quiet=True, **kw)) - _value_reads(plain))
    assert extra == [0, 0], extra


@torch.no_grad()
def test_hook_ops_do_not_grow_with_layers(monkeypatch):
    """The accelerator's forms launch a fixed number of kernels per chunk of layers, not per layer: beyond the
    model's own forward, the aten ops of detect's batches (hooks, reductions, merge, the host copy; not the host
    records, made from host tensors) grow by at most 7 per decoder layer and batch (the W_down rows and the
    down_proj input, gate, up and mid-residual values at the lifecycle's hits: 5; on an attention batch the mass
    each key receives and the first window's map: 3), where they grew by ~90."""
    from torch.profiler import ProfilerActivity, profile, record_function
    from sysq.capture import Backlog, Recorder
    from sysq.detect.attention import eager_attention
    from test_detect import tiny
    _as_on_a_gpu(monkeypatch)
    for cls, name, label in ((Recorder, "run", "run"), (Backlog, "step", "records")):
        def labelled(self, *a, _fn=getattr(cls, name), _label=label, **k):
            with record_function(_label):
                return _fn(self, *a, **k)
        monkeypatch.setattr(cls, name, labelled)

    def ops(fn, label: str) -> int:
        """aten ops called from Python (none above them) inside `label`: about one kernel launch each on a GPU."""
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        n = 0
        for e in prof.events():
            p, top, inside = e.cpu_parent, e.name.startswith("aten::"), False
            while p is not None:
                top &= not p.name.startswith("aten::") and p.name != "records"
                inside |= p.name == label
                p = p.cpu_parent
            n += top and inside
        return n

    extra = {}
    for layers in (2, 6):
        model, x = tiny(layers=layers), ids(n=4, T=24)
        kw = {"attention_windows": 2, "batch_size": 2}
        detect(model, x[:1], quiet=True, **kw)                               # warm-up

        def plain():
            with record_function("plain"):
                for s in (0, 2):
                    with eager_attention(model) if s < 2 else contextlib.nullcontext():
                        model.model(input_ids=x[s:s + 2], use_cache=False)
        extra[layers] = ops(lambda: detect(model, x, quiet=True, **kw), "run") - ops(plain, "plain")
    assert 0 < extra[2] and (extra[6] - extra[2]) / 4 <= 2 * 7, extra     # two batches


@pytest.mark.parametrize("floor", [0.5, 5.5, 8.5])
def test_top_positions_ties_and_counts(floor):
    """The lifecycle's candidates (dense form): with many ties (integer scores), fewer or more hits than MAX_TRACKED,
    the hits first, by score then first position, as sorting every position gives; chosen among the best tokens'
    rows only."""
    from sysq.capture import Recorder
    from sysq.detect.thresholds import Thresholds
    from test_detect import tiny
    rec = Recorder(tiny(layers=1), Thresholds.from_dict({"massive_abs": floor}))
    g = torch.Generator().manual_seed(0)
    score = torch.randint(0, 10, (3, 40, 16), generator=g).float() * (torch.rand(3, 40, 1, generator=g) < 0.3)
    # the score is max(|h_in|, |h_out|): here from either one, with either sign
    sign = torch.where(torch.rand(2, 3, 40, 16, generator=g) < 0.5, -1.0, 1.0)
    first = torch.rand(3, 40, 16, generator=g) < 0.5
    h_in = (torch.where(first, score, score * 0.25) * sign[0]).to(torch.bfloat16)
    h_out = (torch.where(first, score * 0.25, score) * sign[1]).to(torch.bfloat16)
    tok = torch.maximum(h_in.abs(), h_out.abs()).amax(-1)
    count, flat, v_in, v_out = rec._top_positions(h_in, h_out, tok, MAX_TRACKED)
    for layer in range(3):
        s = score[layer].flatten()
        hits = sorted((-v, j) for j, v in enumerate(s.tolist()) if v > floor)
        assert int(count[layer]) == min(len(hits), MAX_TRACKED + 1)     # the host needs only whether more than k
        assert torch.equal(v_in[layer], h_in[layer].flatten()[flat[layer]])
        assert torch.equal(v_out[layer], h_out[layer].flatten()[flat[layer]])
        got = flat[layer].tolist()
        if len(hits) > MAX_TRACKED:
            assert got == [j for _, j in hits[:MAX_TRACKED]]
        else:
            assert got[:len(hits)] == [j for _, j in hits]


def test_detect_forwards_skip_the_packed_sequence_check_and_restore_it():
    """Inside detect's forwards transformers' packed-sequence check (a device read per batch) answers "not packed"
    without reading; outside, the check is transformers' own again, also after an error."""
    from transformers import masking_utils as mu
    packed = torch.tensor([[0, 1, 2, 0, 1]])
    assert mu.find_packed_sequence_indices(packed) is not None
    with pytest.raises(RuntimeError):
        with capture._windows_unpacked():
            assert mu.find_packed_sequence_indices(packed) is None
            raise RuntimeError
    assert mu.find_packed_sequence_indices(packed).tolist() == [[0, 0, 0, 1, 1]]
