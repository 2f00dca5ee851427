"""Recipes: what to quantize and how, as validated dataclasses, named presets and YAML.

    get_recipe("w8a8")            a preset
    get_recipe("w8a8-static+kv4") a preset plus modifiers (+kv8, +kv4, +gptq, +learned, +mse, +fz, +real, +gN)
    get_recipe("w4a8+g64")        INT4 weights in groups of 64 (halved where they do not divide) under any preset
    get_recipe("w4a4+ag64")       dynamic activation scales per group of 64 channels within each token (Atom)
    get_recipe("w4a4+kv4g32")     4-bit keys and values in groups of 32 of head_dim
    get_recipe("w4a16+real")      the same quantizers run by a real kernel (backend chosen by real_backend)
    get_recipe("w4a4+learned+actclip")   learned rounding that also learns the activation clip ratios (learn.py)
    get_recipe("my.yaml")         a YAML file: {base: w4a16, weight: {group_size: 64}, method: gptq}
    get_recipe({...}) / Recipe(...)

Fields that mitigation sets (see sysq/mitigate; `sysq.mitigate` returns the recipe with them filled in):
QuantSpec.clip_ratio (weights and static activation scales), Recipe.act_clip_ratios (per linear, overrides
act.clip_ratio), QuantSpec.preserve_threshold / preserve_positions (tokens kept in float, left out of static
scales), Recipe.preserve_channels (input channels per linear kept in float or INT8) and method (gptq).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from ..errors import SysqError
from .math import BITS, TYPES

METHODS = ("rtn", "gptq", "learned")
# fake: simulated QuantLinear; real kernels (sysq/quant/kernels.py): int8 (W8A8 torch._int_mm), fp8 (W8A8
# torch._scaled_mm), int8-wo (W8A16 torch._weight_int8pack_mm), int4-wo (W4A16 int4 pack, tinygemm layout)
REAL_BACKENDS = ("int8", "fp8", "int8-wo", "int4-wo")
BACKENDS = ("fake", *REAL_BACKENDS, "bnb-int8", "bnb-nf4", "bnb-fp4")
_BNB_WEIGHTS = {"bnb-int8": "w8 LLM.int8 (columns with activations > %(bnb_threshold)g kept in fp16)",
                "bnb-nf4": "w4 nf4 in blocks of 64", "bnb-fp4": "w4 fp4 in blocks of 64"}
INT4_GROUPS = (32, 64, 128, 256)      # group sizes the int4 pack kernels take
RAGGED = ("error", "halve")
WEIGHT_GRANULARITIES = ("tensor", "channel", "group")
ACT_GRANULARITIES = ("tensor", "token", "group")
KV_GRANULARITIES = ("token", "channel")
ZERO_POINTS = ("int", "float")


@dataclass(frozen=True)
class QuantSpec:
    """One quantizer: for weights ([out, in], rows = output channels) or for a linear's input activations."""

    bits: int = 8
    symmetric: bool = True
    granularity: str = "channel"        # weights: tensor|channel|group; activations: tensor|token|group
    group_size: int | None = None
    dynamic: bool = False               # activations: scales computed per forward pass (else calibrated)
    clip_ratio: float = 1.0             # range shrink: weights' per-row range, static activations' calibrated range
    mse: bool = False                   # weights: MSE-optimal range shrink per row (GPTQ's search)
    # asymmetric weights: "int" an integer zero point (range includes 0); "float" a float offset per group, the
    # value of code 0 (GGUF Q4_1, HQQ, torchao's tinygemm int4 layout): x_hat = q * scale + zero (sysq.quant.math)
    zero_point: str = "int"
    # activations only: tokens kept in float and left out of the static range
    preserve_threshold: float | None = None     # a token whose max |x| over channels exceeds this
    preserve_positions: tuple[int, ...] = ()    # sequence positions (e.g. (0,) the first token / BOS)
    type: str = "int"                   # int: integer grid; float: FP8 e4m3 (bits 8, symmetric; compressed-tensors)


