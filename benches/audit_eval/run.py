"""`make audit-eval`: the audit's precision on real code, beside ruff's and flake8-async's
ASYNC rules on the same code.

The corpus is the source distributions pinned in ``corpus.txt`` (name, version and sha256,
downloaded with pip from the package index into ``.venv/audit-eval/``, never committed).
Every finding of ``admission audit`` on it is labelled in ``labels.csv`` (TP or FP, with the
context and a note): a finding without a label fails the run, so the labels stay complete as
the rules change. The labelling rule: TP when the code really does what the finding says
(the fan-out grows with data, the thread is never joined, the retry waits a fixed delay, ...),
whatever the context (library, test, example: see the ``context`` column); FP when the finding
misreads the code.

Printed: per rule, findings, TP, FP, precision with its 95 % Wilson interval; overall; our
false positives per kLOC; ruff's and flake8-async's ASYNC findings per kLOC (their findings
are not labelled: they match names, so by the same rule nearly all are TP).

    .venv/bin/python benches/audit_eval/run.py [--allow-unlabelled] [--no-flake8]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = REPO / ".venv" / "audit-eval"
BIN = Path(sys.executable).parent


@dataclass
class Project:
    name: str  # "litellm-1.67.0"
    root: Path
    lines: int


def _run(command: list[str], cwd: Path) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=3600, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout, elapsed


def fetch() -> list[Project]:
    """Download (pinned by hash) and unpack the corpus; the projects, in a fixed order."""
    downloads = CACHE / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary"]
    pip += [":all:", "--require-hashes", "-r", str(HERE / "corpus.txt"), "-d", str(downloads)]
    subprocess.run(pip, check=True, timeout=1800)
    projects = []
    for archive in sorted(downloads.glob("*.tar.gz")):
        name = archive.name.removesuffix(".tar.gz")
        root = CACHE / "src" / name
        if not root.exists():
            with tarfile.open(archive) as tar:
                tar.extractall(CACHE / "src", filter="data")
        lines = sum(p.read_bytes().count(b"\n") for p in root.rglob("*.py"))
        projects.append(Project(name, root, lines))
    return projects


def ours(project: Project, config: Path) -> tuple[list[dict[str, object]], float]:
    command = [sys.executable, "-m", "admission", "audit", "--format", "json", "--exit-zero"]
    out, elapsed = _run([*command, "--config", str(config), "."], project.root)
    findings: list[dict[str, object]] = json.loads(out)["findings"]
    return findings, elapsed


def ruff_async(project: Project) -> tuple[int, float]:
    ruff = str(BIN / "ruff") if (BIN / "ruff").exists() else "ruff"
    command = [ruff, "check", "--isolated", "--select", "ASYNC", "--output-format", "json"]
    out, elapsed = _run([*command, "--exit-zero", "."], project.root)
    return len(json.loads(out)), elapsed


def flake8_async(project: Project) -> tuple[int, float]:
    command = [sys.executable, "-m", "flake8", "--isolated", "--select", "ASYNC", "."]
    out, elapsed = _run(command, project.root)
    return len([line for line in out.splitlines() if ": ASYNC" in line]), elapsed


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-unlabelled", action="store_true")
    parser.add_argument("--no-flake8", action="store_true", help="skip flake8-async (slow)")
    args = parser.parse_args()
    projects = fetch()
    config = CACHE / "audit-eval.toml"
    config.write_text("[tool.admission.audit]\n")  # the defaults, whatever surrounds the corpus

    labels: dict[tuple[str, str, int, str], dict[str, str]] = {}
    with (HERE / "labels.csv").open(newline="") as file:
        for row in csv.DictReader(file):
            labels[(row["project"], row["path"], int(row["line"]), row["code"])] = row

    per_rule: dict[str, Counter[str]] = {}
    unlabelled: list[str] = []
    seen: set[tuple[str, str, int, str]] = set()
    rows = []
    total_lines = 0
    for project in projects:
        findings, our_time = ours(project, config)
        ruff_count, ruff_time = ruff_async(project)
        flake8_count, flake8_time = (0, 0.0) if args.no_flake8 else flake8_async(project)
        total_lines += project.lines
        for finding in findings:
            key = (project.name, str(finding["path"]), int(finding["line"]), str(finding["code"]))
            seen.add(key)
            label = labels.get(key)
            if label is None:
                unlabelled.append(":".join(map(str, key)))
                continue
            per_rule.setdefault(key[3], Counter())[label["label"]] += 1
        rows.append(
            (project, len(findings), our_time, ruff_count, ruff_time, flake8_count, flake8_time)
        )

    print(f"corpus: {len(projects)} projects, {total_lines:,} lines\n")
    print("| project | kLOC | admission audit | s | ruff ASYNC | s | flake8-async | s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for project, n, t, rn, rt, fn, ft in rows:
        flake8 = "-" if args.no_flake8 else f"{fn} | {ft:.1f}"
        print(
            f"| {project.name} | {project.lines / 1000:.1f} | {n} | {t:.1f} | {rn} | {rt:.1f} "
            f"| {flake8} |"
        )
    print("\n| rule | findings | TP | FP | precision | 95 % interval |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    tp_all = fp_all = 0
    for code in sorted(per_rule):
        tp, fp = per_rule[code]["TP"], per_rule[code]["FP"]
        tp_all, fp_all = tp_all + tp, fp_all + fp
        low, high = wilson(tp, tp + fp)
        print(f"| {code} | {tp + fp} | {tp} | {fp} | {tp / (tp + fp):.0%} | {low:.0%}-{high:.0%} |")
    low, high = wilson(tp_all, tp_all + fp_all)
    n_all = tp_all + fp_all
    print(
        f"| all | {n_all} | {tp_all} | {fp_all} | {tp_all / max(n_all, 1):.0%} "
        f"| {low:.0%}-{high:.0%} |"
    )
    kloc = total_lines / 1000
    ruff_total = sum(r[3] for r in rows)
    print(
        f"\nfalse positives per kLOC: {fp_all / kloc:.3f} (admission audit); findings per "
        f"kLOC: {n_all / kloc:.3f} (admission audit), {ruff_total / kloc:.3f} (ruff ASYNC)"
        + ("" if args.no_flake8 else f", {sum(r[5] for r in rows) / kloc:.3f} (flake8-async)")
    )
    stale = sorted(":".join(map(str, k)) for k in set(labels) - seen)
    if stale:
        print(f"\n{len(stale)} labels match no finding any more (remove them):")
        print("\n".join(f"  {s}" for s in stale))
    if unlabelled:
        print(f"\n{len(unlabelled)} findings have no label in labels.csv:", file=sys.stderr)
        print("\n".join(f"  {u}" for u in unlabelled), file=sys.stderr)
        return 0 if args.allow_unlabelled else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
