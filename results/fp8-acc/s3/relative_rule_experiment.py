import copy, dataclasses, time, sys, torch, sysq
from evaluation.perplexity import perplexity
from sysq.detect import OutlierReport
from sysq.mitigate.api import mitigate, plan
from sysq.quant.api import quantize, quant_linears
torch.manual_seed(0)
base, tok = sysq.load("smollm2-135m", dtype="float32", device="cpu")
calib = sysq.calibration(tok, n=16, seqlen=512, seed=0)
evalw = sysq.windows("wikitext2", tok, n=int(sys.argv[1]) if len(sys.argv) > 1 else 40, seqlen=512)
report = OutlierReport.load("out/report.json")
fp = perplexity(base, evalw, quiet=True).ppl
print("fp", fp, flush=True)
for method in sys.argv[2].split(","):
    t = time.time()
    m = copy.deepcopy(base)
    p = plan(report, "w8a8-fp8-static", method)
    r = mitigate(m, p, calib, quiet=True, report=report)
    print(method, "mitigate %.0fs" % (time.time() - t), flush=True)
    for ratio in (None, 64.0, 16.0):
        q = copy.deepcopy(m)
        rr = dataclasses.replace(r, act=dataclasses.replace(r.act, preserve_ratio=ratio))
        object.__setattr__(q, "_sysq_plan", None)
        quantize(q, rr, calib, quiet=True)
        qls = quant_linears(q)
        pres = sum(ql.observer.preserved_tokens for ql in qls)
        top = sorted(qls, key=lambda ql: -ql.observer.absmax)[:3]
        d2 = [ql for ql in qls if ql.name == "model.layers.2.mlp.down_proj"][0]
        ppl = perplexity(q, evalw, quiet=True).ppl
        print(f"{method} ratio={ratio}: ppl {ppl:.4f} x{ppl/fp:.4f} preserved-calib-tokens {pres} "
              f"top {[(t.name.replace('model.layers.',''), round(t.observer.absmax,1)) for t in top]} "
              f"l2down thr {d2.act_spec.preserve_threshold} absmax {d2.observer.absmax:.1f} ({time.time()-t:.0f}s)", flush=True)
