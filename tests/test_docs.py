"""The documents hold together: links point at files that exist, every citation of a docs/ section
in the code names a section that exists, and the README's test command is the one CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
CITATION = re.compile(r"docs/([\w-]+\.md) §(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?")


def test_links_point_at_files_that_exist():
    broken = []
    for doc in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert broken == []


def test_cited_sections_exist():
    cited = []
    for path in [*(ROOT / "harness").rglob("*.py"), *(ROOT / "harness" / "presets").glob("*.yaml"), *DOCUMENTS]:
        for name, first, last in CITATION.findall(path.read_text()):
            cited += [(path, name, section) for section in (first, last) if section]
    assert cited, "no module cites docs/ any more: this test has nothing to check"
    missing = []
    for path, name, section in cited:
        doc = ROOT / "docs" / name
        headings = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", doc.read_text(), re.M) if doc.is_file() else []
        if section not in headings:
            missing.append(f"{path.relative_to(ROOT)}: docs/{name} §{section}")
    assert missing == []


def test_readme_gives_the_test_command_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    install, test = "bash scripts/install.sh", ".venv/bin/python -m pytest"
    assert install in ci and test in ci
    assert f"{install} && {test}" in (ROOT / "README.md").read_text()
