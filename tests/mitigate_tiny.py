"""Tiny random models of several families for the mitigation tests (no hub, a second or less each)."""
import torch
from transformers import AutoConfig

from sysq.arch import model_class

COMMON = dict(vocab_size=96, num_hidden_layers=2, max_position_embeddings=64)
CONFIGS = {
    # hidden 48 = 12 * 4 (Paley 12), head_dim 12, intermediate 96 = 12 * 8: non-power-of-two everywhere
    "llama": dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                  tie_word_embeddings=True),
    "qwen2": dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                  tie_word_embeddings=False),
    "qwen3": dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=1, head_dim=16),
    "phi3": dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=4,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "opt": dict(hidden_size=48, ffn_dim=96, num_attention_heads=4, word_embed_proj_dim=48,
                do_layer_norm_before=True, pad_token_id=0),
    "gemma": dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=12),
    "mistral": dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=12),
    "gemma2": dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=12),
    "gemma3_text": dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=12),
    "gpt2": dict(n_embd=48, n_inner=96, n_head=4, n_positions=64),
    "bert": dict(hidden_size=48, intermediate_size=96, num_attention_heads=4),
    "roberta": dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, max_position_embeddings=70,
                    pad_token_id=1),
}
ALL = list(CONFIGS)


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    """A random model whose norms and biases are not the identity, so folds are really exercised."""
    torch.manual_seed(seed)
    kw = {**COMMON, **CONFIGS[family]}
    if family == "gpt2":
        kw["n_layer"] = kw.pop("num_hidden_layers")
        kw.pop("max_position_embeddings")
    cfg = AutoConfig.for_model(family, **kw)
    cfg._attn_implementation = "eager"
    model = model_class(cfg).from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(torch.rand_like(p) + 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
            elif p.dim() == 2:
                p.copy_(torch.randn_like(p) * 0.15)
    return model


def tokens(n: int = 4, seqlen: int = 24, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, COMMON["vocab_size"], (n, seqlen), generator=g)


@torch.no_grad()
def logits(model, ids) -> torch.Tensor:
    return model(input_ids=ids, use_cache=False).logits.double()


def rel_err(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()
