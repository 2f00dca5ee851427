"""rotate: orthogonal (Hadamard) rotations that spread outlier channels over all channels.

Source: Ashkboos et al. 2024, "QuaRot" (arXiv 2404.00456); Liu et al. 2024, "SpinQuant"
(arXiv 2405.16406) for the R1/R2/R4 naming. A rotation Q of the residual stream is function-preserving
once every norm on the residual path is a plain RMSNorm (its weight fused into the following linears):
RMSNorm(xQ) = RMSNorm(x)Q. sysq applies
  * R1, residual stream: embeddings E -> EQ, every linear reading the residual W -> WQ, every linear
    writing it W -> Q^T W (and its bias b -> bQ), lm_head W -> WQ (untied from the embeddings);
  * R2, per head v -> o: v rows of each key/value head -> H^T W, the matching o columns -> W H
    (exact, v is used linearly by attention; one H serves every query head of a GQA group);
  * R4, down_proj input: W_down -> W_down H offline plus an *online* transform x -> xH on the input,
    installed as a forward pre-hook (``online_rotations``), cheap because H is applied as a Kronecker
    product of small factors.

Dimensions that are not a power of two. A Hadamard matrix of order n exists only for n = 1, 2 or a
multiple of 4, so 576 = 9 * 64 has one but not via Sylvester alone. sysq factors n = (odd part) * 2^k
and builds Q = A (x) H_2^j, where A is a Paley-I Hadamard matrix (order q+1 for a prime q = 3 mod 4)
or a Kronecker product of such, chosen so their odd parts multiply to the odd part of n:
  SmolLM2: 576 = 12 * 12 * 4 (Paley q = 11, twice), 1536 = 12 * 128, head_dim 64 = Sylvester.
Only when no Paley combination fits the odd part m (e.g. m = 7 with too few factors of two) does sysq
fall back to a seeded random orthogonal m x m block (QR of a Gaussian): still exactly orthogonal, so
still function-preserving, but with weaker incoherence (SpinQuant shows random rotations vary).

Norm layouts (``Adapter.rotations`` says which parts keep each family's function):
  * RMSNorm (Llama, Qwen, Gemma, Phi-3): every part.
  * LayerNorm with mean subtraction and bias (OPT, GPT-2): QuaRot's step first. Every write into the residual
    stream is made mean-free (embedding rows, output-linear columns and biases; only LayerNorms read the
    stream and they subtract the mean anyway), the norms' weights and biases fold into the linears after them
    (a bias the head cannot take stays in the final norm as b / w), and the rotation is made to fix the
    all-ones direction (``mean_preserving``: Q 1 = 1), so the rotated stream stays mean-free and each
    nn.LayerNorm computes exactly what an RMSNorm would: the modules, the checkpoint layout and the
    compressed-tensors export stay standard.
  * Sandwich post-norms (Gemma 2/3) and post-LN encoders (BERT, RoBERTa): the residual rotation would change
    the function, so only the per-head v -> o and the online down_proj rotations apply (``fit_rotation``).
"""
from __future__ import annotations

import functools
import logging
import math

import torch
from torch import nn

from ..arch import get_adapter
from ..errors import SysqError
from .plan import Rotate

log = logging.getLogger(__name__)


# ---- Hadamard / orthogonal building blocks ------------------------------------------------------
def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, int(q ** 0.5) + 1))


