"""The device-resident capture and the layer-sequential pipeline give what the in-memory host path gives.

* detect: the device-resident Recorder against the host-only v1 Recorder (tests/capture_v1.py), and the
  sequential pipeline against the in-memory one: identical report.json, to the last digit.
"""
import importlib
import json

import pytest
import torch

from capture_v1 import V1Recorder
from sysq.detect import detect
from sysq.errors import SysqError
from sysq.sequential import choose
from test_detect import ids, planted


def _report(r) -> str:
    d = r.to_dict()
    d.pop("cost")
    return json.dumps(d)


def _detect_v1(monkeypatch, model, x, **kw):
    with monkeypatch.context() as m:
        m.setattr(importlib.import_module("sysq.detect"), "Recorder", V1Recorder)   # sysq.detect is also a function
        return detect(model, x, quiet=True, pipeline="memory", **kw)


@pytest.fixture(scope="module")
def planted_model():
    return planted()


def test_device_capture_equals_the_host_only_v1(monkeypatch, planted_model):
    x = ids(n=6, T=24)
    for kw in ({}, {"attention_windows": 2, "batch_size": 4}):
        new = detect(planted_model, x, quiet=True, pipeline="memory", **kw)
        old = _detect_v1(monkeypatch, planted_model, x, **kw)
        assert new.lifecycle and new.attention["layers"]          # the comparison covers every part
        assert _report(new) == _report(old)


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
    assert choose(model, "auto", "cpu").kind == "memory"
    assert choose(model, "sequential", "cpu").sequential
    with pytest.raises(SysqError, match="unknown pipeline"):
        choose(model, "layerwise")
    model.hf_device_map = {"model.embed_tokens": "cpu", "model.layers.0": 0}
    with pytest.raises(SysqError, match="accelerate"):
        choose(model, "sequential", "cpu")
