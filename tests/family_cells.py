"""The cells of the family matrix (docs/FAMILIES.md), each run on a tiny random model of one family with a planted
BOS / [CLS] outlier: tests/test_families.py asserts them, scripts/family_matrix.py prints the matrix."""
import copy
import functools

import torch

import sysq
from sysq.errors import SysqError
from tiny_models import FAMILY_CONFIGS, VOCAB, plant_bos_outlier, tiny_model

FAMILIES = list(FAMILY_CONFIGS)
RECIPES = ["w8a8-static", "w8a8", "w4a16", "w4a8"]
METHODS = ["smooth", "smoothquant", "clip", "preserve-tokens", "preserve-channels", "rotate", "gptq"]
FUNCTION_PRESERVING = ("smooth", "smoothquant", "rotate")
METHOD_RECIPE = "w4a8"          # 4-bit weights and quantized activations: every method has something to act on
BOS = 1


def _ids(n: int, seed: int) -> torch.Tensor:
    ids = torch.randint(3, VOCAB, (n, 24), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = BOS
    return ids


CALIB, TEST = _ids(6, 0), _ids(2, 1)


def planted(family: str):
    return plant_bos_outlier(tiny_model(family), bos=BOS)


@functools.lru_cache(maxsize=None)
def report_of(family: str):
    return sysq.detect(planted(family), CALIB, quiet=True)


@torch.no_grad()
def logits(model) -> torch.Tensor:
    return model(input_ids=TEST).logits


def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def detect_cell(family: str) -> dict:
    r = report_of(family)
    toks = r.outlier_tokens()
    return {"top_token_id": toks[0]["token_id"] if toks else None, "family": r.model["family"]}


def auto_cell(family: str, recipe: str, folder) -> dict:
    """detect -> auto plan -> mitigate -> quantize -> save -> reload. float_err: the chosen plan's
    function-preserving part (everything but clipping, which changes weights on purpose) on a copy."""
    model, report = planted(family), report_of(family)
    ref = logits(model)
    p = sysq.plan(report, recipe)
    keep_model = copy.deepcopy(model)
    recipe_ = sysq.mitigate(model, p, CALIB, report=report, quiet=True)
    keep = copy.deepcopy(p)
    keep.clip, keep.search = None, None
    sysq.mitigate(keep_model, keep, CALIB, report=report, quiet=True)
    float_err = rel(logits(keep_model), ref)
    sysq.quantize(model, recipe_, CALIB, quiet=True)
    out = sysq.save(model, folder)
    loaded, _ = sysq.load(str(out))
    q = logits(model)
    return {"chosen": p.search and p.search.chosen, "candidates": p.search and p.search.candidates,
            "rounding": p.rounding, "float_err": float_err,
            "identical": torch.equal(q, logits(loaded)), "quant_err": rel(q, ref), "finite": bool(torch.isfinite(q).all())}


def method_cell(family: str, method: str) -> dict:
    """One method on its own (recipe METHOD_RECIPE): applies, keeps the float function when it is a transform,
    quantizes to finite logits."""
    model, report = planted(family), report_of(family)
    ref = logits(model)
    p = sysq.plan(report, METHOD_RECIPE, method)
    if p.smooth is not None and p.smooth.alpha is None:
        p.smooth.alphas = [0.25, 0.5, 0.75]       # the grid's size does not matter here
    recipe = sysq.mitigate(model, p, CALIB, report=report, quiet=True)
    float_err = rel(logits(model), ref)
    sysq.quantize(model, recipe, CALIB, quiet=True)
    q = logits(model)
    return {"float_err": float_err, "finite": bool(torch.isfinite(q).all()), "quant_err": rel(q, ref),
            "rotated": sorted(k for k in ("residual", "heads", "down") if p.rotate and getattr(p.rotate, k)),
            "smoothed": len(p.smooth.chosen) if p.smooth else None,
            "notes": p.notes}


def export_cell(family: str, recipe: str, folder) -> dict:
    """auto restricted to the engine -> quantize -> compressed-tensors -> plain transformers. err: max logit
    difference relative to sysq's; `refused`: the reason sysq gives instead."""
    from sysq.quant.export import load_with_transformers
    model, report = planted(family), report_of(family)
    p = sysq.plan(report, recipe, target="engine")
    r = sysq.mitigate(model, p, CALIB, report=report, quiet=True)
    fl = logits(model)
    sysq.quantize(model, r, CALIB, quiet=True)
    try:
        out = sysq.save(model, folder, format="compressed-tensors")
    except SysqError as e:
        return {"refused": str(e).split("\n  - ", 1)[-1]}
    again = load_with_transformers(out, quiet=True)
    return {"err": rel(logits(again), logits(model)), "qerr": rel(logits(model), fl),
            "chosen": p.search and p.search.chosen}