@functools.lru_cache(maxsize=None)
def paley(q: int) -> torch.Tensor:
    """Paley construction I: a Hadamard matrix of order q+1 for a prime q = 3 (mod 4), entries +-1."""
    if not (_is_prime(q) and q % 4 == 3):
        raise ValueError(f"Paley I needs a prime q = 3 mod 4, got {q}")
    residues = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0] + [1 if a in residues else -1 for a in range(1, q)], dtype=torch.float64)
    idx = torch.arange(q)
    jac = chi[(idx.view(1, -1) - idx.view(-1, 1)) % q]          # Jacobsthal: Q[i,j] = chi(j - i)
    s = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = jac
    return s + torch.eye(q + 1, dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


_PALEY_ORDERS = [q + 1 for q in range(3, 400) if _is_prime(q) and q % 4 == 3 and (q + 1) & q]   # not 2^k


def _paley_cover(m: int, twos: int, depth: int = 3):
    """Paley orders whose odd parts multiply to m, using at most `twos` factors of two; [] for m=1."""
    if m == 1:
        return []
    if depth == 0:
        return None
    for order in _PALEY_ORDERS:
        odd, t = order, 0
        while odd % 2 == 0:
            odd, t = odd // 2, t + 1
        if m % odd == 0 and t <= twos:
            rest = _paley_cover(m // odd, twos - t, depth - 1)
            if rest is not None:
                return [order] + rest
    return None


@functools.lru_cache(maxsize=None)
def factors(n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Orthonormal factors (float64) whose Kronecker product is the n x n rotation (see module doc)."""
    m, twos = n, 0
    while m % 2 == 0:
        m, twos = m // 2, twos + 1
    blocks = []
    cover = _paley_cover(m, twos)
    if cover is None:
        g = torch.Generator().manual_seed(seed)
        qm, r = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
        blocks.append((qm * torch.sign(torch.diagonal(r))).contiguous())
        log.info("rotate: no Hadamard of order %d found; using a seeded random orthogonal %dx%d block", n, m, m)
    else:
        for order in cover:
            blocks.append(paley(order - 1) / math.sqrt(order))
            twos -= int(math.log2(order & -order))
    if twos:
        blocks.append(sylvester(2 ** twos) / math.sqrt(2 ** twos))
    return tuple(blocks)


def kron_all(mats) -> torch.Tensor:
    out = torch.ones(1, 1, dtype=torch.float64)
    for a in mats:
        out = torch.kron(out, a)
    return out


def rotation(n: int, seed: int = 0) -> torch.Tensor:
    """The dense n x n orthogonal rotation (float64)."""
    return kron_all(factors(n, seed))


def apply_kron(x: torch.Tensor, mats) -> torch.Tensor:
    """x @ (A1 (x) A2 (x) ...) without forming the product: one small matmul per factor."""
    shape = x.shape
    sizes = [a.shape[0] for a in mats]
    y = x.reshape(-1, *sizes)
    for k, a in enumerate(mats):
        # one 2-D matmul per factor: matmul on the moved (non-contiguous) view would expand the factor to a batch
        # per token and run bmm (on a CPU a quarter of w4a4's learned step, with the expand's backward)
        t = torch.movedim(y, k + 1, -1)
        y = torch.movedim((t.reshape(-1, sizes[k]) @ a.to(y.dtype)).reshape(t.shape), -1, k + 1)
    return y.reshape(shape)


class OnlineRotation:
    """Forward pre-hook x -> x @ Q (Q as Kronecker factors) on a linear's input. `carry_over`: when the
    quant engine replaces the linear (LinearRef.replace), the hook moves to the replacement."""

    carry_over = True

    def __init__(self, mats):
        self.mats = [a.float() for a in mats]
        self._on: dict = {}            # the factors on each device seen (a host-to-device copy per call would wait)

    def __call__(self, _module, args):
        x = args[0]
        if x.device not in self._on:
            self._on[x.device] = [a.to(x.device) for a in self.mats]
        return (apply_kron(x, self._on[x.device]).to(x.dtype),) + tuple(args[1:])


# ---- the transform ------------------------------------------------------------------------------
PARTS = ("residual", "heads", "down")


def check_rotatable(model, cfg: Rotate | None = None) -> None:
    """Raise, naming the reason, when a part `cfg` asks for would change this model's function."""
    cfg = cfg or Rotate()
    ad = get_adapter(model)
    for part, why in ad.rotations().items():
        if getattr(cfg, part) and why is not None:
            raise SysqError(f"the {part} rotation is not function-preserving for {ad.name}: {why}. Rotate the parts "
                            f"that are (Rotate({part}=False)), or use smooth / preserve-tokens")


def fit_rotation(cfg: Rotate, model) -> tuple[Rotate | None, list[str]]:
    """`cfg` narrowed to the parts this model's family keeps exact (None when no part is left), with a note
    per dropped part: `rotate` in a plan then means "every rotation that keeps this model's function"."""
    caps = get_adapter(model).rotations()
    dropped = [p for p in PARTS if getattr(cfg, p) and caps[p] is not None]
    notes = [f"rotate: no {p} rotation for {get_adapter(model).name} ({caps[p]})" for p in dropped]
    for p in dropped:
        setattr(cfg, p, False)
    return (cfg if any(getattr(cfg, p) for p in PARTS) else None), notes


def _residual_norms(ad, layers=None, outside: bool = True):
    """(norm, the linears it feeds) for every norm on the residual path of `layers` (default: all), and with
    `outside` the final norm with the head, last."""
    pairs = [(norm, [m for _, m in lins]) for i in (range(ad.num_layers) if layers is None else layers)
             for norm, lins in ((ad.attn_norm(i), ad.attn_inputs(i)), (ad.mlp_norm(i), ad.mlp_inputs(i)))]
    return pairs + ([(ad.final_norm(), [ad.lm_head()])] if outside else [])


@torch.no_grad()
def center_writers(model, layers=None, outside: bool = True) -> None:
    """Make every write into the residual stream mean-free over channels (embeddings' rows, the output linears'
    columns and biases). Only LayerNorms read the stream and each subtracts the mean anyway, so the function is
    unchanged, and from then on the norms' mean subtraction is a no-op (QuaRot's LayerNorm -> RMSNorm step).
    layers: only those decoder layers' writers; outside: also the embeddings."""
    ad = get_adapter(model)
    if outside:
        untie_lm_head(model)                 # the head reads the final norm's output, not the stream
        for emb in ad.embeddings():
            emb.weight.sub_(emb.weight.mean(1, keepdim=True))
    for i in range(ad.num_layers) if layers is None else layers:
        for lin in (ad.output_linear(i, "attn"), ad.down(i)):
            lin.weight.sub_(lin.weight.mean(0, keepdim=True))
            if lin.bias is not None:
                lin.bias.sub_(lin.bias.mean())


@torch.no_grad()
def fuse_norms(model, layers=None, outside: bool = True) -> list[nn.Module]:
    """Fold every residual-path norm's weight (and LayerNorm's bias) into the linears after it; the norms become
    plain RMSNorm (LayerNorm: plain x / std once `center_writers` ran). A bias the linears cannot take (a head
    without bias) stays in the norm as b / w. Returns the norms that keep a bias (it lives in the residual basis).
    layers: only those decoder layers' norms; outside: also the final norm into the (untied) lm_head."""
    ad = get_adapter(model)
    if outside:
        untie_lm_head(model)
    kept = []
    for norm, lins in _residual_norms(ad, layers, outside):
        w = ad.norm_weight(norm).double()
        b = getattr(norm, "bias", None)
        fold_bias = b is not None and all(lin.bias is not None for lin in lins)
        for lin in lins:
            if fold_bias:
                lin.bias.add_((lin.weight.double() @ b.double()).to(lin.bias.dtype))
            lin.weight.copy_((lin.weight.double() * w).to(lin.weight.dtype))
        if b is not None:
            if fold_bias:
                b.zero_()
            else:
                if bool((w.abs() < 1e-8).any()):
                    raise SysqError(f"a LayerNorm of {ad.name} has a zero weight and a bias its linears cannot take; "
                                    "rotation cannot fold it. Use smooth or preserve-tokens")
                b.copy_((b.double() / w).to(b.dtype))
                kept.append(norm)
        ad.set_norm_weight(norm, torch.ones_like(norm.weight))
    return kept


def untie_lm_head(model) -> None:
    ad = get_adapter(model)
    head, emb = ad.lm_head(), ad.embeddings()[0]
    if head.weight.data_ptr() == emb.weight.data_ptr():
        head.weight = nn.Parameter(head.weight.detach().clone())
        model.config.tie_word_embeddings = False
        if hasattr(model.config, "get_text_config"):
            model.config.get_text_config().tie_word_embeddings = False


def mean_preserving(q: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """An orthogonal Q' with Q' 1 = 1 (a mean-free row x stays mean-free as xQ', so a LayerNorm's mean subtraction
    stays a no-op), as close to the Hadamard Q as that allows: Q with seeded random column signs D, then the
    Householder reflection that maps QD's image of the all-ones direction back onto it. The signs matter: a
    Hadamard maps 1 onto one coordinate, and the reflection alone would leave one channel unrotated; with them
    every entry stays within a few times 1/sqrt(n) (the spreading is kept)."""
    n = q.shape[0]
    g = torch.Generator().manual_seed(seed)
    q = q * (torch.randint(0, 2, (n,), generator=g).to(q.dtype) * 2 - 1)
    v = torch.full((n,), n ** -0.5, dtype=q.dtype)
    u = q @ v - v
    if float(u.norm()) < 1e-12:
        return q
    u = u / u.norm()
    return q - 2 * torch.outer(u, u @ q)


def residual_rotation(ad, seed: int = 0) -> torch.Tensor:
    """The residual stream's Q (float64, CPU): the Hadamard rotation, mean-preserving for LayerNorm families."""
    q = rotation(ad.hidden_size, seed)
    return mean_preserving(q, seed) if ad.family.norm == "layernorm" else q


def _right(lin: nn.Linear, q: torch.Tensor, device=None) -> None:
    """Input side: W -> W Q, computed on `device` (default: where W is)."""
    dev = lin.weight.device if device is None else device
    lin.weight.copy_((lin.weight.to(dev).double() @ q.to(dev)).to(lin.weight.dtype))


def _left(lin: nn.Linear, q: torch.Tensor) -> None:
    """Output side: W -> Q^T W, b -> b Q (rows of W are output channels)."""
    q = q.to(lin.weight.device)
    lin.weight.copy_((q.t() @ lin.weight.double()).to(lin.weight.dtype))
    if lin.bias is not None:
        lin.bias.copy_((lin.bias.double() @ q).to(lin.bias.dtype))


def _rotate_bias(norm: nn.Module, q: torch.Tensor) -> None:
    """A norm bias kept by fuse_norms lives in the residual basis: b -> b Q."""
    norm.bias.copy_((norm.bias.double() @ q.to(norm.bias.device)).to(norm.bias.dtype))


@torch.no_grad()
def rotate(model, cfg: Rotate | None = None) -> dict:
    """Rotate `model` in place (full-precision output unchanged up to float error). Returns a summary.
    Raises SysqError for a part this family cannot take (see Adapter.rotations; `fit_rotation` narrows a plan)."""
    cfg = cfg or Rotate()
    summary = rotate_outside(model, cfg)
    cache: dict = {}
    for i in range(get_adapter(model).num_layers):
        rotate_layer(model, i, cfg, cache)
    log.info("rotate %s: %s", get_adapter(model).name, summary)
    return summary


@torch.no_grad()
def rotate_outside(model, cfg: Rotate, device=None) -> dict:
    """The part of rotate() outside the decoder layers: embeddings (centered for LayerNorm families), final norm,
    lm_head, the online down_proj transform, computed on `device` (default: where each weight is).
    rotate_layer(model, i, cfg) does layer i (sysq.sequential runs it with the layer on the device)."""
    check_rotatable(model, cfg)
    ad = get_adapter(model)
    summary = {}
    if cfg.residual:
        layernorm = ad.family.norm == "layernorm"
        if layernorm:
            center_writers(model, layers=[])
        kept = fuse_norms(model, layers=[])
        q = residual_rotation(ad, cfg.seed)
        for emb in ad.embeddings():
            _right(emb, q, device)          # an embedding table is [tokens, hidden]: rows rotate like inputs
        _right(ad.lm_head(), q, device)
        for norm in kept:
            _rotate_bias(norm, q)
        summary["residual"] = [a.shape[0] for a in factors(ad.hidden_size, cfg.seed)] + \
            (["mean-preserving"] if layernorm else [])
    if cfg.heads:
        summary["heads"] = [ad.head_dim]
    if cfg.down:
        mats = factors(ad.down(0).in_features, cfg.seed)
        install_online(model, mats)
        summary["down"] = [a.shape[0] for a in mats]
    return summary


@torch.no_grad()
def rotate_layer(model, i: int, cfg: Rotate, cache: dict | None = None) -> None:
    """Decoder layer i's part of rotate(): its writers centered (LayerNorm families), its norms fused, its residual
    readers and writers rotated, v -> o per head, the offline half of the down_proj rotation. `cache` keeps the
    dense rotations between layers."""
    ad = get_adapter(model)
    o = ad.output_linear(i, "attn")
    dev = o.weight.device
    cache = {} if cache is None else cache

    def dense(key, make) -> torch.Tensor:
        if (key, dev) not in cache:
            cache[(key, dev)] = make().to(dev)
        return cache[(key, dev)]

    if cfg.residual:
        if ad.family.norm == "layernorm":
            center_writers(model, layers=[i], outside=False)
        kept = fuse_norms(model, layers=[i], outside=False)
        q = dense("residual", lambda: residual_rotation(ad, cfg.seed))
        for _, m in ad.attn_inputs(i) + ad.mlp_inputs(i):
            _right(m, q)
        _left(o, q)
        _left(ad.down(i), q)
        for norm in kept:
            _rotate_bias(norm, q)
    if cfg.heads:
        hd = ad.head_dim
        h = dense(("heads", hd), lambda: rotation(hd, cfg.seed))
        v, rows = ad.v_rows(i)
        w = v.weight[rows].double().view(-1, hd, v.in_features)
        v.weight[rows] = torch.einsum("dk,hdi->hki", h, w).reshape(-1, v.in_features).to(v.weight.dtype)
        if v.bias is not None:
            v.bias[rows] = (v.bias[rows].double().view(-1, hd) @ h).flatten().to(v.bias.dtype)
        wo = o.weight.double().view(o.out_features, -1, hd)
        o.weight.copy_((wo @ h).reshape(o.weight.shape).to(o.weight.dtype))
    if cfg.down:
        n = ad.down(i).in_features
        _right(ad.down(i), dense(("down", n), lambda: rotation(n, cfg.seed)))


def install_online(model, mats=None) -> None:
    """(Re)install the online down_proj-input rotation on whatever module sits at each down position
    now (call again after the quant engine swaps modules)."""
    ad = get_adapter(model)
    if mats is None:
        mats = getattr(model, "_sysq_down_rotation", None)
        if mats is None:
            return
    object.__setattr__(model, "_sysq_down_rotation", mats)
    for i in range(ad.num_layers):
        mod = ad.down(i)
        old = getattr(mod, "_sysq_online_handle", None)
        if old is not None:
            old.remove()
        handle = mod.register_forward_pre_hook(OnlineRotation(mats))
        object.__setattr__(mod, "_sysq_online_handle", handle)
