"""auto-round (Intel AutoRound) as a peer job: SignSGD rounding + min/max tuning, weight-only INT4.

Runs in the auto-round environment (scripts/peers/make_venv.sh autoround), never imports sysq; the contract is
in evaluation/peers.py. It writes auto-round's "llm_compressor" export (compressed-tensors pack-quantized: INT4
codes, fp16 scales, integer zero points), which plain transformers loads, so the grid measures the checkpoint
auto-round ships. (Its "fake" format is no use here: with an fp32 model, 0.16.1 saves the original fp32
weights back over the quantized ones.)
"""
import argparse
import json
import time
from importlib.metadata import version
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--settings", default="{}")
    a = ap.parse_args()
    s = json.loads(a.settings)
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = torch.tensor(json.loads(Path(a.calib).read_text())["input_ids"], dtype=torch.long)
    torch.manual_seed(s.get("seed", 0))
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(a.model)
    kw = {k: s[k] for k in ("lr",) if s.get(k) is not None}
    t0 = time.perf_counter()
    ar = AutoRound(model, tok, bits=s.get("bits", 4), group_size=s.get("group_size", 128), sym=s.get("sym", False),
                   dataset=[ids[i:i + 1] for i in range(ids.shape[0])], nsamples=ids.shape[0], seqlen=ids.shape[1],
                   batch_size=min(s.get("batch_size", 8), ids.shape[0]), iters=s.get("iters", 200),
                   seed=s.get("seed", 0), device_map="cpu" if not torch.cuda.is_available() else 0,
                   enable_torch_compile=False, **kw)
    ar.quantize()
    ar.save_quantized(a.out, format="llm_compressor", inplace=True)
    seconds = time.perf_counter() - t0
    out = Path(a.out)
    info = {"library": f"auto-round {version('auto-round')}", "torch": torch.__version__,
            "transformers": version("transformers"), "format": "compressed-tensors pack-quantized (auto-round llm_compressor export)",
            "seconds": round(seconds, 1), "settings": s, "calibration": list(ids.shape)}
    (out / "peer.json").write_text(json.dumps(info, indent=1))
    print(f"auto-round: {json.dumps(info)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
