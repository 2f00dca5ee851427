"""Perplexity over token windows, following DESIGN.md section 3.

Token-level NLL over every predicted token (BOS predicts the first text token), summed over windows,
exp(mean). The result carries every setting that produced it.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sysq.data import Windows
from sysq.errors import NonFiniteError


@dataclass
class PerplexityResult:
    ppl: float
    nll: float                 # mean NLL per predicted token (nats)
    tokens: int
    windows: int
    seqlen: int
    bos: str | None
    dataset: str
    dtype: str
    model: str | None = None
    recipe: str | None = None
    device: str = "cpu"
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"perplexity {self.ppl:.4f}  (model={self.model}, dataset={self.dataset}, seqlen={self.seqlen}, "
                f"bos={self.bos}, windows={self.windows}, tokens={self.tokens}, dtype={self.dtype}, "
                f"recipe={self.recipe}, device={self.device}, {self.seconds:.1f}s)")


def default_batch_size(seqlen: int) -> int:
    """Batching helps on CPU; keep each batch near 2048 tokens so the logits stay small."""
    return max(1, 2048 // seqlen)


@torch.no_grad()
def perplexity(model, windows: Windows, batch_size: int | None = None, quiet: bool = False,
               model_name: str | None = None, recipe: str | None = None) -> PerplexityResult:
    batch_size = batch_size or default_batch_size(windows.seqlen)
    device = next(model.parameters()).device
    nll_sum, count = 0.0, 0
    start = time.perf_counter()
    bar = tqdm(total=len(windows), desc="perplexity", unit="win", disable=quiet)
    for batch in windows.batches(batch_size):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits
        # Upcast per batch: low-precision logits lose digits in log-softmax.
        nll = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
        if not torch.isfinite(nll):
            raise NonFiniteError(f"the loss is {nll.item()} on windows {count // (batch.shape[1] - 1)}+: the model "
                                 "produced NaN or inf logits (often a quantization scale of 0 or inf, or fp16 "
                                 "overflow); try dtype float32 or check the recipe")
        nll_sum += nll.item()
        count += batch[:, 1:].numel()
        bar.update(batch.shape[0])
    bar.close()
    mean = nll_sum / count
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    return PerplexityResult(ppl=math.exp(mean), nll=mean, tokens=count, windows=len(windows), seqlen=windows.seqlen,
                            bos=windows.bos, dataset=windows.source, dtype=dtype, model=model_name, recipe=recipe,
                            device=device.type, seconds=time.perf_counter() - start)
