"""MitigationPlan: YAML round trip, hand edits, clear errors; plan() presets."""
import pytest

from sysq.errors import SysqError
from sysq.mitigate.api import plan
from sysq.mitigate.plan import Clip, MitigationPlan, PreserveChannels, PreserveTokens, Rotate, Smooth


def full_plan() -> MitigationPlan:
    return MitigationPlan(
        recipe="w4a4+kv4", method="custom",
        smooth=Smooth(alpha=None, mappings="all", layers=[0, 3], chosen={"layers.0.attn_norm->q,k,v": 0.45}),
        clip=Clip(weights=True, activations=True, floor={"model.layers.3.mlp.down_proj": 3064.8},
                  chosen={"model.layers.0.mlp.up_proj.weight": 0.93}),
        preserve_channels=PreserveChannels(channels={"model.layers.3.mlp.down_proj": [7, 11]}, bits=8),
        preserve_tokens=PreserveTokens(threshold=100.0, positions=[0], prefix=1, tokens=["<|im_start|>", "."]),
        rotate=Rotate(residual=True, down=False, heads=True, seed=3),
        notes=["why: the report flags BOS"],
    )


def test_yaml_round_trip(tmp_path):
    p = full_plan()
    assert MitigationPlan.from_yaml(p.to_yaml()) == p
    path = p.save(tmp_path)
    assert path.name == "mitigation.yaml"
    assert MitigationPlan.load(tmp_path) == p
    empty = MitigationPlan()
    assert MitigationPlan.from_yaml(empty.to_yaml()) == empty


def test_hand_edit_is_read_back():
    text = full_plan().to_yaml().replace("threshold: 100.0", "threshold: 250.0").replace("seed: 3", "seed: 5")
    p = MitigationPlan.from_yaml(text)
    assert p.preserve_tokens.threshold == 250.0 and p.rotate.seed == 5


@pytest.mark.parametrize("text, word", [("smooth: {alfa: 0.5}\n", "alfa"), ("colour: red\n", "colour"),
                                        ("smooth: 3\n", "smooth"), ("version: 99\n", "newer")])
def test_bad_plans_fail_clearly(text, word):
    with pytest.raises(SysqError, match=word):
        MitigationPlan.from_yaml(text)


def test_presets():
    p = plan(None, "w8a8-static", "smoothquant")
    assert p.smooth.alpha == 0.5 and p.smooth.mappings == "norm" and p.rotate is None
    p = plan(None, "w8a8-static", "rotate+preserve-tokens")
    assert p.rotate is not None and p.preserve_tokens.positions == [0] and p.smooth is None
    assert plan(None, "w8a8", "none").smooth is None
    auto = plan(None, "w4a4+kv4", "auto")
    assert auto.rotate is not None and auto.preserve_tokens is not None and auto.notes
    assert plan(None, "w4a16", "auto").preserve_tokens is None        # no activation quantizer
    with pytest.raises(SysqError, match="unknown mitigation"):
        plan(None, "w8a8", "smooth+magic")


def test_auto_rounds_int4_weights_with_gptq_and_survives_yaml():
    from sysq.mitigate.preserve import apply_to_recipe
    p = plan(None, "w4a16+gptq", "auto")                # GPTQ asked for: the rules' transforms stay
    assert p.rounding == "gptq" and p.clip is not None and p.learned is None
    assert apply_to_recipe("w4a16+gptq", p).method == "gptq"
    assert plan(None, "w4a8+gptq", "auto").rounding == "gptq"     # quantized activations, GPTQ named: the rules
    a8, a4 = plan(None, "w4a8", "auto"), plan(None, "w4a4", "auto")   # else learned: alone at A8, after the rules at A4
    assert a8.rounding == a4.rounding == "learned" and a8.clip is None and a4.clip is not None
    assert (a8.learned.steps, a4.learned.steps, a4.learned.batch_size, a4.learned.group_size) == (100, 200, 8, 32)
    assert MitigationPlan.from_yaml(p.to_yaml()) == p
    assert apply_to_recipe("w8a8", plan(None, "w8a8", "auto")).method == "rtn"     # 8-bit weights: RTN is enough
    assert apply_to_recipe("w8a8", plan(None, "w8a8", "auto+gptq")).method == "gptq"


def test_a_plan_that_replaces_a_named_method_says_so(caplog):
    from sysq.mitigate.preserve import apply_to_recipe
    learned = plan(None, "w4a16", "auto")              # made for a recipe without a method: learned rounding
    with caplog.at_level("WARNING", logger="sysq.mitigate.preserve"):
        assert apply_to_recipe("w4a16+gptq", learned).method == "learned"
    assert "replaces the recipe's method 'gptq'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sysq.mitigate.preserve"):
        apply_to_recipe("w4a16", learned)                     # no method named: nothing to say
        apply_to_recipe("w4a16+gptq", plan(None, "w4a16+gptq", "auto"))     # the plan keeps it
    assert caplog.text == ""


