"""sysq.attention: the decode kernel and the `sysq_decode` attention implementation, run in Triton's CPU
interpreter in a subprocess (tests/attention_cases.py: the interpreter has to be on before triton is imported,
which must not leak into the other tests)."""
import pytest
import torch

from sysq import attention
from sysq.errors import UnsupportedArchitecture
from interpreter import run_cases
from tiny_models import tiny_model


def test_decode_attention_in_the_triton_interpreter():
    run_cases("attention_cases.py")


def test_without_the_kernel_every_call_is_sdpa(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not attention.available("cpu")
    model = tiny_model("llama", layers=2)
    ids = torch.randint(3, 300, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        attention.enable(model)
        assert model.config._attn_implementation == "sysq_decode"
        assert torch.equal(model(input_ids=ids).logits, ref)


def test_splits_only_long_caches():
    assert attention.splits(1, 8, 107) == 1                 # the bench's cache: one kernel, no combine
    assert attention.splits(1, 8, 4096) == 8
    assert attention.splits(1, 8, 1 << 20) == 32            # capped


def test_encoders_are_refused():
    with pytest.raises(UnsupportedArchitecture, match="not a decoder"):
        attention.enable(tiny_model("bert", layers=1))
