"""The outlier thresholds (DESIGN.md section 2), in one dataclass printed with every report."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..errors import SysqError


@dataclass(frozen=True)
class Thresholds:
    massive_abs: float = 100.0        # Sun et al.: massive when |x| > 100 ...
    massive_rel: float = 1000.0       # ... and |x| >= 1000 x median |h| of that tensor (per window)
    input_abs: float = 6.0            # absolute floor of the massive test at linear inputs (LLM.int8 magnitude):
                                      # normalised inputs rarely pass 100, the 1000x-median test still applies
    token_mean_ratio: float = 1000.0  # An et al.: token outlier when max_c |h[t,c]| > 1000 x mean |h|
    token_ratio: float = 64.0         # PrefixQuant: token max / median token max > 64
    int8: float = 6.0                 # LLM.int8 outlier feature magnitude at matmul inputs
    attention_share: float = 0.1      # An et al.: key receives >= 0.1 x T attention mass (summed over queries)
    sink_eps: float = 0.3             # Gu et al.: head is a sink head when mean attention to token 0 > eps
    weight_ratio: float = 10.0        # weight outlier column: max/mean >= 10 x the linear's median column ratio
    vanish_ratio: float = 0.5         # vanishing layer: |h_out| <= 0.5 |h_in| at a tracked outlier
    top_k: int = 16                   # top values kept per site
    median_samples: int = 8192        # median |h| per window estimated from ~8192 evenly strided values

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Thresholds":
        if d is None:
            return cls()
        if isinstance(d, Thresholds):
            return d
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise SysqError(f"unknown threshold(s) {bad}; known: {sorted(known)}")
        return cls(**d)


def parse_thresholds(items: list[str] | None) -> Thresholds:
    """["massive_abs=50", "top_k=8"] -> Thresholds (CLI --threshold NAME=VALUE)."""
    over = {}
    types = {f.name: f.type for f in fields(Thresholds)}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or name not in types:
            raise SysqError(f"bad --threshold {item!r}: use NAME=VALUE with NAME one of {sorted(types)}")
        try:
            over[name] = int(value) if types[name] in ("int", int) else float(value)
        except ValueError:
            raise SysqError(f"bad --threshold {item!r}: {value!r} is not a number") from None
    return Thresholds(**over)
