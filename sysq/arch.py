"""Architecture adapters: the one place that knows how each model family is laid out.

Every other module asks an :class:`Adapter` for decoder layers, norms, the attention and MLP
linears (by *role*: q, k, v, o, qkv, gate, up, gate_up, down, fc1, fc2) and the smoothing
mappings ("this norm feeds these linears"), in the spirit of llm-compressor's mappings.
A new family is one :class:`Family` entry in ``FAMILIES``.

Roles are stable names the rest of sysq uses:
  attention inputs   q k v (or fused qkv)        attention output  o
  MLP inputs         gate up (or fused gate_up, or fc1)   MLP output  down (or fc2)

Norm layouts (what decides which transforms keep the function, see ``Adapter.rotations``):
  pre-norm RMSNorm (Llama, Qwen, Gemma, Phi-3), pre-norm LayerNorm with mean subtraction and bias (OPT, GPT-2),
  pre-norm plus sandwich post-norms (Gemma 2/3), post-LN encoders (BERT, RoBERTa: the norm follows the residual
  add, so the residual stream is a norm output).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import UnsupportedArchitecture


@dataclass(frozen=True)
class Family:
    """Attribute paths of one model family (dotted, relative to the model or to one layer)."""

    name: str
    model_types: tuple[str, ...]
    layers: str                          # ModuleList of decoder layers
    embeddings: tuple[str, ...]          # token (and position) embeddings
    final_norm: str
    attn: str                            # attention module inside a layer
    attn_linears: dict                   # role -> path inside the layer
    mlp_linears: dict                    # role -> path inside the layer
    attn_norm: str                       # norm that feeds the attention inputs
    mlp_norm: str                        # norm that feeds the MLP inputs
    act: str                             # MLP activation module inside a layer
    gated: bool = True                   # down input = act(gate) * up
    norm_offset: float = 0.0             # Gemma norms compute x * (offset + weight)
    post_norms: tuple[str, ...] = ()     # norms after a sub-block, before the residual add (Gemma2/3)
    qk_norm: bool = False                # per-head RMSNorm on q and k (Qwen3, Gemma3)
    act_positive_homogeneous: bool = False  # act(x/s) = act(x)/s for s > 0 (ReLU): fc1 -> fc2 scaling is exact
    lm_head: str = "lm_head"
    norm: str = "rms"                    # "rms" (x / rms(x) * w) | "layernorm" (mean subtraction, weight and bias)
    post_ln: bool = False                # norms after the residual add (BERT): `attn_norm` names the previous
                                         # layer's output norm, `embed_norm` the one before layer 0
    embed_norm: str | None = None
    residual_extras: tuple[str, ...] = ()   # optional linears on the residual path (OPT's project_in): when
                                            # present, the residual rotation would have to pass through them
    task: str = "causal-lm"              # "causal-lm" (next token) | "masked-lm" (encoders)
    positions_after_pad: bool = False    # position ids start at pad_token_id + 1 (RoBERTa)


_LLAMA_ATTN = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"}
_LLAMA_MLP = {"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def _llama_like(name: str, model_types: tuple[str, ...], **kw) -> Family:
    base = dict(
        name=name, model_types=model_types, layers="model.layers", embeddings=("model.embed_tokens",),
        final_norm="model.norm", attn="self_attn", attn_linears=_LLAMA_ATTN, mlp_linears=_LLAMA_MLP,
        attn_norm="input_layernorm", mlp_norm="post_attention_layernorm", act="mlp.act_fn",
    )
    base.update(kw)
    return Family(**base)


def _bert_like(name: str, prefix: str, head: str) -> Family:
    """Post-LN encoders: LayerNorm(x + attention(x)), then LayerNorm(h + MLP(h)); a masked-LM head."""
    return Family(
        name=name, model_types=(name,), layers=f"{prefix}.encoder.layer",
        embeddings=tuple(f"{prefix}.embeddings.{e}_embeddings" for e in ("word", "position", "token_type")),
        final_norm=f"{head}.{'transform.LayerNorm' if name == 'bert' else 'layer_norm'}", attn="attention.self",
        attn_linears={"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                      "o": "attention.output.dense"},
        mlp_linears={"fc1": "intermediate.dense", "fc2": "output.dense"},
        attn_norm="output.LayerNorm", mlp_norm="attention.output.LayerNorm", act="intermediate.intermediate_act_fn",
        gated=False, lm_head=f"{head}.decoder", norm="layernorm", post_ln=True,
        embed_norm=f"{prefix}.embeddings.LayerNorm", task="masked-lm", positions_after_pad=name == "roberta",
    )


FAMILIES: tuple[Family, ...] = (
    _llama_like("llama", ("llama",)),
    _llama_like("mistral", ("mistral",)),
    _llama_like("qwen2", ("qwen2",)),
    _llama_like("qwen3", ("qwen3",), qk_norm=True),
    _llama_like("gemma", ("gemma",), norm_offset=1.0),
    _llama_like("gemma2", ("gemma2",), norm_offset=1.0, mlp_norm="pre_feedforward_layernorm",
                post_norms=("post_attention_layernorm", "post_feedforward_layernorm")),
    _llama_like("gemma3", ("gemma3_text", "gemma3"), norm_offset=1.0, mlp_norm="pre_feedforward_layernorm",
                post_norms=("post_attention_layernorm", "post_feedforward_layernorm"), qk_norm=True),
    _llama_like("phi3", ("phi3",), attn_linears={"qkv": "self_attn.qkv_proj", "o": "self_attn.o_proj"},
                mlp_linears={"gate_up": "mlp.gate_up_proj", "down": "mlp.down_proj"}, act="mlp.activation_fn"),
    Family(
        name="opt", model_types=("opt",), layers="model.decoder.layers",
        embeddings=("model.decoder.embed_tokens", "model.decoder.embed_positions"),
        final_norm="model.decoder.final_layer_norm", attn="self_attn",
        attn_linears={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                      "o": "self_attn.out_proj"},
        mlp_linears={"fc1": "fc1", "fc2": "fc2"}, attn_norm="self_attn_layer_norm", mlp_norm="final_layer_norm",
        act="activation_fn", gated=False, act_positive_homogeneous=True, norm="layernorm",
        residual_extras=("model.decoder.project_in", "model.decoder.project_out"),
    ),
    Family(
        name="gpt2", model_types=("gpt2",), layers="transformer.h", embeddings=("transformer.wte", "transformer.wpe"),
        final_norm="transformer.ln_f", attn="attn", attn_linears={"qkv": "attn.c_attn", "o": "attn.c_proj"},
        mlp_linears={"fc1": "mlp.c_fc", "fc2": "mlp.c_proj"}, attn_norm="ln_1", mlp_norm="ln_2", act="mlp.act",
        gated=False, norm="layernorm",
    ),
    *(_bert_like(name, prefix, head) for name, prefix, head in (
        ("bert", "bert", "cls.predictions"), ("roberta", "roberta", "lm_head"))),
)

KNOWN_MODEL_TYPES: tuple[str, ...] = tuple(t for f in FAMILIES for t in f.model_types)
OUTPUT_ROLES = ("o", "down", "fc2")   # linears that write into the residual stream


@dataclass
class Mapping:
    """`source` feeds every linear in `targets`: a per-channel scale s can move from the targets'
    input columns into the source (norm weight, or the source linear's output rows `source_rows`)."""

    name: str                    # e.g. "layers.3.attn_norm->q,k,v"
    layer: int
    source: nn.Module
    source_kind: str             # "norm" | "linear"
    targets: list[nn.Linear]
    target_roles: list[str]
    source_rows: slice | None = None   # rows of a fused source linear that feed the targets (gate_up -> down)
    groups: int = 1              # v -> o under GQA: each v row feeds `groups` o columns


@dataclass
class LinearRef:
    """One linear of one layer, with its role and its dotted name in the model."""

    layer: int
    role: str
    name: str
    module: nn.Linear
    parent: nn.Module = field(repr=False)
    attr: str = ""

    def replace(self, new: nn.Module) -> None:
        old = self.module
        setattr(self.parent, self.attr, new)
        self.module = new
        # Input transforms that belong to the position, not the module (rotate's online Hadamard on
        # down_proj's input), move to the replacement so quantizing after mitigating keeps them.
        for hook in list(getattr(old, "_forward_pre_hooks", {}).values()):
            if getattr(hook, "carry_over", False) and old is not new:
                handle = new.register_forward_pre_hook(hook)
                object.__setattr__(new, "_sysq_online_handle", handle)


def _get(root: nn.Module, path: str) -> nn.Module:
    mod = root
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod


def _maybe(root: nn.Module, path: str):
    try:
        return _get(root, path)
    except AttributeError:
        return None


def _conv1d_to_linear(conv: nn.Module) -> nn.Linear:
    """HF GPT-2 Conv1D stores W as [in, out]; turn it into an equivalent nn.Linear."""
    w = conv.weight
    lin = nn.Linear(w.shape[0], w.shape[1], bias=conv.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w.t())
        if conv.bias is not None:
            lin.bias.copy_(conv.bias)
    return lin


class Adapter:
    """Answers layout questions for one model. Obtain with :func:`get_adapter`."""

    def __init__(self, model: nn.Module, family: Family):
        self.model = model
        self.family = family
        self.config = model.config
        self._normalise_linears()

    # ---- structure ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.family.name

    def layers(self) -> nn.ModuleList:
        return _get(self.model, self.family.layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers())

    def embeddings(self) -> list[nn.Module]:
        return [_get(self.model, p) for p in self.family.embeddings]

    def final_norm(self) -> nn.Module:
        return _get(self.model, self.family.final_norm)

    def lm_head(self) -> nn.Linear:
        return _get(self.model, self.family.lm_head)

    def attention(self, i: int) -> nn.Module:
        return _get(self.layers()[i], self.family.attn)

    def attn_norm(self, i: int) -> nn.Module:
        """The norm whose output feeds layer i's attention inputs (post-LN: the previous layer's output norm)."""
        if self.family.post_ln:
            return _get(self.model, self.family.embed_norm) if i == 0 else _get(self.layers()[i - 1],
                                                                                self.family.attn_norm)
        return _get(self.layers()[i], self.family.attn_norm)

    def mlp_norm(self, i: int) -> nn.Module:
        return _get(self.layers()[i], self.family.mlp_norm)

    def act_fn(self, i: int) -> nn.Module:
        return _get(self.layers()[i], self.family.act)

    def norms(self, i: int) -> dict[str, nn.Module]:
        out = {"attn_norm": self.attn_norm(i), "mlp_norm": self.mlp_norm(i)}
        out.update({p: _get(self.layers()[i], p) for p in self.family.post_norms})
        return out

    @property
    def post_ln(self) -> bool:
        """Norms after the residual add (BERT, and OPT configs with do_layer_norm_before=False): a norm's output is
        the residual stream itself, so nothing can be folded into it without changing that stream."""
        return self.family.post_ln or getattr(self.config, "do_layer_norm_before", True) is False

    @property
    def causal(self) -> bool:
        return self.family.task == "causal-lm"

    @property
    def max_length(self) -> int | None:
        """The longest input the position embeddings cover (RoBERTa numbers positions from pad_token_id + 1)."""
        c = self.config
        n = getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)
        if n is not None and self.family.positions_after_pad:
            n -= (getattr(c, "pad_token_id", None) or 0) + 1
        return n

    # ---- heads -------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        c = self.config
        return getattr(c, "hidden_size", None) or c.n_embd

    @property
    def num_heads(self) -> int:
        c = self.config
        return getattr(c, "num_attention_heads", None) or c.n_head

    @property
    def num_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.num_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.hidden_size // self.num_heads

    @property
    def kv_groups(self) -> int:
        """Query heads per key/value head (GQA)."""
        return self.num_heads // self.num_kv_heads

    # ---- linears -----------------------------------------------------------------------------
    def linears(self, i: int) -> dict[str, nn.Linear]:
        """Role -> linear for layer i, attention first, then MLP."""
        layer = self.layers()[i]
        roles = {**self.family.attn_linears, **self.family.mlp_linears}
        return {role: _get(layer, path) for role, path in roles.items()}

    def linear_refs(self) -> list[LinearRef]:
        """Every decoder linear with its role and dotted name (lm_head and embeddings excluded)."""
        refs = []
        roles = {**self.family.attn_linears, **self.family.mlp_linears}
        for i, layer in enumerate(self.layers()):
            for role, path in roles.items():
                parent_path, _, attr = path.rpartition(".")
                parent = _get(layer, parent_path) if parent_path else layer
                refs.append(LinearRef(i, role, f"{self.family.layers}.{i}.{path}", getattr(parent, attr), parent, attr))
        return refs

    def lm_head_ref(self) -> LinearRef:
        """The output head as a LinearRef (layer -1, role "lm_head"), so it can be swapped like a decoder linear."""
        parent_path, _, attr = self.family.lm_head.rpartition(".")
        parent = _get(self.model, parent_path) if parent_path else self.model
        return LinearRef(-1, "lm_head", self.family.lm_head, getattr(parent, attr), parent, attr)

    def down(self, i: int) -> nn.Linear:
        """The MLP output linear (down_proj or fc2): where systematic outliers are born."""
        lin = self.linears(i)
        return lin["down"] if "down" in lin else lin["fc2"]

    def output_linear(self, i: int, block: str) -> nn.Linear:
        """The linear writing a sub-block's output into the residual ("attn" -> o, "mlp" -> down)."""
        return self.linears(i)["o"] if block == "attn" else self.down(i)

    def v_rows(self, i: int) -> tuple[nn.Linear, slice]:
        """The linear computing layer i's values and its rows that do (all of v, or the v block of a fused qkv)."""
        lin = self.linears(i)
        if "v" in lin:
            return lin["v"], slice(0, lin["v"].out_features)
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return lin["qkv"], slice(q + kv, q + 2 * kv)

    def attn_inputs(self, i: int) -> list[tuple[str, nn.Linear]]:
        return [(r, m) for r, m in self.linears(i).items() if r in ("q", "k", "v", "qkv")]

    def mlp_inputs(self, i: int) -> list[tuple[str, nn.Linear]]:
        return [(r, m) for r, m in self.linears(i).items() if r in ("gate", "up", "gate_up", "fc1")]

    def shared_input_groups(self) -> list[list[LinearRef]]:
        """Linears that read the same input tensor, in the order the layer calls them, two or more per group:
        q, k, v and gate, up (a family that already fuses them, qkv or gate_up, has none). What one GEMV over
        their concatenated weights can compute (sysq.quant.fuse)."""
        refs = self.linear_refs()
        groups = []
        for i in range(self.num_layers):
            mine = {r.role: r for r in refs if r.layer == i}
            for inputs in (self.attn_inputs(i), self.mlp_inputs(i)):
                if len(inputs) > 1:
                    groups.append([mine[role] for role, _ in inputs])
        return groups

    def gated_mlp_ref(self, i: int) -> LinearRef | None:
        """Layer i's MLP module as a LinearRef (role "mlp": replaceable like a linear) when it computes
        down(act(gate(x)) * up(x)) with gate, up, down and act its own children; else None."""
        paths = self.family.mlp_linears
        if not self.family.gated or set(paths) != {"gate", "up", "down"}:
            return None
        parents = {p.rpartition(".")[0] for p in [*paths.values(), self.family.act]}
        if len(parents) != 1 or not next(iter(parents)):
            return None
        mlp_path = parents.pop()
        holder_path, _, attr = mlp_path.rpartition(".")
        layer = self.layers()[i]
        holder = _get(layer, holder_path) if holder_path else layer
        return LinearRef(i, "mlp", f"{self.family.layers}.{i}.{mlp_path}", getattr(holder, attr), holder, attr)

    def act_is_silu(self, i: int) -> bool:
        """Whether layer i's MLP activation is SiLU (torch's or transformers' module)."""
        return type(self.act_fn(i)).__name__ in ("SiLU", "SiLUActivation")

    # ---- smoothing mappings ------------------------------------------------------------------
    def mappings(self, i: int) -> list[Mapping]:
        """Every place in layer i where a per-channel scale can be folded exactly.

        norm -> attention inputs, norm -> MLP inputs (pre-norm layouts only: a post-LN norm's output is also the
        residual), v -> o (the v rows of a fused qkv too), up -> down (gated MLPs; gate_up's up half when fused)
        and fc1 -> fc2 (ReLU MLPs only).
        """
        f, lin = self.family, self.linears(i)
        attn_in, mlp_in = self.attn_inputs(i), self.mlp_inputs(i)
        maps = [] if self.post_ln else [
            Mapping(f"layers.{i}.attn_norm->{','.join(r for r, _ in attn_in)}", i, self.attn_norm(i), "norm",
                    [m for _, m in attn_in], [r for r, _ in attn_in]),
            Mapping(f"layers.{i}.mlp_norm->{','.join(r for r, _ in mlp_in)}", i, self.mlp_norm(i), "norm",
                    [m for _, m in mlp_in], [r for r, _ in mlp_in]),
        ]
        v, rows = self.v_rows(i)
        fused = rows.stop - rows.start != v.out_features
        maps.append(Mapping(f"layers.{i}.{'qkv' if fused else 'v'}->o", i, v, "linear", [lin["o"]], ["o"],
                            source_rows=rows if fused else None, groups=self.kv_groups))
        if "up" in lin:
            maps.append(Mapping(f"layers.{i}.up->down", i, lin["up"], "linear", [lin["down"]], ["down"]))
        elif "gate_up" in lin:
            n = lin["gate_up"].out_features // 2
            maps.append(Mapping(f"layers.{i}.gate_up->down", i, lin["gate_up"], "linear", [lin["down"]], ["down"],
                                source_rows=slice(n, 2 * n)))
        elif f.act_positive_homogeneous:
            maps.append(Mapping(f"layers.{i}.fc1->fc2", i, lin["fc1"], "linear", [lin["fc2"]], ["fc2"]))
        return maps

    def norm_weight(self, norm: nn.Module) -> torch.Tensor:
        """The effective per-channel multiplier of a norm (Gemma stores weight - 1)."""
        return norm.weight.data + self.family.norm_offset

    def set_norm_weight(self, norm: nn.Module, effective: torch.Tensor) -> None:
        norm.weight.data.copy_(effective - self.family.norm_offset)

    def rotations(self) -> dict[str, str | None]:
        """Which rotations keep this model's function: part ("residual", "heads", "down") -> None when it does,
        else the reason it does not. heads (per-head v -> o) and down (online, on the MLP output linear's input)
        are exact in every layout; the residual rotation needs every norm on the residual stream to commute
        with it once its weight is folded into the linears after it: RMSNorm does, LayerNorm does once the
        stream is kept mean-free (sysq.mitigate.rotate), a norm after the residual add or a sandwich post-norm
        does not."""
        f, why = self.family, None
        if f.post_norms:
            why = (f"its post-sub-block norms ({', '.join(f.post_norms)}) scale channels on the way into the residual "
                   "stream with no linear to fold into")
        elif self.post_ln:
            why = ("its LayerNorms follow the residual add (post-LN), so the residual stream is a norm output and "
                   "a rotation cannot pass through the norm")
        else:
            extra = [p for p in f.residual_extras if _maybe(self.model, p) is not None]
            if extra:
                why = f"linears between the embeddings or the head and the residual stream ({', '.join(extra)})"
        return {"residual": why, "heads": None, "down": None}

    @property
    def rotatable(self) -> bool:
        """Whether the residual-stream rotation keeps the function (see rotations)."""
        return self.rotations()["residual"] is None

    # ---- run-time tensors (hooks of sysq/explain) ----------------------------------------------
    @staticmethod
    def layer_input(args, kwargs) -> torch.Tensor:
        """The hidden states a decoder layer's forward pre-hook (with_kwargs=True) receives."""
        return args[0] if args else kwargs["hidden_states"]

    @staticmethod
    def hidden_of(out) -> torch.Tensor:
        """The hidden states in a decoder layer's output (a tensor, or a tuple that starts with them)."""
        return out[0] if isinstance(out, tuple) else out

    @staticmethod
    def attention_probs(out) -> torch.Tensor | None:
        """[B, H, Tq, Tk] probabilities in an attention module's output (eager attention), else None."""
        return out[1] if isinstance(out, tuple) and len(out) > 1 else None

    def edit_attention_mask(self, i: int, fn):
        """Hook layer i's attention so it runs with fn(mask) instead of its additive [B, 1, Tq, Tk] float mask
        (eager attention). Returns the hook handle."""
        def hook(mod, args, kwargs):
            mask = kwargs.get("attention_mask")
            if mask is None and self.family.task == "masked-lm":    # an encoder without padding: all visible
                h = self.layer_input(args, kwargs)
                mask = torch.zeros(h.shape[0], 1, h.shape[1], h.shape[1], dtype=h.dtype, device=h.device)
            if mask is None or not mask.is_floating_point():
                raise UnsupportedArchitecture(f"layer {i}'s attention got no additive float mask; run it under "
                                              "eager attention (sysq.detect.attention.eager_attention)")
            return args, {**kwargs, "attention_mask": fn(mask)}
        return self.attention(i).register_forward_pre_hook(hook, with_kwargs=True)

    @property
    def plain_attention(self) -> bool:
        """A decoder whose attention is softmax(q k^T * scale) under a causal (or sliding-window) mask: no logit
        soft-capping (Gemma2), so sysq.attention_mass can stand in for eager attention's probabilities."""
        return self.causal and hasattr(self.model, "set_attn_implementation") \
            and getattr(self.config, "attn_logit_softcapping", None) is None

    def set_attention(self, implementation: str) -> str:
        """Run the model's attention through the transformers attention implementation `implementation` (a name
        registered with AttentionInterface, e.g. sysq.attention's `sysq_decode`); returns the one it had.
        Decoder families only: an encoder's bidirectional mask is not a causal decode."""
        previous = getattr(self.config, "_attn_implementation", None)
        if self.family.task != "causal-lm" or not hasattr(self.model, "set_attn_implementation"):
            raise UnsupportedArchitecture(f"{self.name} is not a decoder that takes transformers attention implementations; "
                            f"run it with its own attention (got {implementation!r})")
        self.model.set_attn_implementation(implementation)
        return previous

    @property
    def cache_kwarg(self) -> str:
        """The model forward's name for a key/value cache (transformers 5.2x renames past_key_values to cache)."""
        import inspect
        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    # ---- internals ---------------------------------------------------------------------------
    def _normalise_linears(self) -> None:
        """Swap GPT-2's Conv1D for nn.Linear (same function) so every linear has the [out, in] layout. `converted`
        records it: checkpoint formats read by transformers' own GPT-2 expect Conv1D."""
        self.converted = False
        for ref in self.linear_refs():
            if not isinstance(ref.module, nn.Linear) and type(ref.module).__name__ == "Conv1D":
                ref.replace(_conv1d_to_linear(ref.module))
                self.converted = True


def family_of(config) -> Family:
    model_type = getattr(config, "model_type", None)
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    raise UnsupportedArchitecture(
        f"sysq has no adapter for model_type {model_type!r}. Known model types: {', '.join(KNOWN_MODEL_TYPES)}. "
        "Add a Family entry in sysq/arch.py to support it."
    )


def model_class(config):
    """The transformers auto class that builds this family's model with its output head (a causal LM for a model
    type sysq does not know, so that get_adapter names the problem)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
    task = next((f.task for f in FAMILIES if getattr(config, "model_type", None) in f.model_types), "causal-lm")
    return AutoModelForMaskedLM if task == "masked-lm" else AutoModelForCausalLM


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for `model` (cached on the model). Raises UnsupportedArchitecture with the known list."""
    cached = getattr(model, "_sysq_adapter", None)
    if cached is not None:
        return cached
    adapter = Adapter(model, family_of(model.config))
    object.__setattr__(model, "_sysq_adapter", adapter)
    return adapter
