"""Masked-token perplexity for encoders (BERT, RoBERTa): how well the model fills in masked words.

Protocol (printed with every result):
  * text: the windows sysq.windows gives (WikiText-2 raw test by default), each [CLS] (or <s>) + `seqlen` text
    tokens, with [SEP] (</s>) appended when the tokenizer has one;
  * masked positions: in each window a seeded sample of round(mask_rate x seqlen) text positions (at least one;
    torch.Generator seeded with `seed` + the window's index, so every model sees the same positions), all
    replaced by the mask token in one forward pass, as in masked-LM training (no 80/10/10 replacement);
  * score: NLL of the true token at each masked position, summed over windows; perplexity = exp(mean NLL).
This is a pseudo-log-likelihood on a fixed sample (Salazar et al. 2020 mask one token per pass; masking 15% at
once costs one pass per window and is what the model was trained on). Only compare numbers with equal settings.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sysq.data import Windows
from sysq.errors import NonFiniteError, SysqError

PROTOCOL = ("masked-token perplexity: a seeded {rate:.0%} of each window's text positions masked at once "
            "([CLS] text [SEP]), NLL of the true tokens there")


@dataclass
class MaskedPerplexityResult:
    ppl: float
    nll: float                 # mean NLL per masked token (nats)
    masked: int                # masked tokens scored
    windows: int
    seqlen: int
    mask_rate: float
    seed: int
    dataset: str
    dtype: str
    model: str | None = None
    recipe: str | None = None
    device: str = "cpu"
    seconds: float = 0.0
    protocol: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"masked perplexity {self.ppl:.4f}  (model={self.model}, dataset={self.dataset}, seqlen={self.seqlen}, "
                f"windows={self.windows}, masked={self.masked} ({self.mask_rate:.0%}, seed {self.seed}), "
                f"dtype={self.dtype}, recipe={self.recipe}, device={self.device}, {self.seconds:.1f}s)\n"
                f"  protocol: {self.protocol}")


def masked_positions(seqlen: int, rate: float, seed: int, window: int) -> torch.Tensor:
    """The text positions (1-based: position 0 is [CLS]) masked in window `window`."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + window)
    k = max(1, round(rate * seqlen))
    return torch.randperm(seqlen, generator=g)[:k].sort().values + 1


@torch.no_grad()
def masked_perplexity(model, windows: Windows, tokenizer, mask_rate: float = 0.15, seed: int = 0,
                      batch_size: int = 4, quiet: bool = False, model_name: str | None = None,
                      recipe: str | None = None) -> MaskedPerplexityResult:
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise SysqError("masked perplexity needs a tokenizer with a mask token ([MASK] / <mask>); this one has none")
    if windows.bos is None:
        raise SysqError("masked perplexity expects windows that start with [CLS] / <s>: make them with bos=True")
    ids = windows.ids
    sep = getattr(tokenizer, "sep_token_id", None)
    if sep is not None:
        ids = torch.cat([ids, torch.full((len(ids), 1), sep, dtype=ids.dtype)], 1)
    limit = _max_length(model)
    if limit is not None and ids.shape[1] > limit:
        raise SysqError(f"windows of {ids.shape[1]} tokens ([CLS] + {windows.seqlen} + [SEP]) exceed the model's "
                        f"{limit} positions; use --seqlen {windows.seqlen - (ids.shape[1] - limit)} or less")
    device = next(model.parameters()).device
    nll_sum, count, start = 0.0, 0, time.perf_counter()
    bar = tqdm(total=len(ids), desc="masked perplexity", unit="win", disable=quiet)
    for b0 in range(0, len(ids), batch_size):
        batch = ids[b0:b0 + batch_size].clone()
        rows, cols = [], []
        for j in range(len(batch)):
            pos = masked_positions(windows.seqlen, mask_rate, seed, b0 + j)
            rows += [j] * len(pos)
            cols += pos.tolist()
        rows, cols = torch.tensor(rows), torch.tensor(cols)
        target = batch[rows, cols].clone()
        batch[rows, cols] = mask_id
        logits = model(input_ids=batch.to(device)).logits
        nll = F.cross_entropy(logits[rows, cols].float(), target.to(device), reduction="sum")
        if not torch.isfinite(nll):
            raise NonFiniteError(f"the masked-token loss is {nll.item()} on windows {b0}+: NaN or inf logits; "
                                 "try dtype float32 or check the recipe")
        nll_sum += nll.item()
        count += len(target)
        bar.update(len(batch))
    bar.close()
    mean = nll_sum / count
    return MaskedPerplexityResult(
        ppl=math.exp(mean), nll=mean, masked=count, windows=len(ids), seqlen=windows.seqlen, mask_rate=mask_rate,
        seed=seed, dataset=windows.source, dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
        model=model_name, recipe=recipe, device=device.type, seconds=time.perf_counter() - start,
        protocol=PROTOCOL.format(rate=mask_rate))


def _max_length(model) -> int | None:
    from sysq.arch import get_adapter
    return get_adapter(model).max_length
