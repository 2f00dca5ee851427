"""Text sources -> token windows.

Named sets resolve in this order: an explicit path, ``$SYSQ_DATA``, ``../shared/data`` beside the repo (or
beside the working directory), then the Hugging Face hub. Windows are non-overlapping; each holds the
model's BOS (when it has one) followed by `seqlen` text tokens. ``seed=None`` takes the first windows
(evaluation); an integer seed draws a seeded random sample (calibration).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import DataNotFound, SysqError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NamedSet:
    relpath: str                      # relative to a data root
    hub: tuple | None = None          # (dataset, config, split, text field) for datasets.load_dataset
    field: str | None = None          # jsonl field holding the text


NAMED_SETS = {
    "wikitext2": NamedSet("wikitext-2-raw/wiki.test.raw", ("Salesforce/wikitext", "wikitext-2-raw-v1", "test", "text")),
    "wikitext2-valid": NamedSet("wikitext-2-tokens/valid.txt",
                                ("Salesforce/wikitext", "wikitext-2-v1", "validation", "text")),
    "wikitext2-test-tokens": NamedSet("wikitext-2-tokens/test.txt",
                                      ("Salesforce/wikitext", "wikitext-2-v1", "test", "text")),
    "piqa-goals": NamedSet("piqa/dev.jsonl", None, field="goal"),
}
CALIBRATION_SET = "wikitext2-valid"   # never the evaluation text


def data_roots() -> list[Path]:
    """Candidate data folders, in resolution order after an explicit path."""
    roots = []
    if os.environ.get("SYSQ_DATA"):
        roots.append(Path(os.environ["SYSQ_DATA"]))
    repo = Path(__file__).resolve().parents[1]
    roots += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    seen, out = set(), []
    for r in roots:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def resolve(name: str) -> Path:
    """The local file for a named set (or a path). Raises DataNotFound listing where it looked."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if name not in NAMED_SETS:
        raise DataNotFound(f"data {name!r} is neither a file nor a named set ({', '.join(NAMED_SETS)})")
    rel = NAMED_SETS[name].relpath
    for root in data_roots():
        if (root / rel).is_file():
            return root / rel
    raise DataNotFound(f"named set {name!r} ({rel}) not found under " + ", ".join(str(r) for r in data_roots())
                       + ". Set SYSQ_DATA to a folder holding it, or pass the file path")


def load_text(source: str, field: str | None = None) -> str:
    """The text of a named set, a .txt/.raw file or a .jsonl file (one record's `field` per line)."""
    named = NAMED_SETS.get(source)
    try:
        path = resolve(source)
    except DataNotFound:
        if named is None or named.hub is None:
            raise
        return _hub_text(source, named)
    field = field or (named.field if named else None)
    raw = path.read_bytes().decode("utf-8").replace("\r\n", "\n")
    if path.suffix == ".jsonl":
        raw = "\n".join(_jsonl_text(line, field, path) for line in raw.splitlines() if line.strip())
    if not raw.strip():
        raise SysqError(f"{path} holds no text; pass a non-empty text or jsonl file")
    return raw


def _jsonl_text(line: str, field: str | None, path: Path) -> str:
    rec = json.loads(line)
    if field:
        if field not in rec:
            raise SysqError(f"{path}: record has no field {field!r} (fields: {', '.join(rec)})")
        return str(rec[field])
    if "text" in rec:
        return str(rec["text"])
    return " ".join(str(v) for v in rec.values() if isinstance(v, str))


def _hub_text(name: str, named: NamedSet) -> str:
    dataset, config, split, key = named.hub
    try:
        from datasets import load_dataset
        rows = load_dataset(dataset, config, split=split)[key]
    except Exception as e:  # offline, or the datasets package missing: say what was tried
        raise DataNotFound(f"named set {name!r} is not on disk ({named.relpath} under "
                           f"{', '.join(str(r) for r in data_roots())}) and the hub load of {dataset} failed: {e}. "
                           "Set SYSQ_DATA or pass the file path") from e
    return "".join(rows)


