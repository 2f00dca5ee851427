"""Token taxonomy of outlier tokens (An et al.): initial token, strong delimiter, weak-semantic, other."""
from __future__ import annotations

from operator import itemgetter

TYPES = ("initial", "delimiter", "weak_semantic", "other")
DELIMITERS = set(".,;:!?\n\"'()[]{}<>-–—…") | {"\\n", "``", "''", "@-@", "@,@", "@.@", "--"}
WEAK_SEMANTIC = {
    "the", "a", "an", "of", "and", "in", "to", "is", "was", "for", "on", "at", "by", "as", "with", "that", "it",
    "or", "be", "are", "from", "this", "its", "his", "her", "their", "he", "she", "they", "which", "<unk>",
}


def token_text(tokenizer, token_id: int) -> str:
    """Readable text of one token id (byte-level BPE markers turned back into spaces / newlines)."""
    if tokenizer is None:
        return f"#{token_id}"
    text = tokenizer.decode([token_id])
    if text == "" or text is None:
        text = tokenizer.convert_ids_to_tokens(token_id) or f"#{token_id}"
    return text


def token_type(text: str, pos: int, special: bool = False) -> str:
    """initial (position 0, BOS or not) | delimiter | weak_semantic | other."""
    if pos == 0:
        return "initial"
    s = text.strip()
    if special or s == "" or all(ch in DELIMITERS for ch in s) or s in DELIMITERS:
        return "delimiter"          # whitespace / newline / punctuation-only tokens
    if s.lower() in WEAK_SEMANTIC:
        return "weak_semantic"
    return "other"


class Namer:
    """Caches token texts and types for one tokenizer."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self._text: dict[int, str] = {}
        self._type: dict[tuple[int, bool], str] = {}
        self._tag: dict[tuple[int, bool], tuple[str, str]] = {}
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])

    def text(self, token_id: int) -> str:
        if token_id not in self._text:
            self._text[token_id] = token_text(self.tok, token_id)
        return self._text[token_id]

    def type(self, token_id: int, pos: int) -> str:
        key = (token_id, pos == 0)      # a report names thousands of records: one classification per token
        if key not in self._type:
            self._type[key] = token_type(self.text(token_id), pos, token_id in self.special)
        return self._type[key]

    def tag(self, token_id: int, pos: int) -> tuple[str, str]:
        """(text, type): what a report's record names, one lookup (a report makes thousands)."""
        key = (token_id, pos == 0)
        got = self._tag.get(key)
        if got is None:
            got = self._tag[key] = (self.text(token_id), self.type(token_id, pos))
        return got


def taxonomy(hits, namer: Namer) -> dict:
    """Counts per token type of one TokenHits, split into position 0 and the rest, with examples. Plain dicts (a
    report makes ~500 of these): the examples ordered as Counter.most_common orders them (count descending, ties
    in insertion order: a stable sort)."""
    counts: dict[str, int] = {}
    examples: dict[str, dict] = {t: {} for t in TYPES}
    for tid, n in hits.initial_ids.items():
        counts["initial"] = counts.get("initial", 0) + n
        ex = examples["initial"]
        text = namer.text(tid)
        ex[text] = ex.get(text, 0) + n
    for tid, n in hits.ids.items():
        t = namer.type(tid, pos=1)
        counts[t] = counts.get(t, 0) + n
        ex = examples[t]
        text = namer.text(tid)
        ex[text] = ex.get(text, 0) + n
    total = sum(counts.values())
    return {"total": total, "counts": {t: counts.get(t, 0) for t in TYPES},
            "share": {t: (counts.get(t, 0) / total if total else 0.0) for t in TYPES},
            "examples": {t: [{"token": s, "count": n} for s, n in
                             sorted(examples[t].items(), key=itemgetter(1), reverse=True)[:5]] for t in TYPES},
            "excluding_initial": {t: counts.get(t, 0) for t in TYPES if t != "initial"}}
