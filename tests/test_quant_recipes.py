"""Recipes: presets, modifiers, YAML, and clear errors for unknown or contradictory fields."""
import pytest

from sysq.errors import SysqError
from sysq.quant.recipes import PRESETS, Recipe, get_recipe


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_round_trips_through_yaml(name, tmp_path):
    r = get_recipe(name)
    assert r.name == name
    f = tmp_path / "r.yaml"
    f.write_text(r.to_yaml())
    again = get_recipe(str(f))
    assert (again.weight, again.act, again.kv, again.method, again.backend) == (r.weight, r.act, r.kv, r.method,
                                                                               r.backend)


def test_the_required_presets_mean_what_they_say():
    assert get_recipe("w8a16").act is None and get_recipe("w8a16").weight.bits == 8
    w4 = get_recipe("w4a16")
    assert (w4.weight.bits, w4.weight.granularity, w4.weight.group_size) == (4, "group", 128)
    assert get_recipe("w4a16-pc").weight.granularity == "channel"
    a = get_recipe("w8a8").act
    assert (a.bits, a.granularity, a.dynamic) == (8, "token", True)
    s = get_recipe("w8a8-static").act
    assert (s.granularity, s.dynamic) == ("tensor", False)
    assert get_recipe("w4a8").act.bits == 8 and get_recipe("w4a8").weight.bits == 4
    assert get_recipe("w4a4").act.bits == 4
    # bitsandbytes quantizes in its own formats: the description says which, not the (empty) weight spec
    assert "nf4" in get_recipe("bnb-nf4").describe() and "w16" not in get_recipe("bnb-nf4").describe()
    assert "> 6 kept in fp16" in get_recipe("bnb-int8").describe()


def test_modifiers_compose():
    r = get_recipe("w8a8+kv4")
    assert r.kv.bits == 4 and r.act.dynamic
    assert get_recipe("w8a8-static+kv8").kv.bits == 8
    assert get_recipe("w4a16+gptq").method == "gptq"
    assert get_recipe("w4a16+mse").weight.mse
    fz = get_recipe("w4a16-g64+fz")
    assert (fz.weight.zero_point, fz.weight.group_size, fz.weight.symmetric) == ("float", 64, False)
    assert "float-zero g64" in fz.describe()
    with pytest.raises(SysqError, match=r"'\+fz'.*asymmetric"):
        get_recipe("w8a16+fz")


def test_group_and_learned_step_modifiers():
    """+gN puts any preset's weights in groups of N (halved where N does not divide); +learnedNxB sets the learned
    step's budget: the INT4 options auto and the INT4 table choose among."""
    r = get_recipe("w4a8+g64+fz")
    assert (r.weight.granularity, r.weight.group_size, r.weight.zero_point, r.ragged) == ("group", 64, "float", "halve")
    assert r.act == get_recipe("w4a8").act
    learned = get_recipe("w4a16-g64+learned200x8")
    assert (learned.method, learned.learn_steps, learned.learn_batch_size) == ("learned", 200, 8)
    assert "200 steps/layer x 8 windows" in learned.describe()
    assert get_recipe("w4a16+learned20").learn_batch_size == 1
    tok = get_recipe("w4a16-g64+fz+learned200x8+tokenloss")
    assert (tok.learn_loss, tok.learn_steps, learned.learn_loss) == ("token", 200, "mse")
    assert "per-token loss" in tok.describe() and "per-token loss" not in learned.describe()
    a = get_recipe("w4a4+g64+ag64+kv4").act
    assert (a.granularity, a.group_size, a.dynamic, a.bits) == ("group", 64, True, 4)
    for bad, needle in (("w4a16+learned5x0", "learnedNxB"), ("w4a16+learnedx", "learnedNxB"),
                        ("fp+g64", "needs a weight quantizer"), ("w8a8-static+ag64", "needs dynamic")):
        with pytest.raises(SysqError, match=needle):
            get_recipe(bad)


def test_unknown_names_list_what_is_allowed():
    with pytest.raises(SysqError, match="unknown recipe 'w5a5'.*w8a8-static"):
        get_recipe("w5a5")
    with pytest.raises(SysqError, match=r"unknown recipe modifier '\+kv3'.*\+kv8"):
        get_recipe("w8a8+kv3")


def test_unknown_field_is_named_with_the_allowed_fields():
    with pytest.raises(SysqError, match="unknown recipe field 'wieght'.*allowed fields: .*weight"):
        get_recipe({"wieght": {"bits": 4}})
    with pytest.raises(SysqError, match="unknown field act.bit; allowed fields: bits"):
        get_recipe({"base": "w8a8", "act": {"bit": 4}})


def test_bad_values_are_named_with_the_allowed_values():
    with pytest.raises(SysqError, match="weight.bits=5 .*allowed values: 2, 3, 4, 8"):
        get_recipe({"base": "w8a16", "weight": {"bits": 5}})
    with pytest.raises(SysqError, match="method='awq'.*rtn, gptq"):
        get_recipe({"base": "w4a16", "method": "awq"})
    with pytest.raises(SysqError, match="act.granularity='channel'.*tensor, token, group"):
        get_recipe({"base": "w8a8", "act": {"granularity": "channel"}})


@pytest.mark.parametrize("fields, needle", [
    ({"base": "w8a8", "act": {"dynamic": False}}, "act.granularity='token' with act.dynamic=False"),
    ({"base": "w8a16", "weight": {"group_size": 64}}, "group_size=64 contradicts"),
    ({"base": "bnb-nf4", "weight": {"bits": 4}}, "bitsandbytes' own scheme"),
    ({"base": "w4a8", "backend": "int8"}, "backend 'int8'"),
    ({"method": "gptq"}, "method='gptq' needs a weight quantizer"),
    ({"base": "w8a8", "act": {"clip_ratio": 1.5}}, r"act.clip_ratio=1.5 must lie in \(0, 1\]"),
    ({"base": "w8a16", "weight": {"zero_point": "float"}}, "zero_point='float' needs weight.symmetric=false"),
    ({"base": "w4a16", "weight": {"zero_point": "half"}}, "weight.zero_point='half'.*int, float"),
    ({"base": "w8a8", "act": {"symmetric": False, "zero_point": "float"}}, "act.zero_point='float' is not supp"),
])
def test_contradictions_are_errors(fields, needle):
    with pytest.raises(SysqError, match=needle):
        get_recipe(fields)


def test_yaml_file_with_base_and_overrides(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: w8a8-static\nact: {clip_ratio: 0.8, preserve_positions: [0]}\nkv: {bits: 4}\n")
    r = get_recipe(f)
    assert r.name == "mine" and r.act.clip_ratio == 0.8 and r.act.preserve_positions == (0,)
    assert r.act.bits == 8 and not r.act.dynamic and r.kv.bits == 4
    with pytest.raises(SysqError, match="not found"):
        get_recipe(tmp_path / "missing.yaml")


def test_dataclass_form_validates_too():
    with pytest.raises(SysqError, match="backend='gpu'"):
        Recipe(backend="gpu")
