"""The family matrix (docs/FAMILIES.md), cell by cell, on tiny random models with a planted BOS / [CLS] outlier:
detect finds it; auto (measured) plans, mitigates without changing the float function, quantizes, saves and reloads
with identical logits for every family x recipe; each mitigation method applies on every family; the
compressed-tensors export reloads in plain transformers, or is refused with its reason."""
import pytest
import torch

from family_cells import (BOS, FAMILIES, FUNCTION_PRESERVING, METHODS, RECIPES, auto_cell, detect_cell, export_cell,
                          method_cell)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family", FAMILIES)
def test_detect_finds_the_planted_outlier_token(family):
    cell = detect_cell(family)
    assert cell["top_token_id"] == BOS


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_auto_plan_mitigate_quantize_save_reload(family, recipe, tmp_path):
    cell = auto_cell(family, recipe, tmp_path / "q")
    if recipe in ("w4a16", "w4a8"):     # INT4 weights, A16 / A8: learned rounding alone, nothing searched (plan.Learned)
        assert cell["candidates"] is None and cell["rounding"] == "learned"
    else:
        assert cell["chosen"] in cell["candidates"] and cell["candidates"][-1] in ("none", "gptq")   # the baseline
    assert cell["float_err"] < 1e-3              # the chosen plan's transforms keep the float function (float32
    #                                              round-off on the planted ~1e3-1e4 activations)
    assert cell["identical"]                     # sysq.load gives back the same logits
    assert cell["finite"]                        # quantized, and not broken


@pytest.mark.parametrize("family", FAMILIES)
def test_each_method_applies(family):
    for method in METHODS:
        cell = method_cell(family, method)
        assert cell["finite"], method
        if method in FUNCTION_PRESERVING:      # float32 round-off on the planted ~1e3-1e4 activations
            assert cell["float_err"] < 1e-3, method
        if method == "smoothquant":              # norm -> linear folds only: none is exact after a post-LN norm
            assert (cell["smoothed"] == 0) == (family in ("bert", "roberta"))
        if method == "rotate":                   # every family rotates where the function is kept
            assert {"heads", "down"} <= set(cell["rotated"])
            assert ("residual" in cell["rotated"]) == (family not in ("gemma2", "gemma3_text", "bert", "roberta"))


@pytest.mark.parametrize("recipe", ["w8a8-static", "w8a8", "w4a16", "w4a8"])
@pytest.mark.parametrize("family", FAMILIES)
def test_export_to_compressed_tensors(family, recipe, tmp_path):
    cell = export_cell(family, recipe, tmp_path / "ct")
    if family == "gpt2":
        assert "Conv1D" in cell["refused"]
    elif recipe == "w4a8":
        assert "int8 W8A8" in cell["refused"]    # no compressed-tensors scheme for INT4 weights with INT8 inputs
    elif recipe.startswith("w8a8"):   # dynamic scales (w8a8, and w8a8-static's token-scales, the engine form of
        #                              preserve-tokens): compressed-tensors divides amax by 127.5, sysq by 127
        if (family, recipe) == ("opt", "w8a8") and cell["err"] >= 0.1:
            pytest.xfail("compressed-tensors (0.20) computes a 'token' dynamic scale over every dim but the first "
                         "two, so on a 2-D input (OPT's decoder layer flattens tokens before fc1/fc2) it is one scale "
                         "per tensor: test_compressed_tensors_token_scale_is_per_tensor_on_2d_inputs")
        assert cell["err"] < 0.1
    else:
        assert cell["err"] < 1e-5


def test_compressed_tensors_token_scale_is_per_tensor_on_2d_inputs():
    """Why OPT's dynamic W8A8 export differs from sysq in plain transformers: OPT feeds fc1/fc2 a [tokens, hidden]
    input, and compressed-tensors' per-token strategy reduces over no dim there (torch reads an empty dim tuple as
    every dim), so the outlier token sets one scale for all. vLLM quantizes per row of its flattened input, as sysq
    does. When this fails, upstream changed: drop the OPT xfail in test_export_to_compressed_tensors."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.utils import compute_dynamic_scales_and_zp
    args = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True)
    x = torch.randn(6, 16)
    x[0] *= 100                                   # an outlier token
    s2 = compute_dynamic_scales_and_zp(x, args, module=torch.nn.Linear(16, 4))[0]
    s3 = compute_dynamic_scales_and_zp(x[None], args, module=torch.nn.Linear(16, 4))[0]
    assert s3.flatten().unique().numel() == 6      # 3-D input: one scale per token
    assert s2.flatten().unique().numel() == 1      # 2-D input: one scale for every token
