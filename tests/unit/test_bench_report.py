"""`make bench`'s report (benches/report.py) and its group table (benches/groups.py).

The benchmarks themselves need the peers of requirements/bench.txt and are not run here; what
is checked is what a reader of the report relies on: every group is described, figures are
per call (not per round), ratios are to the right rows, the chart is drawn and RESULTS.md's
generated block is replaced and nothing else.
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHES = Path(__file__).resolve().parents[2] / "benches"


@pytest.fixture(scope="module")
def report() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCHES))
    try:
        yield importlib.import_module("report")
    finally:
        sys.path.remove(str(BENCHES))


def _groups_used() -> dict[str, str]:
    """Every ``benchmark(group=...)`` in benches/bench_*.py -> the file it is in."""
    used = {}
    for path in sorted(BENCHES.glob("bench_*.py")):
        tree = ast.parse(path.read_text())
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "benchmark"
            ):
                continue
            for keyword in node.keywords:
                if keyword.arg != "group":
                    continue
                value = keyword.value
                if isinstance(value, ast.Constant):
                    used[value.value] = path.name
                else:
                    assert isinstance(value, ast.Name), ast.dump(value)
                    used[constants[value.id]] = path.name
    return used


def test_every_group_is_described_and_every_description_used(report: ModuleType) -> None:
    used = _groups_used()
    assert len(used) >= 20  # the scan found the benchmarks (a broken scan would find none)
    groups = report.GROUPS
    assert sorted(set(used) - set(groups)) == []
    assert sorted(set(groups) - set(used)) == []
    for name, group in groups.items():
        assert group.what, name
        assert "\n" not in group.what, name
        assert group.unit.isidentifier(), name


def _bench(
    group: str,
    key: str,
    role: str,
    median: float,
    minimum: float,
    calls: int,
    baseline: bool = False,
) -> dict[str, Any]:
    return {
        "name": key,
        "group": group,
        "extra_info": {"key": key, "impl": key, "role": role, "baseline": baseline, "calls": calls},
        "stats": {"median": median, "min": minimum, "rounds": 20},
    }


@pytest.fixture
def run_json(tmp_path: Path) -> Path:
    tasks = "1,000 tasks through a limit of 10, sleep(0) body"
    data = {
        "machine_info": {"python_version": "3.11.7", "cpu": {"brand_raw": "Test CPU"}},
        "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "datetime": "2026-12-06T00:00:00",
        "version": "5.3.1",
        "benchmarks": [
            # Listed out of the report's order: the report must reorder them.
            _bench(tasks, "none", "reference", 7e-3, 6e-3, 1000),
            _bench(tasks, "admission.Semaphore", "admission", 9e-3, 8e-3, 1000, baseline=True),
            _bench(tasks, "asyncio.Semaphore", "peer", 18e-3, 16e-3, 1000),
            # A round of 1,000 calls: 58 us per round is 58 ns per call.
            _bench("try_acquire admitted", "limits.moving", "peer", 3.9e-3, 3.8e-3, 1000),
            _bench(
                "try_acquire admitted",
                "admission.TokenBucket",
                "admission",
                58e-6,
                57e-6,
                1000,
                baseline=True,
            ),
            _bench("try_acquire admitted", "time.monotonic_ns", "floor", 29e-6, 28e-6, 1000),
        ],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    return path


def test_table_is_per_call_with_ratios_to_admission_and_floor(
    report: ModuleType, run_json: Path
) -> None:
    _, rows = report.load(run_json)
    text = report.table(rows)
    # Groups in groups.py's order, each headed by its description and unit.
    assert text.index("**try_acquire admitted**") < text.index("**1,000 tasks")
    assert report.GROUPS["try_acquire admitted"].what in text
    assert "ns per task (median)" in text
    assert "ns per call (median)" in text
    lines = text.splitlines()

    def row(key: str) -> list[str]:
        [line] = [ln for ln in lines if f"| {key}" in ln or f"| **{key}**" in ln]
        return [cell.strip() for cell in line.strip("|").split("|")]

    # median / calls; best / calls; vs admission (the baseline); vs floor.
    assert row("admission.TokenBucket") == [
        "**admission.TokenBucket**",
        "58",
        "57",
        "1.00x",
        "2.00x",
    ]
    assert row("limits.moving") == ["limits.moving", "3,900", "3,800", "67x", "134x"]
    assert row("time.monotonic_ns")[0] == "time.monotonic_ns (floor)"
    # A group without a floor says so with "-".
    assert row("asyncio.Semaphore") == ["asyncio.Semaphore", "18,000", "16,000", "2.00x", "-"]
    # Fastest first within a group.
    assert lines.index(next(ln for ln in lines if "| none" in ln)) < lines.index(
        next(ln for ln in lines if "**admission.Semaphore**" in ln)
    )


def test_results_block_replaces_only_the_marked_text(
    report: ModuleType, run_json: Path, tmp_path: Path
) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(
        f"# Results\n\nkept above\n\n{report.BEGIN}\nold figures\n{report.END}\n\nkept below\n"
    )
    data, rows = report.load(run_json)
    report.update_results(results, report.results_block(data, rows, "make bench"))
    text = results.read_text()
    assert text.startswith("# Results\n\nkept above\n\n" + report.BEGIN)
    assert text.endswith(report.END + "\n\nkept below\n")
    assert "old figures" not in text
    assert "commit 0123456" in text
    assert "Command: `make bench`" in text
    assert "| **admission.TokenBucket** | 58 |" in text
    # Run twice: the same file (the block is found again and replaced, not appended).
    report.update_results(results, report.results_block(data, rows, "make bench"))
    assert results.read_text() == text


def test_results_without_one_block_is_an_error(report: ModuleType, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="expected one"):
        report.update_results(results, "x")
    assert results.read_text() == "no markers here\n"


def test_chart_is_a_png_with_one_panel_per_group(
    report: ModuleType, run_json: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    panels: list[list[str]] = []
    close = plt.close

    def record(fig: Any) -> None:  # the figure's visible panels, before it is closed
        panels.extend(
            [t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes if ax.get_visible()
        )
        close(fig)

    monkeypatch.setattr(plt, "close", record)
    data, rows = report.load(run_json)
    out = tmp_path / "chart.png"
    report.chart(rows, data, out)
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert len(panels) == 2
    # Fastest at the top (matplotlib counts y upwards: the last label is the top bar).
    assert panels[0][-1] == "time.monotonic_ns (floor)"
    assert sorted(panels[1]) == ["admission.Semaphore", "asyncio.Semaphore", "none"]


def test_makefile_bench_prints_the_report_and_files_the_raw_tables() -> None:
    makefile = (BENCHES.parent / "Makefile").read_text()
    recipe = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    assert "> .bench/pytest.txt" in recipe
    assert "benches/report.py .bench/latest.json" in recipe
    assert "--bench-group='$(BENCH)'" in recipe
    assert "--results benches/RESULTS.md" in recipe
    results = (BENCHES / "RESULTS.md").read_text()
    assert results.count("<!-- report.py: begin -->") == 1


def test_a_disturbed_median_is_marked(report: ModuleType, tmp_path: Path) -> None:
    # A median twice the best round: a noisy neighbour for part of the rounds.
    data = {
        "benchmarks": [
            _bench(
                "try_acquire admitted", "admission.TokenBucket", "admission", 58e-6, 57e-6, 1000
            ),
            _bench("try_acquire admitted", "limits.moving", "peer", 8e-3, 4e-3, 1000),
        ]
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    _, rows = report.load(path)
    text = report.table(rows)
    assert "| limits.moving | 8,000 † | 4,000 |" in text
    assert "| **admission.TokenBucket** | 58 | 57 |" in text
    assert text.count(report.DISTURBED_NOTE) == 1