@dataclass(frozen=True)
class KVSpec:
    """Fake quantization of keys and values (post-RoPE, as the cache holds them), per KV head."""

    bits: int = 8
    symmetric: bool = False
    granularity: str = "token"          # token: one scale per (head, token) over head_dim; channel: per (head, dim)
    group_size: int | None = None       # token granularity only: groups of head_dim
    # sequence positions whose keys and values stay float (PrefixQuant / IntactKV: the BOS / attention-sink entry of
    # the cache, computed once per prompt, costs one token's float KV and carries the model's massive activations)
    preserve_positions: tuple[int, ...] = ()
    # QuaRot's R3: keys quantized in a Hadamard basis of head_dim (Q(kH) H^T, what a cache holding Q(kH) gives once the
    # queries are rotated by H too): RoPE's few large key channels spread over all of them. Values need no online
    # rotation: the plan's per-head v -> o rotation (Rotate.heads) folds theirs into the weights
    key_rotation: bool = False


@dataclass(frozen=True)
class Recipe:
    name: str = "custom"
    weight: QuantSpec | None = None
    act: QuantSpec | None = None
    kv: KVSpec | None = None
    method: str = "rtn"                 # rtn | gptq | learned (weights; learned: sysq/quant/learn.py)
    backend: str = "fake"               # fake (simulated) | int8 (torch._int_mm) | bnb-int8 | bnb-nf4 | bnb-fp4
    ragged: str = "error"               # group_size not dividing in_features: error | halve it until it divides
    gptq_block_size: int = 128
    gptq_damp: float = 0.01
    gptq_act_order: bool = False
    learn_steps: int = 50               # learned rounding: SignSGD steps per decoder layer
    learn_lr: float | None = None       # None: 1 / learn_steps
    learn_batch_size: int = 1           # calibration windows per step
    learn_seed: int = 0
    learn_loss: str = "mse"             # mse (every output element) | token (each token relative to its norm)
    learn_amp: str | None = None        # bf16: the training steps under autocast (AutoRound's amp); None: the model's
    learn_act_clip: bool = False        # learned rounding also learns the dynamic activation clip ratios (learn.py)
    learn_attn_steps: int | None = None  # the attention's linears train in the first N steps only (learn.py); None: all
    bnb_threshold: float = 6.0          # LLM.int8 outlier threshold (bnb-int8)
    quantize_lm_head: bool = False      # lm_head and embeddings stay float by default
    skip: tuple[str, ...] = ()          # roles ("down") or dotted linear names left in float
    preserve_channels: dict = field(default_factory=dict)   # linear name -> input channel indices kept precise
    preserve_channels_bits: int | None = None               # None: float; 8: INT8 (inside an INT4 layer)
    act_clip_ratios: dict = field(default_factory=dict)     # linear name -> activation clip ratio (overrides act's)
    dynamic_act: tuple[str, ...] = ()   # roles or dotted linear names whose activations get dynamic per-token
                                        # scales instead of the static act spec (where outlier tokens land)

    def __post_init__(self):
        validate(self)

    def act_for(self, name: str, role: str = "") -> QuantSpec | None:
        """The activation spec one linear gets: per-token dynamic where dynamic_act names it (or its role), else
        act with that linear's clip ratio."""
        a = self.act
        if a is None:
            return None
        if name in self.dynamic_act or role in self.dynamic_act:
            return replace(a, dynamic=True, granularity="token", clip_ratio=1.0)
        if name in self.act_clip_ratios:
            return replace(a, clip_ratio=float(self.act_clip_ratios[name]))
        return a

    def describe(self) -> str:
        def spec(s, kind):
            if s is None:
                return f"{kind}16"
            g = f"g{s.group_size}" if s.granularity == "group" else s.granularity
            if s.granularity == "group" and self.ragged == "halve":
                g += " (halved where it does not divide)"
            how = "" if kind == "w" else (" dynamic" if s.dynamic else " static")
            if s.type == "float":
                return f"{kind} fp8 e4m3 {g}{how}"
            fz = " float-zero" if s.zero_point == "float" else ""
            return f"{kind}{s.bits} {'sym' if s.symmetric else 'asym'}{fz} {g}{how}"
        parts = [spec(self.weight, "w"), spec(self.act, "a")]
        if self.backend in _BNB_WEIGHTS:        # bitsandbytes quantizes in its own formats, not the recipe's specs
            parts = [_BNB_WEIGHTS[self.backend] % self.__dict__]
        if self.kv:
            parts.append(f"kv{self.kv.bits} {self.kv.granularity}" + (f" g{self.kv.group_size}" if self.kv.group_size
                                                                       else "")
                         + (" (keys Hadamard-rotated)" if self.kv.key_rotation else ""))
        if self.dynamic_act:
            parts.append(f"dynamic per-token activations on {len(self.dynamic_act)} linears")
        if self.method == "learned":
            parts.append(f"learned rounding ({self.learn_steps} steps/layer"
                         f"{f' ({self.learn_attn_steps} for the attention)' if self.learn_attn_steps is not None else ''}"
                         f" x {self.learn_batch_size} window"
                         f"{'s' if self.learn_batch_size > 1 else ''}, seed {self.learn_seed}"
                         f"{', per-token loss' if self.learn_loss == 'token' else ''}"
                         f"{', bf16 autocast' if self.learn_amp else ''}"
                         f"{', activation clip learned' if self.learn_act_clip else ''})")
        elif self.method != "rtn":
            parts.append(self.method + (" act-order" if self.gptq_act_order else ""))
        if self.backend != "fake":
            parts.append(f"backend {self.backend}")
        return f"{self.name}: " + ", ".join(parts)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("weight", "act", "kv"):
            if d[k] is not None:
                d[k]["preserve_positions"] = list(d[k]["preserve_positions"])
        d["skip"] = list(self.skip)
        d["preserve_channels"] = {k: [int(i) for i in v] for k, v in self.preserve_channels.items()}
        d["act_clip_ratios"] = {k: float(v) for k, v in self.act_clip_ratios.items()}
        d["dynamic_act"] = list(self.dynamic_act)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _one_of(where: str, value, allowed) -> None:
    if value not in allowed:
        raise SysqError(f"{where}={value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")


