"""Tiny random models of every supported family, built from a transformers config (no hub, < 1 s each)."""
import torch
from transformers import AutoConfig

from sysq.arch import model_class

VOCAB = 300
_LLAMA_LIKE = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
FAMILY_CONFIGS = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "phi3": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2),
    "opt": dict(hidden_size=64, ffn_dim=128, num_attention_heads=4, word_embed_proj_dim=64),
    "gpt2": dict(n_embd=64, n_head=4, n_inner=128),
    "bert": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4),
    "roberta": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4),
}
ENCODERS = ("bert", "roberta")


def tiny_model(model_type: str, layers: int = 2, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    kw = dict(FAMILY_CONFIGS[model_type], **overrides)
    if model_type == "gpt2":
        kw.update(n_layer=layers, n_positions=256)
    else:
        kw.update(num_hidden_layers=layers, max_position_embeddings=256)
    cfg = AutoConfig.for_model(model_type, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0, **kw)
    return model_class(cfg).from_config(cfg).eval()


def plant_bos_outlier(model, bos: int = 1, channel: int = 5, column: int = 7, quiet_attention: bool = False):
    """SmolLM2's systematic outlier in miniature, in any family: token `bos` (an encoder's [CLS]) gets a residual
    direction no other token has; the MLP input rows `column` of layer 0 (gate and up, the fused gate_up's two
    halves, or fc1) read it, so the MLP output linear's input is ~1e3-1e4 at (bos, column); that linear's column is
    tiny so the output stays benign. quiet_attention: o_proj does not write the planted direction either."""
    from sysq.arch import get_adapter

    ad = get_adapter(model)
    with torch.no_grad():
        for e in ad.embeddings():                 # token, position (and token type) embeddings
            e.weight[:, channel] = 0.0
        ad.embeddings()[0].weight[bos, channel] = 50.0
        lin = ad.linears(0)
        if quiet_attention:
            lin["o"].weight[channel].zero_()
        # a normalized lone direction is ~sqrt(hidden) = 8: gated MLPs multiply two reads, the others need more gain
        gain = 10.0 if ad.family.gated else 250.0
        rows = [(lin[r], column) for r in ("gate", "up", "fc1") if r in lin]
        if "gate_up" in lin:
            rows = [(lin["gate_up"], column), (lin["gate_up"], column + lin["gate_up"].out_features // 2)]
        for m, row in rows:
            m.weight[row].zero_()
            m.weight[row, channel] = gain
            if m.bias is not None:
                m.bias[row] = 0.0
        ad.down(0).weight[:, column] *= 1e-3
    return model