def test_auto_candidates_and_the_fast_path():
    from sysq.mitigate.api import fast_method
    s = plan(None, "w8a8-static", "auto").search
    assert s.candidates == ["rotate+smooth+preserve-tokens", "smooth+preserve-tokens", "none"]
    assert s.rules == s.candidates[0] and s.chosen is None
    # INT4 weights: the rules' GPTQ rounding joins every candidate, the unmitigated one too
    assert plan(None, "w4a16+gptq", "auto").search.candidates == [
        "smooth+clip+preserve-channels+gptq", "rotate+smooth+clip+gptq", "gptq"]
    fast = plan(None, "w8a8-static", "auto-fast")
    assert fast.search is None and fast.rotate is not None and fast.preserve_tokens is not None
    assert fast_method("auto+gptq") == "auto-fast+gptq"
    p = plan(None, "w4a8", "auto")
    assert MitigationPlan.from_yaml(p.to_yaml()) == p


def test_a_new_candidate_is_one_line(monkeypatch):
    from sysq.mitigate import api
    monkeypatch.setattr(api, "AUTO_CANDIDATES", api.AUTO_CANDIDATES + (("smoothquant+preserve-tokens", "act"),))
    assert "smoothquant+preserve-tokens" in plan(None, "w8a8", "auto").search.candidates
    assert "smoothquant+preserve-tokens" not in plan(None, "w4a16+gptq", "auto").search.candidates


def test_learned_and_awq_are_plan_methods():
    from sysq.mitigate.preserve import apply_to_recipe
    p = plan(None, "w4a8+gptq", "auto-fast+learned")    # learned replaces the rules' gptq rounding
    assert p.rounding == "learned" and p.clip is not None and apply_to_recipe("w4a8", p).method == "learned"
    assert MitigationPlan.from_yaml(p.to_yaml()) == p
    a = plan(None, "w4a16-g64+fz", "awq")
    assert a.smooth.statistic == "mean" and a.clip.weights and a.rounding is None
    assert apply_to_recipe("w4a16-g64+fz", plan(None, "w4a16-g64+fz", "awq+learned")).method == "learned"


@pytest.mark.parametrize("method", ["auto", "auto-fast", "auto+learned"])
def test_auto_for_weight_only_int4_is_learned_rounding_alone(method):
    """w4a16 under auto: no transforms, no search; learned rounding 200 x 1 steps under bf16 autocast, per-token loss,
    float zero points, groups of 64 (plan.learned_budget; docs/INT4.md), set on the recipe unless it names its own
    learned budget."""
    from sysq.mitigate.preserve import apply_to_recipe
    p = plan(None, "w4a16", method)
    assert p.rounding == "learned" and p.search is None
    assert (p.smooth, p.clip, p.preserve_channels, p.rotate, p.preserve_tokens) == (None,) * 5
    r = apply_to_recipe("w4a16", p)
    assert (r.method, r.learn_steps, r.learn_batch_size, r.learn_loss, r.learn_amp) == ("learned", 200, 1, "token",
                                                                                         "bf16")
    assert (r.weight.zero_point, r.weight.group_size, r.ragged) == ("float", 64, "halve")
    assert apply_to_recipe(r, p) == r                                  # idempotent
    assert MitigationPlan.from_yaml(p.to_yaml()) == p
    assert apply_to_recipe("w4a16-g32", p).weight.group_size == 32    # narrower groups stay
    own = apply_to_recipe("w4a16-g64+learned200x8", plan(None, "w4a16-g64+learned200x8", method))
    assert (own.learn_steps, own.learn_batch_size, own.learn_loss, own.weight.zero_point, own.learn_amp) == (
        200, 8, "mse", "int", None)
    eng = plan(None, "w4a16", method, target="engine")                 # compressed-tensors: integer zero points
    assert apply_to_recipe("w4a16", eng).weight.zero_point == "int" and any("float zero" in n for n in eng.notes)
    for other in ("auto+smooth", "auto+gptq"):                         # other methods named: the rules as before
        assert plan(None, "w4a16", other).learned is None and plan(None, "w4a16", other).clip is not None


def test_auto_rotates_the_keys_of_a_4bit_kv_cache():
    """rotate-keys (QuaRot's R3) joins auto's plan, and each of its candidates, when the KV cache has 4 bits; the
    recipe then rotates the keys. With an 8-bit or float cache auto leaves them; named without a quantized cache it
    fails clearly."""
    from sysq.mitigate.preserve import apply_to_recipe
    for recipe in ("w4a4+kv4g32", "w8a8-static+kv4", "w4a16+kv4"):
        p = plan(None, recipe, "auto")
        assert p.rotate_keys and apply_to_recipe(recipe, p).kv.key_rotation, recipe
        assert all("rotate-keys" in c.split("+") for c in (p.search.candidates if p.search else []))
        assert MitigationPlan.from_yaml(p.to_yaml()) == p and "rotate keys" in str(p)
    for recipe in ("w4a4", "w8a8-static+kv8"):
        p = plan(None, recipe, "auto")
        kv = apply_to_recipe(recipe, p).kv
        assert not p.rotate_keys and (kv is None or not kv.key_rotation), recipe
    assert plan(None, "w8a8-static+kv8", "rotate-keys").rotate_keys
    with pytest.raises(SysqError, match="rotate-keys.*float.*kv4"):
        plan(None, "w8a8-static", "rotate-keys")


