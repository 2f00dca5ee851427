"""Measured auto on tiny models with a planted BOS outlier: it picks the candidate with the least KL, writes the
candidates, scores, choice and cost into the plan, applies exactly that candidate, never raises on a family whose
norms forbid a rotation, and plans only engine-legal candidates for target engine."""
import copy
import dataclasses
import importlib

import pytest
import torch

import sysq
from sysq.mitigate.plan import MitigationPlan
from tiny_models import plant_bos_outlier, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

CALIB = torch.randint(3, 300, (6, 32), generator=torch.Generator().manual_seed(0))
CALIB[:, 0] = 1
TEST = CALIB[:2]


@torch.no_grad()
def _logits(m):
    return m(input_ids=TEST).logits


def _setup(family="llama"):
    base = plant_bos_outlier(tiny_model(family))
    return base, sysq.detect(base, CALIB, quiet=True)


def test_measured_auto_applies_the_least_kl_candidate_and_says_so(tmp_path):
    base, report = _setup()
    m = copy.deepcopy(base)
    p = sysq.plan(report, "w8a8-static")
    sysq.quantize(m, sysq.mitigate(m, p, CALIB, report=report, quiet=True), CALIB, quiet=True)
    s = p.search
    assert set(s.scores) == set(s.candidates) and s.rules in s.scores
    assert s.scores[s.chosen] <= s.scores[s.rules]
    assert set(s.noise) == set(s.candidates) - {s.rules}
    assert s.total_seconds > 0 and all(v > 0 for v in s.seconds.values())
    assert any(n.startswith("auto: chose") and "none" in n for n in p.notes)
    assert "auto: chose" in str(p)
    # the same as planning the chosen candidate directly
    direct = copy.deepcopy(base)
    q = sysq.plan(report, "w8a8-static", s.chosen)
    sysq.quantize(direct, sysq.mitigate(direct, q, CALIB, report=report, quiet=True), CALIB, quiet=True)
    assert torch.equal(_logits(m), _logits(direct))
    # a saved auto plan is applied again without measuring
    loaded = MitigationPlan.load(p.save(tmp_path / "plan.yaml"))
    assert loaded.search == s
    again = copy.deepcopy(base)
    sysq.quantize(again, sysq.mitigate(again, loaded, CALIB, report=report, quiet=True), CALIB, quiet=True)
    assert loaded.search.total_seconds == s.total_seconds and torch.equal(_logits(again), _logits(m))
    # and it beats quantizing without mitigation, on windows it did not calibrate on
    none = copy.deepcopy(base)
    sysq.quantize(none, "w8a8-static", CALIB, quiet=True)
    held = torch.randint(3, 300, (4, 32), generator=torch.Generator().manual_seed(9))
    held[:, 0] = 1
    with torch.no_grad():
        ref = base(input_ids=held).logits.log_softmax(-1)
        kl = lambda mm: (ref.exp() * (ref - mm(input_ids=held).logits.log_softmax(-1))).sum(-1).mean()
        assert kl(m) < kl(none) / 10


def test_auto_never_raises_where_the_residual_rotation_is_not_exact():
    """The issue's reproduction: gemma3 auto (and auto-fast, whose rules rotate for w8a8-static) mitigate and keep
    the float function, with the rotation narrowed to what gemma3 keeps exact and the reason in the notes."""
    base, report = _setup("gemma3_text")
    ref = _logits(base)
    for method in ("auto-fast", "auto"):
        m = copy.deepcopy(base)
        p = sysq.plan(report, "w8a8-static", method)
        sysq.mitigate(m, p, CALIB, report=report, quiet=True)
        assert (_logits(m) - ref).abs().max() < 1e-4 * ref.abs().max()
        if method == "auto-fast":
            assert p.rotate is not None and not p.rotate.residual and p.rotate.heads and p.rotate.down
            assert any("no residual rotation for gemma3" in n for n in p.notes)


def test_engine_target_measures_engine_legal_candidates_only():
    base, report = _setup()
    m = copy.deepcopy(base)
    p = sysq.plan(report, "w8a8-static", target="engine")
    sysq.mitigate(m, p, CALIB, report=report, quiet=True)
    assert p.search.chosen is not None
    assert p.preserve_tokens is None and (p.rotate is None or not p.rotate.down)
    assert any("target engine: dropped preserve-tokens" in n for n in p.notes)


