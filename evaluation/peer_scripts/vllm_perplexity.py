"""Perplexity of a folder served by vLLM (its own venv, .venvs/vllm): the engine's own log-likelihoods.

    .venvs/vllm/bin/python evaluation/peer_scripts/vllm_perplexity.py SPEC.json

SPEC: {"model": folder (compressed-tensors or float), "windows": .pt file of token windows [n, seqlen] (sysq's
evaluation windows, BOS included), "out": output folder}. For every window vLLM scores each token given the ones
before it (prompt_logprobs); the NLL over every predicted token gives the perplexity, as sysq's evaluator does.
Writes OUT/peer.json. Standalone: it must not import sysq.
"""
import json
import math
import os
import sys
import time

import torch


def main(spec_path: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    spec = json.load(open(spec_path))
    ids = torch.load(spec["windows"])
    start = time.perf_counter()
    llm = LLM(model=spec["model"], dtype=spec.get("dtype", "float32"), max_model_len=ids.shape[1] + 8,
              enforce_eager=True, seed=0, gpu_memory_utilization=spec.get("memory_fraction", 0.2))
    load_s = time.perf_counter() - start
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
    outs = llm.generate([TokensPrompt(prompt_token_ids=w.tolist()) for w in ids], params)
    nll, count = 0.0, 0
    for w, o in zip(ids.tolist(), outs):
        for pos, lp in enumerate(o.prompt_logprobs):
            if pos == 0 or lp is None:
                continue                      # the first token is not predicted
            nll -= lp[w[pos]].logprob
            count += 1
    info = {"engine": "vllm", "version": __import__("vllm").__version__, "model": spec["model"],
            "windows": ids.shape[0], "tokens": count, "ppl": math.exp(nll / count), "nll": nll / count,
            "load_seconds": round(load_s, 1), "seconds": round(time.perf_counter() - start, 1),
            "device": os.environ.get("VLLM_TARGET_DEVICE", "cpu")}
    os.makedirs(spec["out"], exist_ok=True)
    json.dump(info, open(os.path.join(spec["out"], "peer.json"), "w"), indent=1)
    print(json.dumps(info))


if __name__ == "__main__":
    main(sys.argv[1])
