"""`make audit-eval`: the audit's precision on real code, beside ruff's and flake8-async's
ASYNC rules on the same code.

Five corpora, each a list of source distributions pinned by name, version and sha256,
downloaded with pip from the package index into ``.venv/audit-eval/`` (never committed):

- ``seen`` (``corpus.txt``, labels in ``labels.csv``): read while the rules were written;
- ``holdout`` (``holdout.txt``, labels in ``holdout_labels.csv``): chosen and pinned before
  any of its findings was read; its first run, with the rules as they were then, is the
  figure for unseen code (RESULTS.md keeps it in its own block, ``holdout-unseen``);
- ``holdout2`` (``holdout2.txt``, labels in ``holdout2_labels.csv``): a second held-out
  corpus, pinned before the audit ran on it, once the first had been read for fixes; its
  first run is in the block ``holdout2-unseen``;
- ``holdout3`` (``holdout3.txt``, labels in ``holdout3_labels.csv``): a third, pinned before
  the audit ran on it, once the second had been read for fixes; its first run is in the
  block ``holdout3-unseen``;
- ``holdout4`` (``holdout4.txt``, labels in ``holdout4_labels.csv``): a fourth, pinned with
  the rules made stricter on the four labelled corpora above (used as a training set) and
  before the audit ran on it; its first run is in the block ``holdout4-unseen``;
- ``holdout5`` (``holdout5.txt``, labels in ``holdout5_labels.csv``): a fifth, pinned
  (committed) before the audit ran on it, once the fourth had been read for fixes; its first
  run is in the block ``holdout5-unseen``.

Every finding of ``admission audit`` is labelled (TP or FP, with the context and a note): a
finding without a label fails the run, so the labels stay complete as the rules change. The
labelling rule: TP when the code really does what the finding says (the fan-out grows with
data, the thread is never joined, the retry waits a fixed delay, ...), whatever the context
(library, test, example: the ``context`` column); FP when the finding misreads the code.

Printed (markdown), per corpus: per project, the three tools' findings and times; per rule,
findings, TP, FP, precision with its 95 % Wilson interval; overall; false positives per kLOC;
ruff's and flake8-async's ASYNC findings per kLOC (their findings are not labelled: they
match names, so by the same rule nearly all are TP). ``--write-results`` puts each corpus's
tables into benches/RESULTS.md between ``<!-- audit-eval:NAME -->`` and
``<!-- /audit-eval:NAME -->`` (NAME the corpus, or ``--block``): the figures there are this
script's output, never copied by hand.

    .venv/bin/python benches/audit_eval/run.py [--corpus seen holdout holdout2 holdout3 holdout4 holdout5]
        [--no-flake8] [--allow-unlabelled] [--write-results] [--block NAME]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
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
RESULTS = REPO / "benches" / "RESULTS.md"
RULES = "python/admission/audit"

# corpus name: (pinned sdists, labels)
CORPORA = {
    "seen": ("corpus.txt", "labels.csv"),
    "holdout": ("holdout.txt", "holdout_labels.csv"),
    "holdout2": ("holdout2.txt", "holdout2_labels.csv"),
    "holdout3": ("holdout3.txt", "holdout3_labels.csv"),
    "holdout4": ("holdout4.txt", "holdout4_labels.csv"),
    "holdout5": ("holdout5.txt", "holdout5_labels.csv"),
}

LabelKey = tuple[str, str, int, str]  # project, path, line, code


@dataclass
class Project:
    name: str  # "litellm-1.67.0"
    root: Path
    lines: int


@dataclass
class Run:
    project: Project
    ours: int
    ours_s: float
    ruff: int
    ruff_s: float
    flake8: int | None  # None: not run
    flake8_s: float


def _run(command: list[str], cwd: Path) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=3600, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout, elapsed


def fetch(corpus: str) -> list[Project]:
    """Download (pinned by hash) and unpack a corpus; its projects, in a fixed order."""
    pinned = HERE / CORPORA[corpus][0]
    names = [
        line.split("==")[0].strip()
        for line in pinned.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    downloads = CACHE / corpus / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    # Only the corpus's own packages as sdists: their build dependencies (needed to read the
    # metadata) come as wheels, not built from source.
    pip += [f"--no-binary={','.join(names)}", "--require-hashes", "-r", str(pinned)]
    subprocess.run([*pip, "-d", str(downloads)], check=True, timeout=1800)
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


def read_labels(corpus: str) -> dict[LabelKey, dict[str, str]]:
    labels = {}
    with (HERE / CORPORA[corpus][1]).open(newline="") as file:
        for row in csv.DictReader(file):
            labels[(row["project"], row["path"], int(row["line"]), row["code"])] = row
    return labels


def rules_version() -> str:
    """The commit the rules were run at (HEAD, and the last commit that changed them)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("log", "-1", "--format=%h", "--", RULES)
    dirty = " with uncommitted changes" if git("status", "--porcelain", "--", RULES) else ""
    return f"`{RULES}` at {head}{dirty} (last changed in {changed})"