def _validate_spec(s: QuantSpec, where: str, granularities) -> None:
    _one_of(f"{where}.bits", s.bits, BITS)
    _one_of(f"{where}.type", s.type, TYPES)
    if s.type == "float" and (s.bits != 8 or not s.symmetric):
        raise SysqError(f"{where}.type='float' is FP8 e4m3: it needs {where}.bits=8 and {where}.symmetric=true "
                        f"(got bits={s.bits}, symmetric={s.symmetric})")
    _one_of(f"{where}.granularity", s.granularity, granularities)
    if s.granularity == "group" and (not isinstance(s.group_size, int) or s.group_size <= 0):
        raise SysqError(f"{where}.group_size must be a positive integer when {where}.granularity is 'group' "
                        f"(got {s.group_size!r})")
    if s.granularity != "group" and s.group_size is not None:
        raise SysqError(f"{where}.group_size={s.group_size} contradicts {where}.granularity={s.granularity!r}: "
                        "set granularity 'group' or drop group_size")
    if not 0 < s.clip_ratio <= 1:
        raise SysqError(f"{where}.clip_ratio={s.clip_ratio} must lie in (0, 1]")
    _one_of(f"{where}.zero_point", s.zero_point, ZERO_POINTS)
    if s.zero_point == "float" and s.symmetric:
        raise SysqError(f"{where}.zero_point='float' needs {where}.symmetric=false (a symmetric quantizer has no zero "
                        "point); set symmetric: false or drop zero_point")


