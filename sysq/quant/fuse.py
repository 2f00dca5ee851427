"""Fused projections for decode: q, k, v as one linear and gate, up as one (a runtime conversion, not a format).

At batch 1 a decode step is bound by streaming weights, and small GEMVs waste it: an 8B model's k and v
projections (4096 -> 1024) are too small to keep the GPU's memory system busy, and each linear is a kernel
launch (plus an epilogue). One GEMV over the concatenated weights (4096 -> 6144, 4096 -> 28672) streams the
same bytes in fewer, larger kernels.

    fuse_projections(model)              # float nn.Linear or simulated QuantLinear groups, in place
    sysq.quant.convert(model, fuse=True) # fuse the QuantLinears, then run the fused ones on real kernels

Which linears share an input comes from the architecture adapter (Adapter.shared_input_groups). Each group
becomes one `FusedProjections` (the concatenated linear: rows stacked, the same codes and scales, so its
output columns are the members' outputs) and each member a `ProjectionSlice` that returns its columns. The
first member called with an input tensor computes the fused product and keeps the other members' slices,
keyed on that tensor object; each member takes its own once, and when all have, the group holds nothing
again. So nothing is kept from one forward to the next (no stale output across CUDA-graph replays: the
whole exchange happens inside one traced forward), a member called with any other tensor recomputes, and
torch.compile traces the exchange as plain Python (the slices are views of one output).
Saving: save the model before fusing (sysq.save refuses a fused one); reload and fuse again.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ..arch import LinearRef, get_adapter
from ..errors import SysqError
from .linear import QuantLinear

log = logging.getLogger(__name__)


class FusedProjections(nn.Module):
    """One linear whose output columns are a group's outputs side by side (sizes: each member's columns)."""

    def __init__(self, fused: nn.Module, sizes: list[int], names: list[str]):
        super().__init__()
        self.fused, self.sizes, self.names = fused, tuple(sizes), tuple(names)
        self._input = None       # the input tensor of the pending product, and the slices not taken yet
        self._parts = None

    def part(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self._input is not x or self._parts[i] is None:
            self._input, self._parts = x, self.fused(x).split(self.sizes, dim=-1)
        out = self._parts[i]
        rest = tuple(None if j == i else p for j, p in enumerate(self._parts))
        if all(p is None for p in rest):
            self._input = self._parts = None
        else:
            self._parts = rest
        return out

    def extra_repr(self) -> str:
        return f"{' + '.join(self.names)} -> {sum(self.sizes)} columns"


class ProjectionSlice(nn.Module):
    """Member `index` of a fused group: its columns of the group's product. The first member registers the group
    (its weights count once); the others refer to it without registering it."""

    def __init__(self, group: FusedProjections, index: int):
        super().__init__()
        if index == 0:
            self.group = group
        else:
            object.__setattr__(self, "group", group)
        self.index = index
        self.in_features = getattr(group.fused, "in_features", None)
        self.out_features = group.sizes[index]
        self.name = group.names[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.part(self.index, x)

    def extra_repr(self) -> str:
        return f"{self.name}: columns {sum(self.group.sizes[:self.index])}:" \
               f"{sum(self.group.sizes[:self.index + 1])} of the fused group"


class GatedMLP(nn.Module):
    """A gated MLP, down(act(gate(x)) * up(x)), whose gate and up are one fused group: it takes the group's
    product [gate | up] whole and hands it to down, which applies the activation in its GEMV's prologue where it
    can (Int8WOLinear.gated: SiLU, decode rows, with gemv.GATED_PROLOGUE on: off by default, slower on an H200),
    saving the pointwise kernel between them; elsewhere the same ops as the MLP it replaces. Keeps that MLP's children under their names (gate_proj, ...), so the adapter's
    paths still find them."""

    def __init__(self, mlp: nn.Module, names: dict[str, str], silu: bool):
        super().__init__()
        self.names, self.silu = dict(names), silu          # role -> attribute (gate, up, down, act)
        for attr in self.names.values():
            setattr(self, attr, getattr(mlp, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = getattr(self, self.names["gate"])
        down = getattr(self, self.names["down"])
        both = gate.group.fused(x)
        if self.silu and hasattr(down, "gated"):
            y = down.gated(both)
            if y is not None:
                return y
        g, u = both.split(gate.group.sizes, dim=-1)
        return down(getattr(self, self.names["act"])(g) * u)

    def extra_repr(self) -> str:
        return "down(act(gate) * up) from the fused gate/up product" + (", SiLU in down's prologue" if self.silu
                                                                         else "")


def gate_mlps(model: nn.Module) -> int:
    """Replace every gated MLP whose gate/up are fused (gate first, equal halves) by a GatedMLP; returns how many."""
    ad = get_adapter(model)
    n = 0
    for i in range(ad.num_layers):
        ref = ad.gated_mlp_ref(i)
        if ref is None or isinstance(ref.module, GatedMLP):
            continue
        lin = ad.family.mlp_linears
        names = {role: path.rpartition(".")[2] for role, path in [*lin.items(), ("act", ad.family.act)]}
        gate, up = (getattr(ref.module, names[r]) for r in ("gate", "up"))
        if not (isinstance(gate, ProjectionSlice) and isinstance(up, ProjectionSlice) and gate.group is up.group
                and gate.index == 0 and up.index == 1 and len(set(gate.group.sizes)) == 1
                and len(gate.group.sizes) == 2):
            continue
        ref.replace(GatedMLP(ref.module, names, ad.act_is_silu(i)))
        n += 1
    return n


def is_fused(model: nn.Module) -> bool:
    return any(isinstance(m, ProjectionSlice) for m in model.modules())


def groups(model: nn.Module) -> list[FusedProjections]:
    """The fused groups of a model (each once)."""
    return [m for m in model.modules() if isinstance(m, FusedProjections)]


# ---- concatenating a group --------------------------------------------------------------------------------

def _cat_bias(mods, dtype, device):
    if all(m.bias is None for m in mods):
        return None     # a member without one adds zeros, which changes nothing
    return torch.cat([m.bias.data if m.bias is not None else torch.zeros(m.out_features, dtype=dtype, device=device)
                      for m in mods])


def _cat_linear(mods: list[nn.Linear]) -> nn.Linear:
    w = mods[0].weight
    bias = _cat_bias(mods, w.dtype, w.device)
    out = nn.Linear(w.shape[1], sum(m.out_features for m in mods), bias=bias is not None, device="meta")
    out.weight = nn.Parameter(torch.cat([m.weight.data for m in mods]), requires_grad=False)
    if bias is not None:
        out.bias = nn.Parameter(bias, requires_grad=False)
    return out


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(torch.equal(a, b))


def _cat_quant(mods: list[QuantLinear], names: list[str]) -> QuantLinear:
    """The QuantLinear of the stacked rows: codes, scales and zero points are per output row (per group along
    the input), so the stacked ones are each member's, unchanged."""
    m0 = mods[0]
    for m in mods[1:]:
        if (m.weight_spec, m.act_spec, m.group_size, m.ragged, m.packed, m.in_features) != \
                (m0.weight_spec, m0.act_spec, m0.group_size, m0.ragged, m0.packed, m0.in_features) or \
                (m.w_zero is None) != (m0.w_zero is None) or not _same(m.act_scale, m0.act_scale) or \
                not _same(m.act_zero, m0.act_zero):
            raise SysqError(f"{names[0]} and {m.name} are quantized differently ({m0.extra_repr()} / "
                            f"{m.extra_repr()}): only linears with one recipe and the same activation scales fuse")
    for m, name in zip(mods, names):
        if not m.quantized or m.calibrating:
            raise SysqError(f"{name} is not quantized yet: fuse after sysq.quantize")
        if m.preserve_channels is not None:
            raise SysqError(f"{name} keeps preserve_channels (its own columns of the input in float): such "
                            "linears do not fuse; run without fuse")
    q = m0.qweight
    bias = _cat_bias(mods, torch.float32, q.device)
    out = QuantLinear(None, m0.weight_spec, m0.act_spec, "+".join(names), m0.ragged, in_features=m0.in_features,
                      out_features=sum(m.out_features for m in mods), bias=False)
    out.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
    out.qweight = torch.cat([m.qweight for m in mods])
    out.w_scale = torch.cat([m.w_scale for m in mods])
    out.w_zero = None if m0.w_zero is None else torch.cat([m.w_zero for m in mods])
    out.act_scale, out.act_zero = m0.act_scale, m0.act_zero
    out.packed = m0.packed
    return out


