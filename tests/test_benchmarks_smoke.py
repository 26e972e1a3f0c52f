"""The benchmarks keep working: their smoke sizes run end to end (no timing is asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_every_benchmark_runs_and_reports(tmp_path: Path) -> None:
    report = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--output", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(report.with_suffix(".json").read_text())
    assert [b["title"] for b in results["benchmarks"]] == [
        "Lock contention, coroutines in one process",
        "Lock contention, 4 OS processes",
        "Lock contention against 20ffb54, interleaved in this run",
        "CPU per run: worker and Redis",
        "Chain overhead and makespan",
        "Run records: memory and the date grid",
        "Scheduling: fire latency, idle cost, windowed backfill",
        "Controls: the pause check's cost; trigger, pause and resume latency across replicas",
        "Web console: page latency and the Redis cost of an open page",
    ]
    text = report.read_text()
    assert results["machine"]["redis-server"] in text
    for benchmark in results["benchmarks"][:2]:
        rows = benchmark["result"]["rows"]
        ours = [r for r in rows if r["contender"] in ("aiotasks", "norecords", "tuple")]
        assert ours, "aiotasks was not measured"
        # Correctness, not speed: aiotasks never ran a body twice nor failed an attempt.
        assert all(r["duplicates"] == 0 and r["errors"] == 0 for r in ours), ours
        assert all(r["attempts_s"] > 0 for r in rows)
        in_one_process = benchmark["result"]["parameters"]["processes"] == 1
        for row in ours:
            # Counted on the wire: 2 commands per run, 1 per skip.
            if row["contention"] == "low" and in_one_process:
                assert row["cmds_run"] == 2.0, row
            if row["contention"] == "high" and "cmds_skip" in row:
                assert row["cmds_skip"] == 1.0, row
    versus = results["benchmarks"][2]["result"]
    # Both sides measured (a clone has the history), and no contender of either side failed.
    assert {
        (row["contender"], row["base_attempts_s"] > 0, row["this_attempts_s"] > 0) for row in versus["rows"]
    } == {("aiotasks", True, True), ("norecords", True, True), ("floor", True, True)}, versus
    cpu = results["benchmarks"][3]["result"]
    # Every contender measured at each concurrency, on fresh keys (runs, no skips), and a run of
    # aiotasks is its two requests, as Redis counted them; the seed's four.
    assert {(row["workers"], row["contender"]) for row in cpu["rows"]} == {
        (w, c) for w in (1, 32) for c in ("aiotasks", "norecords", "seed", "floor")
    }
    assert all(row["skips"] == 0 and row["runs_s"] > 0 and row["cpu_us"] > 0 for row in cpu["rows"])
    requests = {row["contender"]: row["requests"] for row in cpu["rows"]}
    assert requests == {"aiotasks": 2.0, "norecords": 2.0, "seed": 4.0, "floor": 2.0}, cpu["rows"]
    assert all(row["redis_us"] > 0 for row in cpu["rows"] if row["contender"] != "floor")
    # redis-benchmark (Debian's redis-tools, beside redis-server) sent both scripts, none failing.
    if shutil.which("redis-benchmark"):
        pipelined = cpu["redis_benchmark"]
        assert pipelined["acquire_per_s"] > 0 < pipelined["finish_per_s"], pipelined
        assert cpu["targets"]["x_redis_benchmark_w1000 (>= 0.5)"] is None  # smoke: no 1000 row
    chain = results["benchmarks"][4]["result"]
    assert {row["shape"] for row in chain["overhead"]} == {"wide", "deep", "random"}
    assert chain["makespan"]
    assert all("aiotasks_ratio" in row and "baseline_ratio" in row for row in chain["makespan"])
    scheduling = results["benchmarks"][6]["result"]
    # Correctness, not speed: no slot's body ran twice across the replicas; an idle scheduler sent nothing.
    assert [row["duplicates"] for row in scheduling["fire_latency"] if "duplicates" in row] == [0]
    assert scheduling["idle"][0]["redis_cmds"] == 0, scheduling["idle"]
    # Each trigger ran its body once, on one of the replicas; no slot ran twice around pauses; the
    # pause check was measured both ways at both sizes.
    controlled = results["benchmarks"][7]["result"]
    assert controlled["targets"]["duplicates (0)"] == 0
    assert controlled["targets"]["slots run twice around pauses (0)"] == 0
    assert [row["workers"] for row in controlled["pause_check"]] == [1, 32]
    assert all(row["with_runs_cpu_s"] > 0 < row["without_runs_cpu_s"] for row in controlled["pause_check"])
    assert len(controlled["pause_latency"]) == 6
    # Each cancelled run's body stopped (on whichever replica ran it); a row per lock_timeout.
    assert controlled["targets"]["bodies not stopped (0)"] == 0
    assert [row["renewal_ms"] for row in controlled["cancel_latency"]] == [100.0]
    assert all(row["n"] + row["ended_before"] == 3 for row in controlled["cancel_latency"])
    contenders = [row["contender"] for row in scheduling["backfill"]]
    assert contenders == ["baseline: date by date", "window 1", "window 4"]
    assert all(row["makespan_s"] > 0 and row["target_s"] > 0 for row in scheduling["backfill"])
    recorded = results["benchmarks"][5]["result"]
    assert recorded["memory"]["runs"] == recorded["memory"]["tasks"] * recorded["memory"]["days"]
    assert recorded["grid"]["commands_per_read"] == recorded["grid"]["tasks"]  # one script per task
    console = results["benchmarks"][8]["result"]
    assert [row["page"] for row in console["pages"]] == [
        "grid",
        "overview",
        "history",
        "history, failed only",
        "one cell's runs",
    ]
    # Bounded work per refresh: the grid sends one GRID script per task and schedule section, the
    # overview one RUNS and one SCHEDULE script per task and schedule, plus one MGET of the pauses.
    grid_page, overview_page = console["open"][1], console["open"][0]
    tasks = console["parameters"]["tasks"]
    assert grid_page["commands_per_refresh"] == tasks, grid_page
    assert overview_page["commands_per_refresh"] == tasks + 5 + 1, overview_page
