import copy, torch, sysq, time
from sysq.quant import quantize
from sysq.quant.linear import QuantLinear
from sysq.quant.kernels import RealLinear
from evaluation.perplexity import perplexity
torch.manual_seed(0)
base, tok = sysq.load("smollm2-135m", dtype="float32", device="cpu")
calib = sysq.calibration(tok, n=16, seqlen=512, seed=0)
evalw = sysq.windows("wikitext2", tok, n=40, seqlen=512)
sim, real = copy.deepcopy(base), copy.deepcopy(base)
quantize(sim, "w8a8-static", calib, quiet=True)
quantize(real, "w8a8-static+real", calib, quiet=True)
# per-linear: same input, compare
sims = {n: m for n, m in sim.named_modules() if isinstance(m, QuantLinear)}
reals = {n: m for n, m in real.named_modules() if isinstance(m, RealLinear)}
ins = {}
hs = [m.register_forward_pre_hook(lambda mod, a, n=n: ins.__setitem__(n, a[0].detach())) for n, m in sims.items()]
ids = evalw.ids[:1] if hasattr(evalw, "ids") else evalw[:1]
with torch.no_grad():
    sim(input_ids=ids)
for h in hs: h.remove()
worst = []
with torch.no_grad():
    for n in list(sims)[:]:
        x = ins[n]
        ys, yr = sims[n](x), reals[n](x)
        d = (ys - yr).abs().max().item(); rel = d / ys.abs().max().item()
        worst.append((rel, d, n, float(sims[n].act_scale)))
worst.sort(reverse=True)
for w in worst[:6]: print("linear rel %.3g abs %.3g %s act_scale %.4g" % w)
t = time.time()
for nw in (40,):
    e = sysq.windows("wikitext2", tok, n=nw, seqlen=512)
    ps = perplexity(sim, e, quiet=True).ppl; pr = perplexity(real, e, quiet=True).ppl
    print(nw, "sim", ps, "real", pr, "ratio", pr / ps, time.time() - t)