def test_decide_keeps_the_rules_inside_the_proxy_noise():
    from sysq.mitigate.api import decide
    g = torch.Generator().manual_seed(0)
    rules = 1.0 + 0.1 * torch.randn(16, generator=g)
    close = rules - 0.01 + 0.1 * torch.randn(16, generator=g)      # 1% better on average, noise 10x that
    clear = rules - 0.3 + 0.01 * torch.randn(16, generator=g)      # better on every segment
    worse = rules + 0.5
    best, noise = decide({"r": rules, "close": close, "worse": worse}, "r", 2.0)
    assert best == "r" and noise["close"] > 0.01
    best, noise = decide({"r": rules, "close": close, "clear": clear, "worse": worse}, "r", 2.0)
    assert best == "clear" and noise["clear"] < 0.01
    assert decide({"r": rules[:1], "clear": clear[:1]}, "r", 2.0)[0] == "r"   # one segment: no noise estimate


@pytest.mark.parametrize("recipe", ["w4a16+gptq", "w4a8+gptq", "w8a8-static"])
def test_auto_is_never_worse_than_the_rules_on_the_proxy_and_int4_search_rounds_to_nearest(recipe, monkeypatch):
    """INT4 candidates are scored with RTN weights (no GPTQ inside the search); the chosen plan's proxy score is
    at most the rules', and it differs from the rules only by more than the measured noise; the winner still gets
    GPTQ when quantized."""
    import sysq.quant.api as qapi
    calls = []
    real = qapi.gptq_model
    monkeypatch.setattr(qapi, "gptq_model", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    base, report = _setup()
    m = copy.deepcopy(base)
    p = sysq.plan(report, recipe)
    r = sysq.mitigate(m, p, CALIB, report=report, quiet=True)
    s = p.search
    note = next(n for n in p.notes if n.startswith("auto: chose"))
    confirmed = "confirmed with the recipe's rounding" in note      # a challenger re-scored with GPTQ, with the rules
    assert calls == ([1, 1] if confirmed else [])
    assert s.scores[s.chosen] <= s.scores[s.rules]
    if s.chosen != s.rules:
        assert s.scores[s.rules] - s.scores[s.chosen] > s.z * s.noise[s.chosen]
    assert all(c in note for c in s.scores) and "+-" in note
    if recipe.startswith("w4"):
        assert "rounded to nearest" in note and p.rounding == "gptq" and r.method == "gptq"
        n = len(calls)
        sysq.quantize(m, r, CALIB, quiet=True)
        assert len(calls) == n + 1


@pytest.mark.parametrize("holds", [True, False])
def test_an_rtn_winner_must_win_again_with_the_recipes_rounding(holds, monkeypatch):
    """A challenger that beats the rules with RTN weights replaces them only if it still wins with GPTQ."""
    api = importlib.import_module("sysq.mitigate.api")      # sysq.mitigate is also the function
    real = api._score
    rounded = []

    def score(m, cp, recipe, qwin, score, ref, rtn, stop=None):
        kl = real(m, cp, recipe, qwin, score, ref, rtn)
        rounded.append(not rtn)
        jitter = 0.01 * torch.rand(kl.shape, generator=torch.Generator().manual_seed(len(rounded)))
        if cp.method == rules:
            return torch.ones_like(kl) + jitter
        if cp.method == "gptq":                        # no transforms: far better with RTN weights
            return (0.1 if rtn or holds else 3.0) * torch.ones_like(kl) + jitter
        return 2.0 * torch.ones_like(kl) + jitter
    monkeypatch.setattr(api, "_score", score)
    base, report = _setup()
    p = sysq.plan(report, "w4a16+gptq")
    rules = p.search.rules
    assert "gptq" in p.search.candidates and rules != "gptq"
    sysq.mitigate(copy.deepcopy(base), p, CALIB, report=report, quiet=True)
    note = next(n for n in p.notes if n.startswith("auto: chose"))
    assert rounded.count(True) == 2                     # the rules and the challenger, once more each
    assert p.search.chosen == ("gptq" if holds else rules)
    assert ("not confirmed" in note) == (not holds) and "confirmed with the recipe's rounding" in note


def test_auto_scores_on_windows_no_fitted_step_saw(monkeypatch):
    """The fit / score split: every candidate is mitigated and quantized on the first windows only and scored on the
    last ones (recorded in the plan); only the winner, once chosen, is applied with every window. A split exists
    for any calibration of two windows or more."""
    from sysq.mitigate.api import split
    import sysq.quant.api as qapi
    api = importlib.import_module("sysq.mitigate.api")
    assert split(16, 4, 4) == ((0, 12), (0, 4), (12, 16)) and split(16, 2, 2) == ((0, 14), (0, 2), (14, 16))
    assert split(6, 4, 4) == ((0, 3), (0, 3), (3, 6))
    assert split(2, 4, 4) == ((0, 1), (0, 1), (1, 2)) and split(1, 4, 4) == ((0, 1), (0, 1), (0, 1))
    seen = []
    real_mitigate, real_quantize = api.mitigate, qapi.quantize

    def windows(calib):
        ids = getattr(calib, "ids", calib)
        return {i for i, w in enumerate(CALIB) if any(torch.equal(w, x) for x in ids)}

    def mitigate(model, plan_, calib=None, **kw):
        seen.append(("mitigate", windows(calib)))
        return real_mitigate(model, plan_, calib, **kw)

    def quantize(model, recipe, calib=None, **kw):
        seen.append(("quantize", windows(calib)))
        return real_quantize(model, recipe, calib, **kw)
    monkeypatch.setattr(api, "mitigate", mitigate)
    monkeypatch.setattr(qapi, "quantize", quantize)
    base, report = _setup()
    p = sysq.plan(report, "w8a8-static")
    real_mitigate(copy.deepcopy(base), p, CALIB, report=report, quiet=True)
    s = p.search.split
    assert s == {"fit": [0, 4], "quantize": [0, 2], "score": [4, 6]}
    n = len(p.search.scores)
    assert seen[:2 * n] == [("mitigate", {0, 1, 2, 3}), ("quantize", {0, 1})] * n     # no candidate saw 4, 5
    assert seen[2 * n:] == [("mitigate", set(range(6)))]                               # the winner, afterwards
    note = next(n for n in p.notes if n.startswith("auto: chose"))
    assert "mitigated on calibration windows 0-3" in note and "scored on windows 4-5, held out" in note
    assert "the chosen plan applied with all 6 windows" in note and "thinned to 1/2" in note
    from sysq.mitigate.plan import ALPHA_GRID
    assert p.smooth is not None and p.smooth.alphas == ALPHA_GRID       # the winner is fitted on the full grid


def _held_out_kl(base, report, recipe, method) -> tuple[float, object, object]:
    held = torch.randint(3, 300, (16, 32), generator=torch.Generator().manual_seed(9))
    held[:, 0] = 1
    m = copy.deepcopy(base)
    p = sysq.plan(report, recipe, method)
    s = sysq.quantize(m, sysq.mitigate(m, p, CALIB, report=report, quiet=True), CALIB, quiet=True)
    with torch.no_grad():
        ref, lp = (x(input_ids=held).logits.log_softmax(-1) for x in (base, m))
    return float((ref.exp() * (ref - lp)).sum(-1).mean()), p, s


def test_auto_on_a_tiny_gemma3_w4a16_is_no_worse_than_no_mitigation_held_out():
    """Gemma 3's random model has KLs of tens of nats on a few tokens: auto's choice, scored on held-out windows,
    still beats quantizing without mitigation (on enough held-out windows to resolve it)."""
    base, report = _setup("gemma3_text")
    none, _, _ = _held_out_kl(base, report, "w4a16+gptq", "none")
    auto, p, _ = _held_out_kl(base, report, "w4a16+gptq", "auto")
    assert p.search.split["score"][0] >= p.search.split["fit"][1]
    assert auto < none, (auto, none)


def test_auto_for_w4a16_is_learned_rounding_alone_as_measured_best():
    """w4a16 under auto: no transform touches the model and the learned step runs with plan.Learned's budget on the
    narrowed float-zero grid (printed in the summary): the same logits as the named recipe quantized without a plan,
    and each layer's calibration output error at most RTN's."""
    base, report = _setup()
    m = copy.deepcopy(base)
    p = sysq.plan(report, "w4a16")
    s = sysq.quantize(m, sysq.mitigate(m, p, CALIB, report=report, quiet=True), CALIB, quiet=True)
    assert p.search is None and p.smooth is None and p.clip is None and p.preserve_channels is None
    lw = s.calibration["learned"]
    from sysq.quant.learn import bf16_native        # bf16 autocast where the CPU multiplies bf16, else float32
    amp = "bf16" if bf16_native(torch.device("cpu")) else None
    attn = None if amp else 100         # without native bf16 the attention's linears stop at step 100 (plan.py)
    assert (lw["steps_per_layer"], lw["batch_size"], lw["loss"], lw["amp"], lw["attn_steps"]) == (
        200, 1, "token", amp, attn)
    assert max(lw["error_vs_rtn"]) <= 1.0 and "float-zero g64" in s.description and "learned rounding: " in str(s)
    named = copy.deepcopy(base)
    sysq.quantize(named, "w4a16-g64+fz+learned200x1+tokenloss+amp" if amp else "w4a16-g64+fz+learned200x1a100+tokenloss",
                  CALIB, quiet=True)
    with torch.no_grad():
        assert torch.equal(m(input_ids=CALIB).logits, named(input_ids=CALIB).logits)


def test_a_candidate_clearly_worse_than_the_rules_stops_scoring_early(monkeypatch):
    """Scoring runs window by window; a candidate worse than the rules by z standard errors on the windows so far
    stops there, is recorded with the windows it got, and cannot be chosen."""
    api = importlib.import_module("sysq.mitigate.api")
    base, report = _setup()
    q = copy.deepcopy(base)
    sysq.quantize(q, "w8a8", CALIB[:2], quiet=True)
    ref = api._logprobs(base, CALIB[3:])
    every = api._score(base, MitigationPlan(), "w8a8", CALIB[:2], CALIB[3:], ref, True)
    first = api._score(base, MitigationPlan(), "w8a8", CALIB[:2], CALIB[3:], ref, True, stop=lambda kl: True)
    assert every.shape == (3, 32) and torch.allclose(first, every[:1]) and every.mean() > 0
    assert torch.allclose(every, api.kl_tokens(q, CALIB[3:], ref))

    def score(m, cp, recipe, qwin, score, ref, rtn, stop=None):     # the real loop, planted KLs
        rows = []
        for i in range(len(score)):
            g = torch.Generator().manual_seed(i + 10 * len(cp.method))
            rows.append((5.0 if cp.method == "none" else 1.0) + 0.1 * torch.rand(score.shape[1], generator=g))
            if stop is not None and len(rows) < len(score) and stop(torch.stack(rows)):
                break
        return torch.stack(rows)
    monkeypatch.setattr(api, "_score", score)
    p = sysq.plan(report, "w8a8-static")
    sysq.mitigate(copy.deepcopy(base), p, CALIB, report=report, quiet=True)
    s = p.search
    assert s.stopped == {"none": 1} and s.chosen != "none" and s.noise["none"] > 0
    assert "none (vs the rules" in p.notes[-1] and "stopped after 1 of 2 windows" in p.notes[-1]


def test_auto_for_w4a8_is_learned_rounding_alone_as_measured_best():
    """w4a8 under auto: as w4a16, no transform and plan.learned_budget's step, the per-channel INT4 weights narrowed
    to groups of 64: the same logits as the named recipe quantized without a plan."""
    base, report = _setup()
    m = copy.deepcopy(base)
    p = sysq.plan(report, "w4a8")
    sysq.quantize(m, sysq.mitigate(m, p, CALIB, report=report, quiet=True), CALIB, quiet=True)
    assert p.search is None and p.smooth is None and p.rotate is None and p.preserve_tokens is None
    named = copy.deepcopy(base)
    sysq.quantize(named, "w4a8+g64+fz+learned100x1+tokenloss", CALIB, quiet=True)
    with torch.no_grad():
        assert torch.equal(m(input_ids=CALIB).logits, named(input_ids=CALIB).logits)


def test_auto_for_w4a4_is_the_rules_with_autorounds_budget_as_measured_best():
    """w4a4 under auto: the rules' candidates with learned rounding in place of GPTQ, AutoRound's budget on integer
    groups of 32: the plan and recipe of the measured best row, w4a4+g32+kv4g32+learned200x8@auto+learned."""
    from sysq.mitigate.preserve import apply_to_recipe
    _, report = _setup()
    auto = sysq.plan(report, "w4a4+kv4g32")
    named = sysq.plan(report, "w4a4+g32+kv4g32+learned200x8", "auto+learned")
    assert auto.search.candidates == named.search.candidates and auto.rounding == named.rounding == "learned"
    a, n = apply_to_recipe("w4a4+kv4g32", auto).to_dict(), apply_to_recipe(named.recipe, named).to_dict()
    assert {k for k in a if a[k] != n[k]} == {"name"}
    assert (a["learn_steps"], a["learn_batch_size"], a["weight"]["group_size"]) == (200, 8, 32)
    gptq = sysq.plan(report, "w4a4+kv4g32", "auto+gptq")          # a rounding named by the user stays
    assert gptq.rounding == "gptq" and gptq.learned is None


def test_auto_for_w4a4_searches_on_the_weight_groups_it_quantizes_with():
    """auto narrows w4a4's per-channel weights to groups of 32 for its learned step: the candidates are fitted and
    scored on that grid too, so w4a4+kv4g32@auto measures exactly what w4a4+g32+kv4g32@auto measures (scored per
    channel, SmolLM2's search chose a plan at 1.697x FP against 1.469x)."""
    base, report = _setup()
    plans = {}
    for recipe in ("w4a4+kv4", "w4a4+g32+kv4"):     # (the tiny heads are 16 wide: no kv4g32)
        p = sysq.plan(report, recipe)
        # 20 of the budget's 200 steps (5 candidates x 2 recipes: 70 s -> 9 s): the grids still part the scores
        # (w4a4+g16+kv4's differ from these at 20 steps)
        p.learned = dataclasses.replace(p.learned, steps=20)
        sysq.mitigate(copy.deepcopy(base), p, CALIB, report=report, quiet=True)
        plans[recipe] = p
    a, b = plans["w4a4+kv4"].search, plans["w4a4+g32+kv4"].search
    assert a.chosen == b.chosen and a.scores == b.scores and len(a.scores) > 1


def test_auto_for_w4a4_kv4_on_the_cpu_takes_the_cpu_budget_and_rotates_the_keys():
    """mitigate fits auto's learned budget to where it runs (a CPU: 125 x 2 with native bf16, 60 x 2 with a first
    step of 0.01 without; float zeros, activation clip learned; plan.learned_budget) and the plan's rotate-keys reaches
    the recipe quantize runs."""
    from sysq.quant.learn import bf16_native
    base, report = _setup()
    p = sysq.plan(report, "w4a4+kv4", "auto-fast")
    assert (p.learned.steps, p.learned.batch_size) == (200, 8)          # before the device is known
    r = sysq.mitigate(copy.deepcopy(base), p, CALIB, report=report, quiet=True)
    want = (125, 2, None) if bf16_native(torch.device("cpu")) else (60, 2, 0.01)
    assert (r.learn_steps, r.learn_batch_size, r.learn_lr, r.learn_act_clip, r.weight.zero_point) == (*want, True,
                                                                                                      "float")
    assert r.kv.key_rotation and p.rotate_keys


def test_whole_model_steps_on_a_gpu_machine_run_where_a_host_model_is(monkeypatch):
    """On a machine with a GPU, a model in host memory takes the sequential path (one layer at a time on the GPU).
    Measured auto and learned rounding need the whole model, so under pipeline 'auto' they run where the weights
    are instead of refusing (as a sequential path named by the caller still does); auto's learned budget is fitted
    to that device (mitigate reads it from choose_pipeline's whole-model answer)."""
    from sysq.errors import SysqError
    from sysq.sequential import choose_pipeline
    base, report = _setup()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)       # a GPU machine, as choose_pipeline sees it
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert choose_pipeline(base).sequential and not choose_pipeline(base, whole="learned rounding").sequential
    p = sysq.plan(report, "w8a8-static")
    sysq.mitigate(copy.deepcopy(base), p, CALIB, report=report, quiet=True)
    assert p.search.chosen in p.search.candidates
    with pytest.raises(SysqError, match="measured auto copies the model"):
        sysq.mitigate(copy.deepcopy(base), sysq.plan(report, "w8a8-static"), CALIB, report=report, quiet=True,
                      pipeline="sequential")
    m = copy.deepcopy(base)
    s = sysq.quantize(m, {"base": "w4a16-g32", "method": "learned", "learn_steps": 2}, CALIB, quiet=True)
    assert s.calibration["learned"]["layers"] == 2