def evaluate(corpus: str, *, no_flake8: bool) -> tuple[str, list[str]]:
    """One corpus's tables (markdown) and its unlabelled findings."""
    projects = fetch(corpus)
    config = CACHE / "audit-eval.toml"
    config.write_text("[tool.admission.audit]\n")  # the defaults, whatever surrounds the corpus
    labels = read_labels(corpus)

    per_rule: dict[str, Counter[str]] = {}
    unlabelled: list[str] = []
    seen: set[LabelKey] = set()
    runs = []
    for project in projects:
        findings, our_time = ours(project, config)
        ruff_count, ruff_time = ruff_async(project)
        flake8_count, flake8_time = (None, 0.0) if no_flake8 else flake8_async(project)
        for finding in findings:
            key = (project.name, str(finding["path"]), int(finding["line"]), str(finding["code"]))
            seen.add(key)
            label = labels.get(key)
            if label is None:
                unlabelled.append(":".join(map(str, key)))
                continue
            per_rule.setdefault(key[3], Counter())[label["label"]] += 1
        runs.append(
            Run(project, len(findings), our_time, ruff_count, ruff_time, flake8_count, flake8_time)
        )

    kloc = sum(run.project.lines for run in runs) / 1000
    out = [
        f"Corpus `{corpus}` ({CORPORA[corpus][0]}, labels in {CORPORA[corpus][1]}): "
        f"{len(runs)} projects, {kloc:.1f} kLOC; rules: {rules_version()}.",
        "",
        "| project | kLOC | admission audit | s | ruff ASYNC | s | flake8-async | s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        flake8 = "- | -" if run.flake8 is None else f"{run.flake8} | {run.flake8_s:.1f}"
        out.append(
            f"| {run.project.name} | {run.project.lines / 1000:.1f} | {run.ours} | "
            f"{run.ours_s:.1f} | {run.ruff} | {run.ruff_s:.1f} | {flake8} |"
        )
    out += [
        "",
        "| rule | findings | TP | FP | precision | 95 % interval |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    tp_all = fp_all = 0
    for code in sorted(per_rule):
        tp, fp = per_rule[code]["TP"], per_rule[code]["FP"]
        tp_all, fp_all = tp_all + tp, fp_all + fp
        low, high = wilson(tp, tp + fp)
        out.append(
            f"| {code} | {tp + fp} | {tp} | {fp} | {tp / (tp + fp):.0%} | {low:.0%}-{high:.0%} |"
        )
    n_all = tp_all + fp_all
    low, high = wilson(tp_all, n_all)
    out.append(
        f"| all | {n_all} | {tp_all} | {fp_all} | {tp_all / max(n_all, 1):.0%} "
        f"| {low:.0%}-{high:.0%} |"
    )
    peers = f"{sum(run.ruff for run in runs) / kloc:.3f} (ruff ASYNC)"
    if not no_flake8:
        peers += f", {sum(run.flake8 or 0 for run in runs) / kloc:.3f} (flake8-async)"
    else:
        peers += "; flake8-async not run (`--no-flake8`)"
    out += [
        "",
        f"False positives per kLOC: {fp_all / kloc:.3f} (admission audit). Findings per kLOC: "
        f"{n_all / kloc:.3f} (admission audit), {peers}.",
    ]
    gone = sorted(":".join(map(str, key)) for key in set(labels) - seen)
    if gone:
        out += ["", f"{len(gone)} labels match no finding of these rules:"]
        out += [f"- `{key}` ({labels_row(labels, key)})" for key in gone]
    return "\n".join(out), unlabelled


def labels_row(labels: dict[LabelKey, dict[str, str]], joined: str) -> str:
    project, path, line, code = joined.split(":")
    row = labels[(project, path, int(line), code)]
    return f"was {row['label']}: {row['note']}"


def write_results(block: str, text: str) -> None:
    """Replace the block ``block`` of RESULTS.md with ``text`` (the block must exist)."""
    begin, end = f"<!-- audit-eval:{block} -->", f"<!-- /audit-eval:{block} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    results = RESULTS.read_text()
    if not pattern.search(results):
        raise SystemExit(f"{RESULTS} has no block {begin} ... {end}: add one where it belongs")
    RESULTS.write_text(pattern.sub(lambda _: f"{begin}\n{text}\n{end}", results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", nargs="+", choices=sorted(CORPORA), default=list(CORPORA))
    parser.add_argument("--allow-unlabelled", action="store_true")
    parser.add_argument("--no-flake8", action="store_true", help="skip flake8-async (slow)")
    parser.add_argument("--write-results", action="store_true", help="update benches/RESULTS.md")
    parser.add_argument("--block", help="the RESULTS.md block to write (one corpus only)")
    args = parser.parse_args()
    if args.block and len(args.corpus) != 1:
        parser.error("--block names the block of one corpus")

    failed = False
    for corpus in args.corpus:
        text, unlabelled = evaluate(corpus, no_flake8=args.no_flake8)
        print(text, end="\n\n")
        if unlabelled:
            failed = not args.allow_unlabelled
            print(
                f"{len(unlabelled)} findings have no label in {CORPORA[corpus][1]}:",
                file=sys.stderr,
            )
            print("\n".join(f"  {key}" for key in unlabelled), file=sys.stderr)
        elif args.write_results:
            write_results(args.block or corpus, text)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