def validate(r: Recipe) -> None:
    _one_of("method", r.method, METHODS)
    _one_of("backend", r.backend, BACKENDS)
    _one_of("ragged", r.ragged, RAGGED)
    if r.weight is not None:
        _validate_spec(r.weight, "weight", WEIGHT_GRANULARITIES)
        if r.weight.dynamic:
            raise SysqError("weight.dynamic=True is contradictory: weights are quantized once; drop it")
        if r.weight.preserve_threshold is not None or r.weight.preserve_positions:
            raise SysqError("weight.preserve_threshold / weight.preserve_positions apply to activations: "
                            "set them on act")
    if r.act is not None:
        _validate_spec(r.act, "act", ACT_GRANULARITIES)
        if not r.act.dynamic and r.act.granularity != "tensor":
            raise SysqError(f"act.granularity={r.act.granularity!r} with act.dynamic=False is contradictory: "
                            "static activation scales are per tensor; use granularity 'tensor' or dynamic: true")
        if r.act.mse:
            raise SysqError("act.mse is not supported (MSE search is a weight option); drop it or use act.clip_ratio")
        if r.act.zero_point != "int":
            raise SysqError("act.zero_point='float' is not supported (a float zero point is a weight format option); "
                            "drop it from act")
    if r.kv is not None:
        _one_of("kv.bits", r.kv.bits, BITS)
        _one_of("kv.granularity", r.kv.granularity, KV_GRANULARITIES)
        if r.kv.group_size is not None and r.kv.granularity != "token":
            raise SysqError("kv.group_size applies to kv.granularity 'token' only")
        if r.kv.preserve_positions and r.kv.granularity != "token":
            raise SysqError("kv.preserve_positions keeps whole tokens float: it needs kv.granularity 'token'")
    if r.method in ("gptq", "learned") and r.weight is None:
        raise SysqError(f"method={r.method!r} needs a weight quantizer: set weight (e.g. base: w4a16)")
    if r.method == "learned" and r.weight.type == "float":
        raise SysqError("method 'learned' rounds to an integer grid; FP8 weights (type 'float') take method rtn or "
                        "gptq")
    _one_of("learn_loss", r.learn_loss, ("mse", "token"))
    _one_of("learn_amp", r.learn_amp, (None, "bf16"))
    if r.learn_act_clip and not act_clip_learnable(r.act):
        raise SysqError("learn_act_clip (+actclip) learns the clip ratio of a dynamic, symmetric INT activation "
                        "quantizer; this recipe has none (e.g. use w4a4 or w4a8, or drop +actclip)")
    if r.learn_attn_steps is not None and not 0 <= r.learn_attn_steps <= r.learn_steps:
        raise SysqError(f"learn_attn_steps={r.learn_attn_steps}: the attention's steps must lie in 0..learn_steps "
                        f"({r.learn_steps}), or be null for every step")
    if r.learn_steps < 0 or r.learn_batch_size < 1 or (r.learn_lr is not None and r.learn_lr <= 0):
        raise SysqError(f"learn_steps={r.learn_steps}, learn_batch_size={r.learn_batch_size}, learn_lr={r.learn_lr}: "
                        "steps must be >= 0, the batch >= 1 window and lr > 0 (or null for 1 / steps)")
    bad = {k: v for k, v in r.act_clip_ratios.items() if not 0 < float(v) <= 1}
    if bad:
        raise SysqError(f"act_clip_ratios must lie in (0, 1]; got {dict(list(bad.items())[:3])}")
    if r.dynamic_act and (r.act is None or r.act.dynamic):
        raise SysqError("dynamic_act lists linears that get per-token scales instead of static ones; it needs a static "
                        "activation spec (act.dynamic: false)")
    if r.act_clip_ratios and r.act is None:
        raise SysqError("act_clip_ratios needs an activation quantizer (act); drop them or set act")
    if r.preserve_channels_bits not in (None, 8):
        raise SysqError(f"preserve_channels_bits={r.preserve_channels_bits!r}; allowed: null (float), 8")
    if r.backend in REAL_BACKENDS:
        _validate_real(r)
    if r.backend.startswith("bnb") and (r.weight is not None or r.act is not None or r.method != "rtn"):
        raise SysqError(f"backend {r.backend!r} quantizes with bitsandbytes' own scheme: weight, act and method "
                        "must be left unset")


def _is(s: QuantSpec | None, type: str, bits: int, granularities, symmetric=(True,)) -> bool:
    return s is not None and s.type == type and s.bits == bits and s.granularity in granularities \
        and s.symmetric in symmetric


