"""Lock contention of this checkout against an earlier revision, interleaved in one run.

Figures from another day (or another machine) can't be compared: this
machine's speed moves by a factor of two with its load. So both sides run
here, now: the earlier revision is exported with ``git archive`` into a
temporary directory, and each repeat runs ``benchmarks.lock_contention`` once
for each side, in a fresh process, in random order, each with its own
redis-server. The best of the repeats is kept per side, and the table shows
the rates side by side with their ratio, and each side's ``x_floor`` (its rate
over two bare PINGs measured in the same process), which is what the issues'
targets are stated in; ``x_floor_vs_base`` divides this side's by the base's,
which cancels most of the machine's drift between the two processes. A revision from before run records has no
``norecords`` contender: its decorator is that path, so it stands in for it.

``python -m benchmarks.versus 20ffb54``   this checkout against 20ffb54
(the revision issue 12 asks "no worse than").

``python -m benchmarks.versus REV --benchmark cpu``   the CPU benchmark
(``benchmarks.cpu``: worker and Redis CPU per run) on both sides instead; a
revision that predates it gets this checkout's copy. Each figure is then the
median of the passes, CPU per run being what is compared, not the best rate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def export(revision: str, into: Path) -> Path:
    """``revision``'s tree (``git archive``), unpacked under ``into``."""
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", revision], cwd=ROOT, stdout=out, check=True)
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def contenders_of(tree: Path) -> list[str]:
    """The contenders ``tree``'s lock-contention benchmark knows."""
    found = subprocess.run(
        [sys.executable, "-c", "import benchmarks.lock_contention as b; print(','.join(b.CONTENDERS))"],
        cwd=tree, env=environment(tree), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return found.stdout.strip().split(",")


def environment(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}


def measure(
    tree: Path, workers: str, contenders: list[str], attempts: int, benchmark: str = "lock_contention"
) -> list[dict[str, Any]]:
    """One interleaved pass of ``tree``'s benchmark (its own process and redis-server)."""
    if benchmark == "cpu":
        command = [
            sys.executable, "-m", "benchmarks.cpu", "--json", "--workers", workers,
            "--contenders", ",".join(contenders), "--repeat", "1", "--runs", str(attempts),
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-m", "benchmarks.lock_contention", "--json", "--contention", "low",
            "--workers", workers, "--contenders", ",".join(contenders), "--repeat", "1",
            "--attempts", str(attempts),
        ]  # fmt: skip
    done = subprocess.run(
        command, cwd=tree, env=environment(tree), capture_output=True, text=True, check=True
    )
    rows: list[dict[str, Any]] = json.loads(done.stdout)["rows"]
    return rows


def compare(args: argparse.Namespace) -> dict[str, Any]:
    wanted = args.contenders.split(",")
    with tempfile.TemporaryDirectory(prefix="aiotasks-versus-") as scratch:
        try:
            sides = {"base": export(args.revision, Path(scratch)), "this": ROOT}
        except (OSError, subprocess.CalledProcessError) as exc:  # not a git checkout, or a shallow one
            return {"revision": args.revision, "rows": [], "skipped": f"cannot export {args.revision}: {exc}"}
        if args.benchmark == "cpu":
            return compare_cpu(args, sides)
        known = {side: [c for c in wanted if c in contenders_of(tree)] for side, tree in sides.items()}
        best: dict[tuple[str, int, str], dict[str, Any]] = {}
        for _ in range(args.repeat):
            for side in random.sample(list(sides), len(sides)):
                for row in measure(sides[side], args.workers, known[side], args.attempts):
                    names = [row["contender"]]
                    if row["contender"] == "aiotasks" and "norecords" not in known[side]:
                        names.append("norecords")  # a revision without records: its decorator is that path
                    for name in names:
                        key = (side, row["workers"], name)
                        if key not in best or row["attempts_s"] > best[key]["attempts_s"]:
                            best[key] = row
    rows = []
    for workers in sorted({w for _, w, _ in best}):
        for contender in wanted:
            base, this = best.get(("base", workers, contender)), best.get(("this", workers, contender))
            if base is None and this is None:
                continue
            rows.append({
                "workers": workers,
                "contender": contender,
                "base_attempts_s": base and base["attempts_s"],
                "this_attempts_s": this and this["attempts_s"],
                "this_x_base": round(this["attempts_s"] / base["attempts_s"], 2) if base and this else None,
                "base_x_floor": base and base["x_floor"],
                "this_x_floor": this and this["x_floor"],
                # The issues' measure: each side over its own floor, then this over base.
                "x_floor_vs_base": (
                    round(this["x_floor"] / base["x_floor"], 2) if base and this and base["x_floor"] else None
                ),
            })  # fmt: skip
    return {"revision": args.revision, "rows": rows}


def compare_cpu(args: argparse.Namespace, sides: dict[str, Path]) -> dict[str, Any]:
    """The CPU benchmark on both sides, alternating; the median of the passes per side."""
    if not (sides["base"] / "benchmarks" / "cpu.py").exists():
        shutil.copy(ROOT / "benchmarks" / "cpu.py", sides["base"] / "benchmarks" / "cpu.py")
    wanted = args.contenders.split(",")
    passes: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for side in random.sample(list(sides), len(sides)):
            for found in measure(sides[side], args.workers, wanted, args.attempts, "cpu"):
                passes.setdefault((side, found["workers"], found["contender"]), []).append(found)

    def median(side: str, workers: int, contender: str, column: str) -> float | None:
        found = passes.get((side, workers, contender))
        return round(statistics.median(r[column] for r in found), 2) if found else None

    rows = []
    for workers in sorted({w for _, w, _ in passes}):
        for contender in wanted:
            row: dict[str, Any] = {"workers": workers, "contender": contender}
            for column in ("cpu_us", "redis_us", "runs_s", "x_floor"):
                row[f"base_{column}"] = median("base", workers, contender, column)
                row[f"this_{column}"] = median("this", workers, contender, column)
            base, this = row["base_cpu_us"], row["this_cpu_us"]
            row["cpu_this_x_base"] = round(this / base, 2) if base and this else None
            rows.append(row)
    return {"revision": args.revision, "benchmark": "cpu", "rows": rows}


CPU_COLUMNS = [
    "workers", "contender", "base_cpu_us", "this_cpu_us", "cpu_this_x_base", "base_redis_us",
    "this_redis_us", "base_runs_s", "this_runs_s", "base_x_floor", "this_x_floor",
]  # fmt: skip

COLUMNS = [
    "workers",
    "contender",
    "base_attempts_s",
    "this_attempts_s",
    "this_x_base",
    "base_x_floor",
    "this_x_floor",
    "x_floor_vs_base",
]


def render(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    rows = result["rows"]
    cpu = result.get("benchmark") == "cpu"
    columns = CPU_COLUMNS if cpu else COLUMNS
    widths = {c: max(len(c), *(len(str(r[c] if r[c] is not None else "")) for r in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    for row in rows:
        lines.append("  ".join(str("" if row[c] is None else row[c]).rjust(widths[c]) for c in columns))
    what = "CPU per run; median of repeats" if cpu else "lock contention, low, 1 process; best of repeats"
    title = f"This checkout against {result['revision']} ({what})"
    return f"{title}\n" + "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", nargs="?", default="20ffb54", help="the git revision to compare with")
    parser.add_argument("--workers", default="1,32", help="coroutines, comma-separated")
    parser.add_argument("--contenders", default="aiotasks,norecords,floor")
    parser.add_argument("--attempts", type=int, default=3000, help="attempts per contender and configuration")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved passes per side; the best is kept")
    parser.add_argument(
        "--benchmark", choices=("lock_contention", "cpu"), default="lock_contention",
        help="which benchmark both sides run (cpu: worker and Redis CPU per run, benchmarks.cpu)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it runs, not speed")
    return parser


def collect(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        args.workers, args.attempts, args.repeat = "1", 40, 1
    result = compare(args)
    result["parameters"] = {k: v for k, v in vars(args).items() if k != "json"}
    return result


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = collect(args)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
