import pytest

from harness.config import CHOICES, EvalConfig, SelectConfig, build
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


@pytest.mark.parametrize("override, message", [
    ("influence.path=fsat", "influence.path must be one of reference, fast, server, screen, got 'fsat'"),
    ("server.flavour=vllm2", "server.flavour must be one of openai, vllm, llama.cpp"),
    ("dtype=fp32", "dtype must be one of float32, bfloat16, float16"),
])
def test_a_name_a_later_stage_reads_is_checked_before_any_work(override, message):
    with pytest.raises(HarnessError, match=message):
        build(SelectConfig, None, [override])


def test_the_config_names_what_each_stage_accepts():
    # config may not import the stages that read these keys; their registries and its CHOICES agree
    from harness.backends.gguf_export import PRECISIONS
    from harness.backends.openai import FLAVOURS
    from harness.dits.influence.estimator import PATHS
    from harness.dits.influence.reference_path import STEP_OPTIMIZERS

    for key, registry in (("influence.path", PATHS), ("influence.step_optimizer", STEP_OPTIMIZERS),
                          ("server.flavour", FLAVOURS), ("server.precision", PRECISIONS)):
        assert set(CHOICES[key]) == set(registry), key


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


# -- composition: one grammar for presets and the command line ---------------------------------

def resolved(overrides=(), text: str | None = None, tmp_path=None, **flags) -> dict:
    """Every section as `harness run` composes it (flags are the run's), by dotted name: `run.sft.lr`."""
    from harness.config import CONFIG_CLASSES, as_dict, compose, flatten, settings

    file = None
    if text is not None:
        file = tmp_path / "p.yaml"
        file.write_text(text)
    given = settings(CONFIG_CLASSES, str(file) if file else None, list(overrides), flags, flag_prefix=("run",))
    return {f"{c.section}.{k}": v for c in CONFIG_CLASSES for k, v in flatten(as_dict(compose(c, given))).items()}


TOP, SECTION = "max_new_tokens: 10\n", "synth:\n  max_new_tokens: 20\n"


@pytest.mark.parametrize("text, flags, overrides, run, synth, others", [
    (None, {}, [], 128, 128, 128),  # the defaults
    (TOP, {}, [], 10, 10, 10),  # a preset's top level reaches every section
    (TOP + SECTION, {}, [], 10, 20, 10),  # its section narrows
    (SECTION + TOP, {}, [], 10, 20, 10),  # by rank, not by order in the file
    (TOP + SECTION, {"max_new_tokens": 25}, [], 25, 20, 10),  # a flag (`harness run`'s) beats the preset
    (TOP + SECTION, {"max_new_tokens": 25}, ["max_new_tokens=30"], 30, 30, 30),  # unprefixed beats flags, sections
    (TOP + SECTION, {}, ["max_new_tokens=30", "synth.max_new_tokens=40"], 30, 40, 30),  # prefixed beats unprefixed
    (TOP + SECTION, {}, ["synth.max_new_tokens=40", "max_new_tokens=30"], 30, 40, 30),  # whatever the order
    (TOP + SECTION, {}, ["synth.max_new_tokens=40", "synth.max_new_tokens=41"], 10, 41, 10),  # same rank: the later
], ids=["defaults", "top", "section", "section-first", "flag", "unprefixed", "prefixed", "prefixed-first", "later"])
def test_precedence_across_the_five_levels(tmp_path, text, flags, overrides, run, synth, others):
    got = resolved(overrides, text, tmp_path, **flags)
    assert (got["run.max_new_tokens"], got["synth.max_new_tokens"]) == (run, synth)
    assert got["eval.max_new_tokens"] == got["select.max_new_tokens"] == others


