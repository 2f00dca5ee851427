"""Disk offload (sysq/offload.py): a model whose decoder layers live in files gives what the in-memory sequential
path gives (detect report, mitigation, static scales, GPTQ / RTN codes, the saved folder), holding one layer."""
import copy

import pytest
import torch

import sysq
from sysq.detect import detect
from sysq.errors import SysqError
from sysq.offload import offload, offload_dir
from sysq.quant import quantize, save
from sysq.quant.api import quant_linears
from sysq.sequential import choose_pipeline, tensor_bytes
from test_detect import ids, planted
from test_sequential import _allocations, _report
from tiny_models import tiny_model

SEQ = dict(quiet=True, pipeline="sequential", device="cpu")


def _tokens(n=3, T=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, 300, (n, T), generator=g)
    x[:, 0] = 1
    return x


def _logits(model, x):
    with torch.no_grad():
        return model(x).logits


def test_offloaded_layers_are_file_views_and_the_path_is_sequential(tmp_path):
    model = tiny_model("llama", layers=2)
    x = _tokens()
    before = _logits(model, x)
    offload(model, tmp_path)
    w = model.model.layers[1].mlp.down_proj.weight
    assert w.untyped_storage().filename == str(tmp_path / "layer-00001.safetensors")
    assert model.model.embed_tokens.weight.untyped_storage().filename is None      # the rest stays in memory
    assert torch.equal(_logits(model, x), before)
    path = choose_pipeline(model, "auto", "cpu")
    assert path.sequential and str(tmp_path) in path.reason
    with pytest.raises(SysqError, match="pipeline='sequential'"):
        choose_pipeline(model, "memory", "cpu")


def test_offloaded_detect_gives_the_same_report(tmp_path):
    model, x = planted(), ids(n=6, T=24)
    kw = dict(attention_windows=2, batch_size=4)
    mem = detect(model, x, **SEQ, **kw)
    off = detect(offload(copy.deepcopy(model), tmp_path), x, quiet=True, device="cpu", **kw)
    assert off.cost["pipeline"] == "sequential" and off.lifecycle       # lifecycle reads down_proj weights
    assert _report(off) == _report(mem)


@pytest.mark.parametrize("recipe", ["w8a8-static", "w4a16+gptq", "w4a16"])
def test_offloaded_quantize_gives_the_same_codes(tmp_path, recipe):
    x = _tokens()
    mem, off = tiny_model("llama", layers=3), offload(tiny_model("llama", layers=3), tmp_path)
    for m in (mem, off):
        quantize(m, recipe, x, **SEQ)
    qm, qo = quant_linears(mem), quant_linears(off)
    assert qm and len(qm) == len(qo)
    for a, b in zip(qm, qo):
        assert b.qweight.untyped_storage().filename is not None         # the codes went back to the file
        assert torch.equal(a.qweight, b.qweight) and torch.equal(a.w_scale, b.w_scale)
        if "static" in recipe:
            assert torch.equal(a.act_scale, b.act_scale)
    assert torch.equal(_logits(mem, x), _logits(off, x))


def test_offloaded_mitigate_quantize_save_reloads_identically(tmp_path):
    """Rotation, smoothing, clipping, preserved tokens, static scales; the saved folders reload with equal logits."""
    from mitigate_tiny import tiny, tokens
    from sysq.mitigate.api import mitigate, plan
    model, calib = tiny("llama"), tokens(n=6, seqlen=16)
    report = detect(model, calib, quiet=True, snapshot=False)
    folders = {}
    for name in ("memory", "offload"):
        m = copy.deepcopy(model)
        if name == "offload":
            offload(m, tmp_path / "layers")
        p = plan(report, "w8a8-static", "rotate+smooth+clip+preserve-tokens")
        recipe = mitigate(m, p, calib, report=report, **SEQ)
        quantize(m, recipe, calib, **SEQ)
        folders[name] = save(m, tmp_path / name)
    assert offload_dir(m) is not None
    x = tokens(n=2, seqlen=12, seed=5)
    (a, _), (b, _) = (sysq.load(folders[n]) for n in ("memory", "offload"))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(_logits(a, x), _logits(b, x))


def test_load_with_offload_reads_one_layer_at_a_time(tmp_path, tiny_tokenizer):
    model = tiny_model("llama", layers=4, hidden_size=128, intermediate_size=256, head_dim=32)
    model.save_pretrained(tmp_path / "f")
    tiny_tokenizer.save_pretrained(tmp_path / "f")
    x = _tokens()
    ref, _ = sysq.load(tmp_path / "f")
    loaded = {}
    peak, _kept = _allocations(lambda: loaded.update(m=sysq.load(tmp_path / "f", offload=tmp_path / "layers")[0]))
    m = loaded["m"]
    assert offload_dir(m) == tmp_path / "layers"
    assert torch.equal(_logits(m, x), _logits(ref, x))
    # torch.profiler counts a file mapping as an allocation of the file's size (it holds no memory until read):
    # leave out the checkpoint's and the layer files' mappings; what remains is the embeddings, head and a layer
    mapped = sum(f.stat().st_size for f in [*(tmp_path / "f").glob("*.safetensors"), *(tmp_path / "layers").iterdir()])
    layer = tensor_bytes(ref.model.layers[0])
    assert peak - mapped < tensor_bytes(m, mapped=False) + 2 * layer < tensor_bytes(ref), (peak, mapped, layer)


@pytest.mark.long(22)
@pytest.mark.parametrize("step", ["static", "gptq"])
def test_offloaded_peak_host_memory_is_one_layer(tmp_path, step):
    """The host allocates one layer in flight (read from its file, written back, freed) plus the step's working
    state: 8 layers cost what 2 cost, and far less than the layers themselves."""
    x = _tokens(n=4, T=32)
    recipe = {"static": "w8a8-static", "gptq": "w4a16+gptq"}[step]

    def model(layers):
        return tiny_model("llama", layers=layers, hidden_size=128, intermediate_size=256, head_dim=32)

    quantize(model(1), recipe, x, **SEQ)                       # warm the caches
    peak = {}
    for layers in (2, 8):
        m = offload(model(layers), tmp_path / str(layers))
        peak[layers] = _allocations(lambda: quantize(m, recipe, x, **SEQ))[0]
    layer = tensor_bytes(model(1).model.layers[0])
    assert peak[8] <= peak[2] + layer / 2, (peak, layer)
    assert peak[8] < 3 * layer, (peak, layer)                  # the 8 layers are 8 x layer


def test_offload_refuses_what_needs_the_model_in_memory(tmp_path):
    from mitigate_tiny import tiny, tokens
    from sysq.mitigate.api import mitigate, plan
    model, calib = offload(tiny("llama"), tmp_path), tokens(n=4, seqlen=16)
    with pytest.raises(SysqError, match="auto-fast"):
        mitigate(model, plan(None, "w8a8-static", "auto"), calib, quiet=True, device="cpu")
    with pytest.raises(SysqError, match="backend 'fake'"):
        quantize(model, "w8a8-int", calib, quiet=True, device="cpu")
    acc = tiny_model("llama", layers=2)
    acc.hf_device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk"}
    with pytest.raises(SysqError, match="offload=DIR"):
        choose_pipeline(acc, "sequential", "cpu")
