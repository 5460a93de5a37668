"""Run every benchmark (P1..P6) and rewrite the results section of docs/benchmarks.md.

Each benchmark runs as its own process with `--json`, so one that fails or crashes is reported
as such and the others still run. Only the text between `<!-- results:start -->` and
`<!-- results:end -->` is rewritten; prose around it is kept (the file and markers are created
when missing). `--smoke` runs every script's smoke mode and leaves the docs alone unless
`--docs` names a file explicitly. Full runs also keep their machine-readable results in
`bench/results/latest.json`; `--only P2` re-runs one benchmark and merges it with the others'
previous results (the table then says which rows come from which run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DOCS = REPO / "docs" / "benchmarks.md"
LATEST = BENCH / "results" / "latest.json"
START, END = "<!-- results:start -->", "<!-- results:end -->"
SCRIPTS = {
    "P1": "p1_accept_rate.py",
    "P2": "p2_latency.py",
    "P3": "p3_push.py",
    "P4": "p4_polling.py",
    "P5": "p5_scale.py",
    "P6": "p6_two_nodes.py",
}
INTRO = f"""# Benchmarks

How fast wagate is on one machine, measured by the scripts in `bench/` (`make bench` runs them
all and rewrites the results below). Every figure is measured against a baseline started by the
same script in the same run (usually `POST /ping` through the same server stack), because the
machines these run on are shared and noisy: absolute numbers move from run to run, ratios much
less. Each figure is the median of several runs; the spread is (max - min) / median.

{START}
{END}
"""


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    dirty = _git("status", "--porcelain", "--", "src")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": (wrk.stdout or wrk.stderr).split(" [")[0].strip() or "missing",
        "commit": _git("rev-parse", "--short", "HEAD")
        + (" + uncommitted src changes" if dirty else ""),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def run(names: list[str], smoke: bool, out_dir: Path) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        out = out_dir / f"{name}.json"
        argv = [sys.executable, str(BENCH / SCRIPTS[name]), "--json", str(out)]
        print(f"\n##### {name}: {' '.join(argv[1:])}", flush=True)
        started = time.monotonic()
        done = subprocess.run(argv + (["--smoke"] if smoke else []), check=False)
        if done.returncode == 0 and out.exists():
            results[name] = json.loads(out.read_text())
        else:
            results[name] = {"benchmark": name, "error": f"exited {done.returncode}", "figures": []}
        print(f"##### {name} took {time.monotonic() - started:.0f} s", flush=True)
    return results


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = (
        f"{value:,.0f}"
        if abs(value) >= 100
        else f"{value:.1f}"
        if abs(value) >= 10
        else f"{value:.2f}"
    )
    return f"{text} {unit}".strip()


def _facts_line(facts: dict[str, str]) -> str:
    return (
        f"**{facts['date']}** — {facts['nproc']} cores ({facts['cpu']}), Python "
        f"{facts['python']}, SQLite {facts['sqlite']}, {facts['wrk']}, commit "
        f"`{facts['commit']}`, load average before the run {facts['load']}"
    )


def render(facts: dict[str, str], results: dict[str, dict[str, Any]], smoke: bool) -> str:
    mode = " (smoke mode: tiny sizes, not judged)" if smoke else ""
    lines = [f"Last run: {_facts_line(facts)}{mode}."]
    for name, result in results.items():
        if result.get("facts", facts) != facts:
            lines.append(
                f"{name} is carried over from an earlier run: {_facts_line(result['facts'])}."
            )
    lines += [
        "",
        "| | Figure | Median (spread) | Baseline, same run | Ratio | Target | Met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| {name} | did not complete ({result['error']}) | | | | | ✗ |")
            continue
        for fig in result["figures"]:
            spread = f" (±{fig['spread'] * 50:.0f}%)" if len(fig["runs"]) > 1 else ""
            baseline = (
                f"{_num(fig['baseline'])} ({fig['baseline_label']})" if fig["baseline"] else "-"
            )
            ratio = f"{fig['ratio']:.2f}" if fig["ratio"] is not None else "-"
            met = {True: "✓", False: "✗", None: "-"}[fig["passed"]]
            lines.append(
                f"| {name} | {fig['label']} | {_num(fig['value'], fig['unit'])}{spread} | "
                f"{baseline} | {ratio} | {fig['target_text']} | {met} |"
            )
    lines += ["", "<details><summary>Run details (per-run figures, CPU use)</summary>", ""]
    for name, result in results.items():
        lines.append(f"**{name}** {result.get('title', '')}")
        lines.append("")
        lines += [f"- {note}" for note in result.get("notes", [])]
        lines.append("")
    lines.append("</details>")
    return "\n".join(lines)


def write_docs(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else INTRO
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n## Results\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{section}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCRIPTS), help="e.g. P1,P4")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--docs", type=Path, help=f"results file to rewrite (default {DOCS})")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    names = [n.strip().upper() for n in args.only.split(",") if n.strip()]
    if unknown := [n for n in names if n not in SCRIPTS]:
        sys.exit(f"unknown benchmarks {unknown}; choose from {', '.join(SCRIPTS)}")
    facts = machine_facts()
    with tempfile.TemporaryDirectory(prefix="wagate-bench-results-") as out:
        results = run(names, args.smoke, Path(out))
    for result in results.values():
        result["facts"] = facts
    if not args.smoke:
        if LATEST.exists() and set(names) != set(SCRIPTS):
            previous = json.loads(LATEST.read_text())["results"]
            results = {
                n: results.get(n) or previous[n] for n in SCRIPTS if n in results or n in previous
            }
        LATEST.parent.mkdir(exist_ok=True)
        LATEST.write_text(json.dumps({"facts": facts, "results": results}, indent=2))
    section = render(facts, results, args.smoke)
    print("\n" + section)
    docs = args.docs or (None if args.smoke else DOCS)
    if docs is not None and not args.no_docs:
        write_docs(docs, section)
        print(f"\nwrote {docs}")


if __name__ == "__main__":
    main()