def real_backend(weight: QuantSpec | None, act: QuantSpec | None) -> str:
    """The real kernel that runs these quantizers exactly (the '+real' modifier), or a SysqError naming them."""
    if _is(weight, "float", 8, ("channel", "tensor")) and _is(act, "float", 8, ("token", "tensor")):
        return "fp8"
    if _is(weight, "int", 8, ("channel",)) and _is(act, "int", 8, ("token", "tensor")):
        return "int8"
    if act is None and _is(weight, "int", 8, ("channel",)):
        return "int8-wo"
    if act is None and _is(weight, "int", 4, ("group",), (True, False)):
        return "int4-wo"
    raise SysqError("no real kernel runs this recipe; real kernels: int8 (w8a8, w8a8-static), fp8 (w8a8-fp8, "
                    "w8a8-fp8-static), int8-wo (w8a16), int4-wo (w4a16 with groups: w4a16, w4a16-g32); "
                    "use the simulated backend 'fake'")


def act_clip_learnable(spec: QuantSpec | None) -> bool:
    """A dynamic, symmetric INT activation quantizer: its scale is the clip ratio times a range the input fixes, so
    learned rounding can learn the ratio (learn_act_clip)."""
    return spec is not None and spec.dynamic and spec.symmetric and spec.type == "int"


def _validate_real(r: Recipe) -> None:
    try:
        need = real_backend(r.weight, r.act)
    except SysqError:
        need = None
    if need != r.backend:
        raise SysqError(f"backend {r.backend!r} does not run this recipe ({r.describe()}); "
                        + (f"its quantizers run on backend {need!r}" if need else
                           "int8: w8a8 / w8a8-static, fp8: w8a8-fp8 / w8a8-fp8-static, int8-wo: w8a16, "
                           "int4-wo: w4a16 with groups"))
    if r.preserve_channels:
        raise SysqError(f"backend {r.backend!r} does not run preserve_channels (float or INT8 columns inside the "
                        "layer); drop them or use the simulated backend 'fake'")
    if r.backend == "int4-wo" and r.weight.group_size not in INT4_GROUPS:
        raise SysqError(f"backend 'int4-wo' takes weight.group_size in {INT4_GROUPS} (got {r.weight.group_size})")


# ---- presets -------------------------------------------------------------------------------------

W8 = QuantSpec(bits=8, symmetric=True, granularity="channel")
W4G128 = QuantSpec(bits=4, symmetric=False, granularity="group", group_size=128)
W4C = QuantSpec(bits=4, symmetric=False, granularity="channel")
A8_TOKEN = QuantSpec(bits=8, symmetric=True, granularity="token", dynamic=True)
A8_STATIC = QuantSpec(bits=8, symmetric=True, granularity="tensor", dynamic=False)
A4_TOKEN = QuantSpec(bits=4, symmetric=True, granularity="token", dynamic=True)
W_FP8 = QuantSpec(bits=8, symmetric=True, granularity="channel", type="float")
A_FP8_TOKEN = QuantSpec(bits=8, symmetric=True, granularity="token", dynamic=True, type="float")
A_FP8_STATIC = QuantSpec(bits=8, symmetric=True, granularity="tensor", dynamic=False, type="float")

