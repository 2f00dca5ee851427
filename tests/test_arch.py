"""Every adapter family on a tiny random model: layout, heads, smoothing mappings, clear errors."""
import pytest
import torch
from torch import nn

from sysq.arch import KNOWN_MODEL_TYPES, get_adapter
from sysq.errors import UnsupportedArchitecture
from tiny_models import FAMILY_CONFIGS, VOCAB, tiny_model

FAMILIES = list(FAMILY_CONFIGS)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_adapter_finds_layers_and_linears(model_type):
    model = tiny_model(model_type, layers=3)
    ad = get_adapter(model)
    assert ad.num_layers == 3
    hidden = ad.hidden_size
    for i in range(ad.num_layers):
        lin = ad.linears(i)
        assert all(isinstance(m, nn.Linear) for m in lin.values())
        # every attention/MLP input reads the residual stream; the output linears write back into it
        for _, m in ad.attn_inputs(i) + ad.mlp_inputs(i):
            assert m.in_features == hidden
        assert ad.output_linear(i, "attn").out_features == hidden
        assert ad.down(i).out_features == hidden
        assert ad.down(i).in_features == ad.mlp_inputs(i)[0][1].out_features // (2 if "gate_up" in lin else 1)
    refs = ad.linear_refs()
    assert len(refs) == 3 * len(ad.linears(0))
    named = dict(model.named_modules())
    assert all(named[r.name] is r.module for r in refs)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_heads_and_gqa(model_type):
    ad = get_adapter(tiny_model(model_type))
    assert ad.num_heads == 4
    lin = ad.linears(0)
    kv_out = lin["v"].out_features if "v" in lin else None
    if kv_out is not None:
        assert kv_out == ad.num_kv_heads * ad.head_dim
        assert lin["o"].in_features == ad.num_heads * ad.head_dim
        assert ad.kv_groups == ad.num_heads // ad.num_kv_heads


@pytest.mark.parametrize("model_type", FAMILIES)
def test_mappings_fold_exactly(model_type):
    """Scaling the targets' input columns by s and the source by 1/s must leave the logits unchanged."""
    model = tiny_model(model_type).double()
    ad = get_adapter(model)
    ids = torch.randint(3, VOCAB, (2, 16))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        for m in ad.mappings(0) + ad.mappings(1):
            if m.source_kind == "norm":
                s = torch.rand(m.targets[0].in_features, dtype=torch.float64) + 0.5
                ad.set_norm_weight(m.source, ad.norm_weight(m.source) / s)
                if getattr(m.source, "bias", None) is not None:
                    m.source.bias.div_(s)
                full = s
            else:
                rows = m.source_rows or slice(None)
                s = torch.rand(m.source.weight[rows].shape[0], dtype=torch.float64) + 0.5
                m.source.weight[rows].div_(s[:, None])
                if m.source.bias is not None:
                    m.source.bias[rows].div_(s)
                # under GQA one v row feeds `groups` query heads, i.e. `groups` columns of o
                full = s.view(-1, 1, ad.head_dim).expand(-1, m.groups, -1).reshape(-1) if m.groups > 1 else s
            for t in m.targets:
                t.weight.mul_(full)
        out = model(input_ids=ids).logits
    # Gemma norms compute in float32 internally, so allow float32 rounding
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    names = [m.name for m in ad.mappings(0)]
    if ad.post_ln:        # BERT: a norm's output is the residual itself, so only v->o folds exactly
        assert names == ["layers.0.v->o"]
    else:
        assert names[0].startswith("layers.0.attn_norm->") and names[1].startswith("layers.0.mlp_norm->")


def test_gpt2_conv1d_becomes_linear_without_changing_logits():
    from transformers import AutoModelForCausalLM
    model = tiny_model("gpt2")
    ids = torch.randint(3, VOCAB, (1, 12))
    ref_model = AutoModelForCausalLM.from_config(model.config).eval()
    ref_model.load_state_dict(model.state_dict())
    get_adapter(model)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, ref_model(input_ids=ids).logits, atol=1e-5)


def test_rotations_say_which_parts_keep_the_function():
    for family in ("llama", "opt", "gpt2", "phi3"):
        assert get_adapter(tiny_model(family)).rotations() == {"residual": None, "heads": None, "down": None}
    caps = get_adapter(tiny_model("gemma2")).rotations()
    assert "post_feedforward_layernorm" in caps["residual"] and caps["heads"] is None and caps["down"] is None
    assert not get_adapter(tiny_model("gemma2")).rotatable
    assert "post-LN" in get_adapter(tiny_model("bert")).rotations()["residual"]
    assert "project_in" in get_adapter(tiny_model("opt", word_embed_proj_dim=32)).rotations()["residual"]


def test_unknown_architecture_lists_known_ones():
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.for_model("bloom", vocab_size=VOCAB, hidden_size=32, n_layer=1, n_head=2)
    with pytest.raises(UnsupportedArchitecture) as e:
        get_adapter(AutoModelForCausalLM.from_config(cfg))
    assert "'bloom'" in str(e.value)
    assert all(t in str(e.value) for t in KNOWN_MODEL_TYPES)