def test_auto_fits_w4a4s_learned_budget_to_the_device_it_runs_on(monkeypatch):
    """plan.learned_budget: AutoRound's 200 x 8 where a GPU runs the step; on a CPU 125 x 2 under bf16 autocast with
    float zero points and learned activation clip ratios. A budget written into the plan stays; target engine keeps
    integer zero points."""
    import torch

    from sysq.mitigate.api import _fit_learned
    from sysq.mitigate.preserve import apply_to_recipe
    from sysq.quant import get_recipe, learn
    monkeypatch.setattr(learn, "bf16_native", lambda device: True)      # a CPU with AVX512-BF16 or AMX
    r = get_recipe("w4a4+kv4g32")
    for dev, want in (("cuda", (200, 8, "int", None, False)), ("cpu", (125, 2, "float", "bf16", True))):
        p = plan(None, "w4a4+kv4g32", "auto-fast")
        _fit_learned(p, r, torch.device(dev))
        q = apply_to_recipe(r, p)
        assert (q.learn_steps, q.learn_batch_size, q.weight.zero_point, q.learn_amp, q.learn_act_clip) == want, dev
        assert MitigationPlan.from_yaml(p.to_yaml()) == p
    assert any("125 steps x 2 windows on cpu" in n for n in p.notes)
    _fit_learned(p, r, torch.device("cuda"))                            # fitted once: a later mitigate keeps it
    assert (p.learned.steps, p.learned.device) == (125, "cpu")
    own = plan(None, "w4a4+kv4g32", "auto-fast")
    own.learned.steps = 50                                              # edited into the plan: stays
    _fit_learned(own, r, torch.device("cpu"))
    assert (own.learned.steps, own.learned.batch_size) == (50, 8)
    eng = plan(None, "w4a4+kv4g32", "auto-fast", target="engine")
    _fit_learned(eng, r, torch.device("cpu"))
    assert (eng.learned.steps, eng.learned.zero_point) == (125, "int")


def test_learned_budget_asks_for_bf16_only_where_the_device_runs_it(monkeypatch):
    """Without native bf16 (an AVX2 CPU) auto's budget trains in float32 and says so (amp None), so the plan and the
    recipe line describe what runs; with it, bf16 autocast. A GPU's w4a4 budget has no amp either way."""
    import torch

    from sysq.mitigate.api import _fit_learned
    from sysq.mitigate.plan import learned_budget
    from sysq.mitigate.preserve import apply_to_recipe
    from sysq.quant import get_recipe, learn
    cpu = torch.device("cpu")
    for native, want in ((True, "bf16"), (False, None)):
        monkeypatch.setattr(learn, "bf16_native", lambda device, native=native: native)
        a16 = learned_budget(get_recipe("w4a16"), cpu)
        assert a16.amp == want and (a16.steps, a16.attn_steps) == ((200, None) if native else (200, 100))
        a4 = learned_budget(get_recipe("w4a4+kv4g32"), cpu)
        assert a4.amp == want and (a4.steps, a4.batch_size, a4.lr) == ((125, 2, None) if native else (60, 2, 0.01))
        p4 = plan(None, "w4a4+kv4g32", "auto-fast")
        _fit_learned(p4, get_recipe("w4a4+kv4g32"), cpu)
        q4 = apply_to_recipe(get_recipe("w4a4+kv4g32"), p4)
        assert (q4.learn_steps, q4.learn_lr) == (a4.steps, a4.lr) and MitigationPlan.from_yaml(p4.to_yaml()) == p4
        assert learned_budget(get_recipe("w4a16"), "cpu").amp == want
        p = plan(None, "w4a16", "auto-fast")
        _fit_learned(p, get_recipe("w4a16"), cpu)
        r16 = apply_to_recipe(get_recipe("w4a16"), p)
        line = r16.describe()
        assert "learned rounding (200 steps" in line and ("bf16 autocast" in line) == native, line
        assert r16.learn_attn_steps == a16.attn_steps and ("(100 for the attention)" in line) == (not native), line
        assert ("200 steps/layer (100 for the attention)" in str(p)) == (not native), str(p)
        assert MitigationPlan.from_yaml(p.to_yaml()) == p
        eng = plan(None, "w4a16", "auto-fast", target="engine")      # integer zero points: still auto's own budget
        _fit_learned(eng, get_recipe("w4a16"), cpu)
        assert (eng.learned.device, eng.learned.amp, eng.learned.zero_point) == ("cpu", want, "int")
        assert eng.learned.attn_steps == a16.attn_steps
    assert learned_budget(get_recipe("w4a16")).amp == "bf16"          # before a device is known: the generic budget
