"""Quantize a float folder with auto-round (Intel AutoRound) itself, in its own virtual environment (.venvs/autoround).

    .venvs/autoround/bin/python evaluation/peer_scripts/autoround_quantize.py SPEC.json

SPEC: {"model": float HF folder, "windows": .pt file of token windows [n, seqlen] (sysq's calibration windows),
"out": output folder, "bits", "group_size", "sym", "iters", "batch_size", "seed", "lr" (null: auto-round's)}.
SignSGD rounding + min/max tuning per block (auto-round's "signround"), weight-only. Writes auto-round's
"llm_compressor" export (compressed-tensors pack-quantized: INT4 codes, fp16 scales, integer zero points), which
plain transformers loads, and OUT/peer.json. (Its "fake" format is no use here: with an fp32 model 0.16.1 saves
the original fp32 weights back over the quantized ones.) Standalone: it must not import sysq.
"""
import json
import sys
import time
from importlib.metadata import version

import torch


def main() -> int:
    spec = json.loads(open(sys.argv[1]).read())
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = torch.load(spec["windows"])
    seed = spec.get("seed", 0)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(spec["model"])
    kw = {"lr": spec["lr"]} if spec.get("lr") is not None else {}
    t0 = time.perf_counter()
    ar = AutoRound(model, tok, bits=spec.get("bits", 4), group_size=spec.get("group_size", 128),
                   sym=spec.get("sym", False), dataset=[ids[i:i + 1] for i in range(ids.shape[0])],
                   nsamples=ids.shape[0], seqlen=ids.shape[1], batch_size=min(spec.get("batch_size", 8), ids.shape[0]),
                   iters=spec.get("iters", 200), seed=seed, enable_torch_compile=False,
                   device_map=0 if torch.cuda.is_available() else "cpu", **kw)
    ar.quantize()
    seconds = time.perf_counter() - t0
    ar.save_quantized(spec["out"], format="llm_compressor", inplace=True)
    info = {"library": f"auto-round {version('auto-round')}", "transformers": version("transformers"),
            "torch": torch.__version__, "format": "compressed-tensors pack-quantized (auto-round llm_compressor export)",
            "seconds": round(seconds, 1), "calibration": list(ids.shape),
            "settings": {k: v for k, v in spec.items() if k not in ("model", "windows", "out")}}
    with open(f"{spec['out']}/peer.json", "w") as f:
        json.dump(info, f, indent=1)
    print(f"auto-round: {json.dumps(info)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