def concatenate(mods: list[nn.Module], names: list[str]) -> nn.Module:
    """One linear of the same kind whose output rows are the members' rows in order (float nn.Linear, or
    quantized QuantLinear with one recipe)."""
    if all(type(m) is nn.Linear for m in mods):
        return _cat_linear(mods)
    if all(isinstance(m, QuantLinear) for m in mods):
        return _cat_quant(mods, names)
    kinds = sorted({type(m).__name__ for m in mods})
    raise SysqError(f"{', '.join(names)} cannot fuse ({', '.join(kinds)}): fuse float nn.Linear or simulated "
                    "QuantLinear modules; for real kernels quantize with the simulated backend and run "
                    "sysq.quant.convert(model, fuse=True)")


def fuse_group(refs: list[LinearRef]) -> FusedProjections:
    """Replace the linears of `refs` (one shared input) by slices of one fused linear; returns the group."""
    mods, names = [r.module for r in refs], [r.name for r in refs]
    for r in refs:
        m = r.module
        if m._forward_hooks or m._forward_pre_hooks:
            raise SysqError(f"{r.name} has forward hooks (e.g. an online transform of its input): fusing would "
                            "drop them; run without fuse")
    group = FusedProjections(concatenate(mods, names), [m.out_features for m in mods], names)
    for i, r in enumerate(refs):
        r.replace(ProjectionSlice(group, i))
    return group


def fuse_projections(model: nn.Module) -> int:
    """Fuse every group of linears that share an input (q/k/v, gate/up) in place; returns how many groups.
    A model already fused is left as it is (0)."""
    n = 0
    for refs in get_adapter(model).shared_input_groups():
        if any(isinstance(r.module, ProjectionSlice) for r in refs):
            continue
        fuse_group(refs)
        n += 1
    gated = gate_mlps(model)
    log.info("fused %d groups of projections that share an input; %d gated MLPs take their gate/up product whole",
             n, gated)
    return n


def describe(model: nn.Module) -> dict:
    """'q_proj+k_proj+v_proj -> 6144' style counts of the fused groups, for reports."""
    out: dict[str, int] = {}
    for g in groups(model):
        key = "+".join(n.rsplit(".", 1)[-1] for n in g.names) + f" {g.fused.in_features}->{sum(g.sizes)}"
        out[key] = out.get(key, 0) + 1
    return out