def bos_id(tokenizer) -> int | None:
    """The BOS id to prepend (an encoder's [CLS] when it has no BOS), or None when the model has neither."""
    bid = getattr(tokenizer, "bos_token_id", None)
    return bid if bid is not None else getattr(tokenizer, "cls_token_id", None)


@dataclass
class Windows:
    """Token windows [n, seqlen (+1 with BOS)] plus the settings that made them."""

    ids: torch.Tensor
    source: str
    seqlen: int
    bos: str | None
    seed: int | None
    total_windows: int                       # windows the text holds, before limit or sampling
    starts: list = field(default_factory=list)  # token offset of each window in the text

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __iter__(self):
        return iter(self.ids)

    def batches(self, batch_size: int):
        for i in range(0, len(self), batch_size):
            yield self.ids[i:i + batch_size]

    @property
    def tokens(self) -> int:
        """Predicted text tokens: every text token (BOS predicts the first)."""
        return len(self) * self.seqlen if self.bos is not None else len(self) * (self.seqlen - 1)

    def settings(self) -> dict:
        return {"dataset": self.source, "seqlen": self.seqlen, "bos": self.bos, "windows": len(self),
                "seed": self.seed, "tokens": self.tokens}


def tokenize(text: str, tokenizer) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def windows(source: str, tokenizer, n: int | None = None, seqlen: int = 512, seed: int | None = None,
            bos: bool = True, field: str | None = None, offset: int = 0) -> Windows:
    """Non-overlapping windows of `seqlen` text tokens from `source`, BOS prepended when the model has one.

    n=None takes every window; seed=None takes the first n (evaluation) after skipping `offset` windows (a
    second, disjoint evaluation set: offset=40 takes windows 40..79), an int seed samples n at random.
    """
    if offset < 0 or (offset and seed is not None):
        raise SysqError(f"offset={offset}: a window offset is a count >= 0 and applies to the first-n selection "
                        "(seed None), not to a random sample")
    if seqlen < 2:
        raise SysqError(f"seqlen must be >= 2, got {seqlen}")
    if n is not None and n < 1:
        raise SysqError(f"the number of windows must be >= 1, got {n}")
    ids = tokenize(load_text(source, field), tokenizer)
    total = ids.numel() // seqlen
    if total == 0:
        raise SysqError(f"{source!r} has {ids.numel()} tokens, fewer than one window of {seqlen}; "
                        "use a smaller --seqlen or a longer text")
    chunks = ids[: total * seqlen].view(total, seqlen)
    if offset >= total:
        raise SysqError(f"{source!r} holds {total} windows of {seqlen} tokens; offset {offset} leaves none")
    if seed is None:
        order = list(range(offset, total if n is None else min(offset + n, total)))
    else:
        g = torch.Generator().manual_seed(seed)
        order = sorted(torch.randperm(total, generator=g)[: total if n is None else min(n, total)].tolist())
    if n is not None and n > total - offset:
        log.warning("%s holds %d windows of %d tokens after offset %d; using them instead of %d", source,
                    total - offset, seqlen, offset, n)
    chunks = chunks[order]
    bid = bos_id(tokenizer) if bos else None
    if bid is not None:
        chunks = torch.cat([torch.full((len(order), 1), bid, dtype=torch.long), chunks], dim=1)
    bos_text = tokenizer.convert_ids_to_tokens(bid) if bid is not None else None
    return Windows(chunks, source, seqlen, bos_text, seed, total, [i * seqlen for i in order])


def calibration(tokenizer, n: int = 32, seqlen: int = 512, seed: int = 0, source: str = CALIBRATION_SET) -> Windows:
    """The default calibration sample: seeded windows of WikiText-2 valid (never the evaluation text)."""
    return windows(source, tokenizer, n=n, seqlen=seqlen, seed=seed)
