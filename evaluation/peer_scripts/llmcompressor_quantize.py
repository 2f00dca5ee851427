"""Quantize a float folder with llm-compressor itself, in its own virtual environment (.venvs/llmcompressor).

    .venvs/llmcompressor/bin/python evaluation/peer_scripts/llmcompressor_quantize.py SPEC.json

SPEC: {"model": float HF folder, "windows": .pt file of token windows [n, seqlen] (sysq's calibration windows, so
every row of the grid calibrates on the same tokens), "scheme": one of SCHEMES, "out": output folder,
"group_size": for the W4A16 schemes}. Writes a compressed-tensors folder (what llm-compressor ships to vLLM) and
OUT/peer.json with the settings and the time. Standalone: it must not import sysq (different transformers).
"""
import json
import sys
import time

import torch


def recipe(scheme: str, group_size: int):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    int8_channel = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="channel")
    static = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="tensor", dynamic=False)
    w4 = dict(num_bits=4, type="int", strategy="group", group_size=group_size)

    def groups(weights, acts=None):
        return {"group_0": QuantizationScheme(targets=["Linear"], weights=weights, input_activations=acts)}

    ignore = ["lm_head"]
    if scheme == "sq-gptq-w8a8-static":        # SmoothQuant (0.8) + GPTQ, int8 static per-tensor activations
        return [SmoothQuantModifier(smoothing_strength=0.8),
                GPTQModifier(config_groups=groups(int8_channel, static), ignore=ignore)]
    if scheme == "sq-gptq-w8a8":               # the same with dynamic per-token activations (their W8A8 preset)
        return [SmoothQuantModifier(smoothing_strength=0.8), GPTQModifier(scheme="W8A8", targets=["Linear"],
                                                                          ignore=ignore)]
    if scheme == "gptq-w8a8-static":
        return [GPTQModifier(config_groups=groups(int8_channel, static), ignore=ignore)]
    if scheme == "gptq-w4a16":                 # GPTQ, symmetric groups (their W4A16)
        return [GPTQModifier(config_groups=groups(QuantizationArgs(symmetric=True, **w4)), ignore=ignore)]
    if scheme == "awq-w4a16":                  # AWQ scales + asymmetric groups (their W4A16_ASYM)
        return [AWQModifier(offload_device=None),  # its default offload asks for an accelerator
                QuantizationModifier(config_groups=groups(QuantizationArgs(symmetric=False, **w4)), ignore=ignore)]
    raise SystemExit(f"unknown llm-compressor scheme {scheme!r}; known: {', '.join(SCHEMES)}")


SCHEMES = ("sq-gptq-w8a8-static", "sq-gptq-w8a8", "gptq-w8a8-static", "gptq-w4a16", "awq-w4a16")


def _cpu_only_fix() -> None:
    """llm-compressor 0.14's AWQ pins cached activations to page-locked memory (a speed-up for host-to-GPU copies),
    which raises "Cannot access accelerator device" on a machine without one. Pinning changes no number: skip it."""
    if torch.accelerator.is_available():
        return
    from llmcompressor.pipelines.cache import IntermediatesCache
    IntermediatesCache.pin_memory = lambda self, *a, **k: None


def main(spec_path: str) -> None:
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = json.load(open(spec_path))
    _cpu_only_fix()
    torch.manual_seed(0)
    ids = torch.load(spec["windows"])
    from datasets import Dataset
    # already tokenized: llm-compressor skips its own tokenization for datasets with input_ids
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(spec["model"])
    start = time.perf_counter()
    oneshot(model=model, dataset=data, recipe=recipe(spec["scheme"], spec.get("group_size", 128)),
            num_calibration_samples=len(data), max_seq_length=ids.shape[1], shuffle_calibration_samples=False,
            pipeline=spec.get("pipeline", "independent"))
    seconds = time.perf_counter() - start
    model.save_pretrained(spec["out"], save_compressed=True)
    tok.save_pretrained(spec["out"])
    import llmcompressor
    info = {"library": "llm-compressor", "version": llmcompressor.__version__, "scheme": spec["scheme"],
            "group_size": spec.get("group_size"), "calibration": list(ids.shape), "seconds": round(seconds, 1)}
    json.dump(info, open(f"{spec['out']}/peer.json", "w"), indent=1)
    print(json.dumps(info))


if __name__ == "__main__":
    main(sys.argv[1])
