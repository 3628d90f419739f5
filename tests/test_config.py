import pytest

from harness.config import EvalConfig, build
from harness.errors import HarnessError


def test_defaults_flags_file_and_overrides_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("task: hotpotqa\nlimit: 3\n")
    cfg = build(EvalConfig, str(f), ["limit=5", "kv_cache=false", "metric=none"], seed=7)
    assert (cfg.task, cfg.limit, cfg.seed, cfg.kv_cache, cfg.metric) == ("hotpotqa", 5, 7, False, None)


def test_presets_resolve_by_name():
    assert build(EvalConfig, "smoke").model == "tiny-fitted"


@pytest.mark.parametrize("overrides, message", [
    (["limt=3"], "unknown config key 'limt'; did you mean: limit"),
    (["limit=abc"], "limit must be int"),
    (["limit=2.5"], "limit must be int"),
    (["kv_cache=maybe"], "kv_cache must be bool"),
    (["limit"], "expected key=value"),
])
def test_bad_overrides_are_one_clear_line(overrides, message):
    with pytest.raises(HarnessError, match=message.replace("(", r"\(")) as e:
        build(EvalConfig, None, overrides)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(HarnessError, match="config file not found"):
        build(EvalConfig, str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(HarnessError, match="not valid YAML"):
        build(EvalConfig, str(bad))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("tsk: cbt\n")
    with pytest.raises(HarnessError, match=f"{unknown}: unknown config key 'tsk'"):
        build(EvalConfig, str(unknown))


def test_preset_sections_apply_to_their_command_only():
    from harness.config import SynthConfig

    synth, ev = build(SynthConfig, "smoke"), build(EvalConfig, "smoke")
    assert (synth.model, ev.model) == ("tiny-fitted", "tiny-fitted")  # shared top-level keys
    assert (synth.questions, ev.limit) == (4, 4)
    assert build(SynthConfig, "cpu").questions == 8 and SynthConfig().questions == 16


@pytest.mark.parametrize("text, message", [
    ("synth:\n  questionz: 3\n", "synth: unknown config key 'questionz'; did you mean: questions"),
    ("eval: 3\n", "eval: expected a mapping"),
    ("explore_tim: 3\n", "unknown config key 'explore_tim'; did you mean: explore_time"),
])
def test_bad_preset_sections_fail_for_every_command(tmp_path, text, message):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(HarnessError, match=message):
        build(EvalConfig, str(f))


def test_an_unknown_preset_names_the_presets():
    from harness.config import presets

    assert {"cpu", "smoke"} <= set(presets())
    with pytest.raises(HarnessError) as e:
        build(EvalConfig, "fast")
    assert str(e.value) == f"unknown preset or config file 'fast'; presets: {', '.join(presets())}"