PRESETS: dict[str, dict] = {
    "fp": {},
    "w8a16": dict(weight=W8),
    "w4a16": dict(weight=W4G128, ragged="halve"),
    "w4a16-g128": dict(weight=W4G128, ragged="halve"),
    "w4a16-g64": dict(weight=replace(W4G128, group_size=64)),
    "w4a16-g32": dict(weight=replace(W4G128, group_size=32)),
    "w4a16-pc": dict(weight=W4C),
    "w8a8": dict(weight=W8, act=A8_TOKEN),
    "w8a8-static": dict(weight=W8, act=A8_STATIC),
    "w4a8": dict(weight=W4C, act=A8_TOKEN),
    "w4a4": dict(weight=W4C, act=A4_TOKEN),
    "w8a8-int": dict(weight=W8, act=A8_TOKEN, backend="int8"),
    "w8a8-static-int": dict(weight=W8, act=A8_STATIC, backend="int8"),
    "w8a8-fp8": dict(weight=W_FP8, act=A_FP8_TOKEN),
    "w8a8-fp8-static": dict(weight=W_FP8, act=A_FP8_STATIC),
    "bnb-int8": dict(backend="bnb-int8"),
    "bnb-nf4": dict(backend="bnb-nf4"),
    "bnb-fp4": dict(backend="bnb-fp4"),
}
MODIFIERS = {
    "kv8": dict(kv=KVSpec(bits=8)),
    "kv4": dict(kv=KVSpec(bits=4)),
    "gptq": dict(method="gptq"),
    "learned": dict(method="learned"),
    "tokenloss": dict(learn_loss="token"),   # the learned step's loss per token, relative to its norm (learn.py)
    "amp": dict(learn_amp="bf16"),          # the learned step's training under bf16 autocast (learn.py)
    "actclip": dict(learn_act_clip=True),   # the learned step also learns the activation clip ratios (learn.py)
    "mse": None,   # weight.mse = True
    "fz": None,    # weight.zero_point = "float" (asymmetric weights)
    "real": None,  # backend = real_backend(weight, act)
    "gN": None,    # weight groups of N input channels (e.g. +g64, +g128), halved where N does not divide
    "learnedN[xB]": None,   # learned rounding with N steps per layer (and B windows per step): +learned200x8
    "kvBgN": None,  # B-bit KV cache in asymmetric groups of N of head_dim per (head, token) (KIVI / QServe): +kv4g32
    "agN": None,   # dynamic activation scales per group of N channels within each token (Atom's W4A4): +ag64
    "kvrot": None,  # the KV cache's keys quantized in a Hadamard basis (QuaRot's R3), after +kv: +kv4g32+kvrot
}


def _apply_modifier(fields_: dict, mod: str, name: str) -> None:
    if mod[:1] == "g" and mod[1:].isdigit():
        w = fields_.get("weight")
        if w is None or int(mod[1:]) < 1:
            raise SysqError(f"'+{mod}' (weight groups) in {name!r} needs a weight quantizer and a group size >= 1, "
                            "e.g. w4a8+g64")
        fields_["weight"] = replace(w, granularity="group", group_size=int(mod[1:]))
        fields_["ragged"] = "halve"
        return
    if mod[:2] == "ag" and mod[2:].isdigit():
        a = fields_.get("act")
        if a is None or not a.dynamic or int(mod[2:]) < 1:
            raise SysqError(f"'+{mod}' (activation groups) in {name!r} needs dynamic activation quantization and a "
                            "group size >= 1, e.g. w4a4+ag64")
        fields_["act"] = replace(a, granularity="group", group_size=int(mod[2:]))
        fields_["ragged"] = "halve"
        return
    if mod[:2] == "kv" and "g" in mod and mod[2:].replace("g", "", 1).isdigit():
        bits, _, g = mod[2:].partition("g")
        if not bits or not g or int(g) < 1:
            raise SysqError(f"'+{mod}' in {name!r}: write +kvBgN (B-bit keys and values in groups of N of head_dim), "
                            "e.g. +kv4g32")
        fields_["kv"] = KVSpec(bits=int(bits), group_size=int(g))
        return
    if mod.startswith("learned") and mod != "learned":
        body, _, attn = mod[len("learned"):].partition("a")
        steps, _, batch = body.partition("x")
        if (not steps.isdigit() or not (batch == "" or batch.isdigit()) or int(batch or 1) < 1
                or not (attn == "" or attn.isdigit())):
            raise SysqError(f"'+{mod}' in {name!r}: write +learnedN, +learnedNxB or +learnedNxBaA (N steps per layer, "
                            "B windows per step, the attention's linears in the first A steps only), e.g. "
                            "+learned200x8 or +learned200x1a100")
        fields_.update(method="learned", learn_steps=int(steps), learn_batch_size=int(batch or 1),
                       learn_attn_steps=int(attn) if attn else None)
        return
    if mod not in MODIFIERS:
        raise SysqError(f"unknown recipe modifier '+{mod}' in {name!r}; allowed modifiers: "
                        f"{', '.join('+' + m for m in MODIFIERS)}")
    if mod == "mse":
        if fields_.get("weight") is None:
            raise SysqError(f"'+mse' in {name!r} needs a weight quantizer")
        fields_["weight"] = replace(fields_["weight"], mse=True)
    elif mod == "real":
        fields_["backend"] = real_backend(fields_.get("weight"), fields_.get("act"))
    elif mod == "kvrot":
        if fields_.get("kv") is None:
            raise SysqError(f"'+kvrot' (Hadamard-rotated keys) in {name!r} needs a quantized KV cache first, "
                            "e.g. w4a4+kv4g32+kvrot")
        fields_["kv"] = replace(fields_["kv"], key_rotation=True)
    elif mod == "fz":
        w = fields_.get("weight")
        if w is None or w.symmetric:
            raise SysqError(f"'+fz' (float zero point) in {name!r} needs an asymmetric weight quantizer, "
                            "e.g. w4a16-g64+fz")
        fields_["weight"] = replace(w, zero_point="float")
    else:
        fields_.update(MODIFIERS[mod])


