"""`harness leaderboard`: a suite's report as leaderboard.md, leaderboard.json (schema-checked) and a
static HTML page with a sortable table and the plots; the paper's numbers beside ours, labelled as
reported."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import jsonschema

from harness import runs as runsmod
from harness.errors import HarnessError
from harness.report import tables
from harness.report.build import Report, _rounded, copy_records, write_into

HERE = Path(__file__).parent
SCHEMA_PATH = HERE / "leaderboard.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
REPORTED = json.loads((HERE / "reported.json").read_text())


INFLUENCE_HEADING = ("## Influence resolution (per selection: distinct values over units, split-half Spearman "
                     "between the two halves of V)")


def document(report: Report) -> dict:
    """The leaderboard as data: what leaderboard.json holds and the other formats show."""
    return {
        "schema_version": 1,
        "suite": report.name,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_sha": runsmod.git_sha(),
        "versions": runsmod.versions(),
        "runs": [{"run_id": r.spec["run_id"], "task": r.task, "policy": r.label, "seed": r.seed,
                  "budget": r.budget, "device": r.spec["device"].get("gpu") or r.spec["device"]["device"],
                  "directory": r.path.name, "git_sha": r.spec.get("git_sha")} for r in report.runs],
        "comparison": _records(report.comparison),
        "cost_totals": _records(report.ledger[report.ledger["stage"] == "total"]),
        "cost_per_gain": _records(report.cost_per_gain),
        "cost_to_target": _records(report.cost_to_target),
        "influence": _records(report.influence),
        "credit": _records(report.credit),
        "search_models": _records(report.search_models),
        "plots": report.plots,
        "reported": REPORTED,
    }


def _records(frame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))  # NaN as null: JSON has no NaN


def validate(doc: dict) -> None:
    try:
        jsonschema.validate(doc, SCHEMA)
    except jsonschema.ValidationError as e:
        where = "/".join(str(k) for k in e.absolute_path) or "(top)"
        raise HarnessError(f"leaderboard.json: {where}: {e.message} (schema {SCHEMA_PATH.name})") from None


def publish(report: Report, out: Path, with_records: bool = False) -> list[str]:
    """The report's tables and plots, leaderboard.{md,json,html} and, `with_records`, a copy of the
    run records (runs/) into `out`, replaced whole and at once."""
    with runsmod.run_directory(out) as tmp:
        names = write_into(report, tmp)
        doc = document(report)
        validate(doc)
        files = {"leaderboard.json": json.dumps(doc, indent=2, ensure_ascii=False) + "\n",
                 "leaderboard.md": markdown(report, doc), "leaderboard.html": page(report, doc)}
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        if with_records:
            copy_records(report, tmp / "runs")
    return sorted(files) + names + (["runs/"] if with_records else [])


def reported_frame():
    import pandas as pd

    return pd.DataFrame([{"table": t["title"], **row} for t in REPORTED["tables"] for row in t["rows"]])


def markdown(report: Report, doc: dict) -> str:
    shown = tables.display(report.comparison, report.baselines)
    totals = report.ledger[report.ledger["stage"] == "total"]
    parts = [f"# Leaderboard: {doc['suite']}", "",
             f"Generated {doc['generated']} from {len(doc['runs'])} finished runs ({provenance(doc)}).", "",
             "## Our runs", "", shown.to_markdown(index=False), "",
             "## Cost per gain (training cost over a baseline, per metric point x100)", "",
             _rounded(report.cost_per_gain).to_markdown(index=False) if len(report.cost_per_gain) else "(no baseline in the suite)",
             "", *target_section(report),
             "", INFLUENCE_HEADING, "", _rounded(report.influence).to_markdown(index=False)
             if len(report.influence) else "(no influence selector in the suite)",
             *coach_sections(report),
             "", COST_HEADING, "", _rounded(totals[run_cost_columns(totals)]).to_markdown(index=False),
             "", "## Plots", "", *[f"![{p}]({p})" for p in report.plots], "",
             f"## Reported by the paper ({REPORTED['status']})", "",
             f"{REPORTED['source']}; {REPORTED['model']}. Percent. Not produced by this harness.", "",
             reported_frame().to_markdown(index=False), ""]
    return "\n".join(parts)


COST_HEADING = ("## Cost per run (every stage it used, shared ones included; device-seconds charge a reused influence "
                "estimate; the training cost leaves out the evaluations)")
# Shown only where some run has them: a coach's and TOA's other models' work.
OPTIONAL_COSTS = ("coach_calls", "coach_tokens", "offpolicy_actions")


def run_cost_columns(totals) -> list[str]:
    return ["task", "policy", "seed", "budget", "generated_tokens", "prompt_tokens",
            *(c for c in OPTIONAL_COSTS if totals[c].fillna(0).any()), "training_steps", "wall_seconds",
            "device_seconds", "cost_tokens", "cost_device_seconds"]


def target_section(report: Report) -> list[str]:
    if not len(report.cost_to_target):
        return ["## Cost to reach a target's score", "",
                "(no target: the suite has no optima_full run; `--target` names another policy)"]
    return [f"## Cost to reach {report.target}'s score (reached: the mean at or above the target's; whether the "
            "difference is resolved is the comparison's to say)", "",
            _rounded(report.cost_to_target).to_markdown(index=False)]


def provenance(doc: dict) -> str:
    """Which code ran the runs and which wrote the report: they differ once records are republished."""
    ran = sorted({r["git_sha"] or "unrecorded" for r in doc["runs"]})
    return f"runs at git {', '.join(ran)}; report at git {doc['git_sha']}"


def coach_sections(report: Report) -> list[str]:
    """The coach's figures and TOA's models, where the suite has them (nothing otherwise)."""
    out = []
    if len(report.credit):
        out += ["", "## Coach credit (per coach use: parse rate, Spearman against the task's reward and final "
                    "correctness, credit by agent, bias by action type)", "",
                _rounded(report.credit).to_markdown(index=False)]
    if len(report.search_models):
        out += ["", "## Acting models of the tree search (TOA)", "", _rounded(report.search_models).to_markdown(index=False)]
    return out


def _table_html(frame, table_id: str, sortable: bool) -> str:
    head = "".join(f'<th data-col="{i}">{html.escape(str(c))}</th>' for i, c in enumerate(frame.columns))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    cls = ' class="sortable"' if sortable else ""
    return f'<table id="{table_id}"{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# Clicking a header sorts by it (again: the other way); `#sort=<column>:<asc|desc>` in the address
# sorts on load, which is how a page is linked sorted and how the browser test drives it.
SCRIPT = """
function cellValue(td) {
  const text = td.textContent.trim();
  const number = parseFloat(text.replace('±', ' ').split(' ')[0]);
  return isNaN(number) ? text : number;
}
function sortTable(table, col, dir) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
    const order = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
    return dir === 'asc' ? order : -order;
  });
  rows.forEach(r => body.appendChild(r));
  table.dataset.sortCol = col; table.dataset.sortDir = dir;
}
document.querySelectorAll('table.sortable').forEach(table => {
  table.querySelectorAll('th').forEach(th => th.addEventListener('click', () => {
    const col = Number(th.dataset.col);
    const dir = table.dataset.sortCol == col && table.dataset.sortDir === 'desc' ? 'asc' : 'desc';
    sortTable(table, col, dir);
  }));
});
const wanted = /sort=([^:&]+):(asc|desc)/.exec(decodeURIComponent(location.hash));
if (wanted) {
  const table = document.getElementById('comparison');
  const th = Array.from(table.querySelectorAll('th')).find(h => h.textContent === wanted[1]);
  if (th) sortTable(table, Number(th.dataset.col), wanted[2]);
}
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
table.sortable th { cursor: pointer; background: #f3f3f3; }
.reported { color: #555; }
img { max-width: 48%; margin: 0.5em; border: 1px solid #ddd; }
"""


def page(report: Report, doc: dict) -> str:
    shown = tables.display(report.comparison, report.baselines)
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Leaderboard: {html.escape(doc['suite'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>Leaderboard: {html.escape(doc['suite'])}</h1>",
        (f"<p>Generated {doc['generated']} from {len(doc['runs'])} finished runs "
         f"({html.escape(provenance(doc))}). Click a column to sort.</p>"),
        "<h2>Our runs</h2>", _table_html(shown, "comparison", True),
        "<h2>Cost per gain</h2>", _table_html(_rounded(report.cost_per_gain), "cost-per-gain", True)
        if len(report.cost_per_gain) else "<p>No baseline in the suite.</p>",
        f"<h2>Cost to reach {html.escape(report.target)}'s score</h2>",
        _table_html(_rounded(report.cost_to_target), "cost-to-target", True) if len(report.cost_to_target)
        else "<p>No target: the suite has no optima_full run; <code>--target</code> names another policy.</p>",
        f"<h2>{html.escape(INFLUENCE_HEADING[3:])}</h2>", _table_html(_rounded(report.influence), "influence", True)
        if len(report.influence) else "<p>No influence selector in the suite.</p>",
        *(["<h2>Coach credit</h2>", _table_html(_rounded(report.credit), "credit", True)] if len(report.credit) else []),
        *(["<h2>Acting models of the tree search (TOA)</h2>",
           _table_html(_rounded(report.search_models), "search-models", True)] if len(report.search_models) else []),
        "<h2>Plots</h2>", *[f'<img src="{html.escape(p)}" alt="{html.escape(p)}">' for p in report.plots],
        f"<h2 class=\"reported\">Reported by the paper ({html.escape(REPORTED['status'])})</h2>",
        (f"<p class=\"reported\">{html.escape(REPORTED['source'])}; {html.escape(REPORTED['model'])}. "
         "Percent. Not produced by this harness.</p>"),
        _table_html(reported_frame(), "reported", True),
        f"<script>{SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts) + "\n"
