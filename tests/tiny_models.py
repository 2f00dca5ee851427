"""Tiny random models of every supported family, built from a transformers config (no hub, < 1 s each)."""
import torch
from transformers import AutoConfig, AutoModelForCausalLM

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
}


def tiny_model(model_type: str, layers: int = 2, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    kw = dict(FAMILY_CONFIGS[model_type], **overrides)
    if model_type == "gpt2":
        kw.update(n_layer=layers, n_positions=256)
    else:
        kw.update(num_hidden_layers=layers, max_position_embeddings=256)
    cfg = AutoConfig.for_model(model_type, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0, **kw)
    return AutoModelForCausalLM.from_config(cfg).eval()