def preset(name: str) -> Recipe:
    base, *mods = name.split("+")
    if base not in PRESETS:
        raise SysqError(f"unknown recipe {base!r}; presets: {', '.join(PRESETS)} (modifiers: "
                        f"{', '.join('+' + m for m in MODIFIERS)}), or a YAML file")
    f = dict(PRESETS[base])
    for m in mods:
        _apply_modifier(f, m, name)
    return Recipe(name=name, **f)


def _spec_from(d, cls, where: str, base=None):
    if d is None:
        return None
    if not isinstance(d, dict):
        raise SysqError(f"{where} must be a mapping of fields or null, got {d!r}")
    allowed = [f.name for f in fields(cls)]
    for k in d:
        if k not in allowed:
            raise SysqError(f"unknown field {where}.{k}; allowed fields: {', '.join(allowed)}")
    d = dict(d)
    if "preserve_positions" in d:
        d["preserve_positions"] = tuple(int(p) for p in d["preserve_positions"] or ())
    return replace(base, **d) if base is not None else cls(**d)


def from_dict(d: dict) -> Recipe:
    """Recipe from a mapping; `base: NAME` starts from a preset and the other fields override it
    (nested weight/act/kv fields override field by field)."""
    allowed = [f.name for f in fields(Recipe)] + ["base"]
    for k in d:
        if k not in allowed:
            raise SysqError(f"unknown recipe field {k!r}; allowed fields: {', '.join(allowed)}")
    d = dict(d)
    base = preset(d.pop("base")) if "base" in d else Recipe()
    kw = {}
    for key, cls in (("weight", QuantSpec), ("act", QuantSpec), ("kv", KVSpec)):
        if key in d:
            kw[key] = _spec_from(d.pop(key), cls, key, getattr(base, key))
    for key in ("skip", "dynamic_act"):
        if key in d:
            kw[key] = tuple(d.pop(key) or ())
    if "preserve_channels" in d:
        kw["preserve_channels"] = {k: [int(i) for i in v] for k, v in (d.pop("preserve_channels") or {}).items()}
    if "act_clip_ratios" in d:
        kw["act_clip_ratios"] = {k: float(v) for k, v in (d.pop("act_clip_ratios") or {}).items()}
    kw.update(d)
    kw.setdefault("name", base.name if base.name != "custom" else "custom")
    return replace(base, **kw)


def get_recipe(recipe) -> Recipe:
    """A Recipe from a Recipe, a preset name (with +modifiers), a YAML path or a mapping."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return from_dict(recipe)
    if isinstance(recipe, (str, Path)):
        s = str(recipe)
        if s.endswith((".yaml", ".yml")) or Path(s).is_file():
            p = Path(s)
            if not p.is_file():
                raise SysqError(f"recipe file {s} not found; give a preset name ({', '.join(PRESETS)}) or a YAML path")
            d = yaml.safe_load(p.read_text()) or {}
            if not isinstance(d, dict):
                raise SysqError(f"recipe file {s} must hold a mapping of recipe fields")
            d.setdefault("name", p.stem)
            return from_dict(d)
        return preset(s)
    raise SysqError(f"recipe must be a name, a YAML path, a mapping or a Recipe, got {type(recipe).__name__}")
