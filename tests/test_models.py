"""The model catalogue: the tiny test models' cache key follows what they are built from."""

import shutil
from pathlib import Path
from types import SimpleNamespace

from harness import models, tiny


def test_the_tiny_models_rebuild_when_a_fixture_or_an_agent_prompt_changes(tmp_path, monkeypatch):
    assert models.MODELS.get("tiny-random").recipe == models.MODELS.get("tiny-fitted").recipe == tiny.sources_hash()
    assert models.MODELS.get("smollm2-135m").recipe == "gguf-q4_1-fp32-v1"  # its converted copy stays valid
    fixtures = shutil.copytree(tiny.FIXTURES, tmp_path / "fixtures")
    agents = shutil.copytree(Path(tiny.mas.__file__).parent, tmp_path / "mas",
                             ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(tiny, "FIXTURES", fixtures)
    monkeypatch.setattr(tiny, "mas", SimpleNamespace(__file__=str(agents / "__init__.py")))
    recipe = tiny.sources_hash.__wrapped__  # uncached
    hashes = [recipe()]
    assert hashes[0] == tiny.sources_hash()  # the copies are what the catalogue hashed
    for changed in (agents / "prompts.py", sorted(fixtures.glob("*/*.jsonl"))[0]):
        changed.write_text(changed.read_text() + "\n")
        hashes.append(recipe())
    assert len(set(hashes)) == 3