@pytest.mark.parametrize("overrides, expected", [
    # unprefixed: every section and nested section that has the key
    (["seed=3"], {"run.seed": 3, "synth.seed": 3, "select.seed": 3, "eval.seed": 3}),
    (["lr=0.1"], {"run.sft.lr": 0.1, "run.dpo.lr": 0.1}),
    (["r=8"], {"run.lora.r": 8, "select.lora.r": 8}),
    (["beta=0.2"], {"run.dpo.beta": 0.2, "select.influence.beta": 0.2}),
    (["temperature=0.5"], {"eval.temperature": 0.5, "run.sft.temperature": 0.5}),
    # ...where a section's own key shadows its nested sections'
    (["alpha=0.3"], {"run.alpha": 0.3, "select.alpha": 0.3, "run.lora.alpha": 32, "select.lora.alpha": 32}),
    (["batch_size=8"], {"run.batch_size": 8, "run.sft.batch_size": 4, "run.dpo.batch_size": 4}),
    # prefixed: one section, one nested section wherever it is, or one nested section of one section
    (["sft.lr=0.1"], {"run.sft.lr": 0.1, "run.dpo.lr": 5e-5}),
    (["lora.r=8"], {"run.lora.r": 8, "select.lora.r": 8}),
    (["select.lora.r=8"], {"run.lora.r": 32, "select.lora.r": 8}),
    (["select.r=8"], {"run.lora.r": 32, "select.lora.r": 8}),
    (["run.alpha=0.3"], {"run.alpha": 0.3, "select.alpha": 0.5, "run.lora.alpha": 32}),
    (["run.lora.alpha=16"], {"run.alpha": None, "run.lora.alpha": 16, "select.lora.alpha": 32}),
    (["select.unit_size=3"], {"select.influence.unit_size": 3}),
    (["influence.eta=0.5", "influence.path=reference"], {"select.influence.eta": 0.5,
                                                          "select.influence.path": "reference"}),
    (["synth.seed=3"], {"run.seed": 0, "synth.seed": 3, "eval.seed": 0}),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_unprefixed_keys_reach_every_section_and_prefixes_narrow_them(overrides, expected):
    got = resolved(overrides)
    assert {k: got[k] for k in expected} == expected


def test_yaml_mappings_are_prefixes(tmp_path):
    got = resolved([], "lora:\n  r: 8\nselect:\n  lora:\n    r: 4\n  unit_size: 3\nrun:\n  sft:\n    lr: 0.1\n",
                   tmp_path)
    assert (got["run.lora.r"], got["select.lora.r"], got["select.influence.unit_size"]) == (8, 4, 3)
    assert (got["run.sft.lr"], got["run.dpo.lr"]) == (0.1, 5e-5)


@pytest.mark.parametrize("overrides, text, message", [
    (["lrr=1"], None, "override: unknown config key 'lrr'; did you mean: lr"),
    (["synt.seed=1"], None, "override: synt.seed: unknown section 'synt'"),
    (["eval.unit_size=1"], None, "unknown config key 'eval.unit_size'"),
    (["lora.iterations=1"], None, "unknown config key 'lora.iterations'; valid: alpha, dropout, r"),
    (["sft_lr=1"], None, "unknown config key 'sft_lr'; renamed: sft.lr"),
    (["influence_path=fast"], None, "unknown config key 'influence_path'; renamed: influence.path"),
    (["r=2.5"], None, "override: lora.r must be int, got '2.5'"),
    ([], "run:\n  sft:\n    lrr: 1\n", "run.sft: unknown config key 'lrr'; did you mean: lr"),
    ([], "lora: 3\n", "lora: expected a mapping"),
    ([], "synt:\n  seed: 1\n", "unknown section 'synt'; did you mean: synth"),
    ([], "lora_r: 8\n", "unknown config key 'lora_r'; renamed: lora.r"),
])
def test_an_unknown_key_anywhere_is_one_line(tmp_path, overrides, text, message):
    with pytest.raises(HarnessError, match=message.replace("(", r"\(")) as e:
        resolved(overrides, text, tmp_path)
    assert "\n" not in str(e.value)


def test_a_command_refuses_keys_only_other_commands_have():
    from harness.config import SelectConfig

    with pytest.raises(HarnessError, match="eval override: unknown config key 'unit_size'"):
        build(EvalConfig, None, ["unit_size=1"])
    assert build(SelectConfig, None, ["unit_size=1"]).influence.unit_size == 1


@pytest.mark.parametrize("section, flat, expected", [
    ("run", {"sft_lr": 0.1, "sft_questions": 12, "sft_from_initial": False, "dpo_beta": 0.5, "max_seq_length": 64,
             "max_prompt_length": 32, "lora_r": 4, "lora_dropout": 0.0, "iterations": 2},
     {"sft.lr": 0.1, "sft.questions": 12, "sft.from_initial": False, "dpo.beta": 0.5, "sft.max_seq_length": 64,
      "dpo.max_prompt_length": 32, "lora.r": 4, "lora.alpha": 32, "lora.dropout": 0.0, "iterations": 2,
      "dpo.lr": 5e-5}),
    ("select", {"validation_size": 8, "influence_path": "reference", "beta": 0.3, "lora_alpha": 4, "eta_auto": True},
     {"influence.validation_size": 8, "influence.path": "reference", "influence.beta": 0.3, "lora.alpha": 4,
      "lora.dropout": 0.0, "influence.eta_auto": True, "influence.unit_size": 5}),
    ("eval", {"limit": 3}, {"limit": 3, "max_new_tokens": 128}),
])
def test_old_flat_records_read_in_the_nested_layout(section, flat, expected):
    from harness.config import SECTIONS, as_dict, flatten, recorded

    got = flatten(recorded(section, flat))
    assert {k: got[k] for k in expected} == expected
    assert set(got) == set(flatten(as_dict(SECTIONS[section]())))  # no flat key left over
    assert recorded(section, as_dict(SECTIONS[section]())) == as_dict(SECTIONS[section]())  # today's: as is


def test_max_new_tokens_has_one_default():
    from harness.config import CONFIG_CLASSES, RuntimeConfig
    from harness.mas.dialogue import DialogueConfig

    assert DialogueConfig().max_new_tokens == RuntimeConfig.max_new_tokens
    assert {c().max_new_tokens for c in CONFIG_CLASSES} == {RuntimeConfig.max_new_tokens}


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_every_preset_composes_every_section(preset):
    from harness.config import CONFIG_CLASSES, compose, settings

    given = settings(CONFIG_CLASSES, preset)
    sections = {c.section: compose(c, given) for c in CONFIG_CLASSES}
    assert sections["run"].lora.r == sections["select"].lora.r  # the presets size both adapters alike


def test_validate_prints_every_section_nested_keys_included_and_refuses_a_bad_key(capsys):
    from harness.cli import main

    assert main(["validate", "--config", "smoke", "select.lora.r=8"]) == 0
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]) for line in capsys.readouterr().out.splitlines()}
    assert {("select", "lora.r", "8"), ("run", "lora.r", "4"), ("run", "sft.lr", "0.005"),
            ("select", "influence.unit_size", "2"), ("eval", "limit", "8"), ("synth", "questions", "4")} <= rows
    assert main(["validate", "--config", "smoke", "eval.unit_size=1"]) == 2
    assert "unknown config key 'eval.unit_size'" in capsys.readouterr().err
