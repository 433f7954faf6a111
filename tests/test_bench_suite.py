"""``make bench`` (python -m bench.suite) end to end with tiny runs, and its BENCHMARKS.md block."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.suite_report import BEGIN, END, write_block
from helpers import require

ROOT = Path(__file__).resolve().parent.parent
KEPT = "## Load generator vs wrk (issue 3)"


def test_suite_runs_every_kind_of_scenario_and_writes_its_block(tmp_path):
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text((ROOT / "BENCHMARKS.md").read_text())
    before = markdown.read_text()
    cmd = [sys.executable, "-m", "bench.suite", "--tool", "bench", "--engines", "tornado",
           "--only", "metrics,guestbook,hold,slow,processes", "--seconds", "0.3", "--rounds", "1",
           "--no-wait", "--no-warmup", "--hold-connections", "100", "--probe-seconds", "0.3",
           "--hold-rounds", "1", "--slow-connections", "20", "--slow-ms", "100",
           "--slow-rounds", "1", "--app-requests", "500", "--out", str(tmp_path), "--markdown", str(markdown)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]

    result = json.loads((tmp_path / "bench-suite.json").read_text())
    sections = {s["id"]: s for s in result["sections"]}
    assert list(sections) == ["metrics", "guestbook", "hold", "slow", "processes"]
    for section in sections.values():
        for row in section["rows"]:
            # counts (full collections in a tiny run) may be 0; everything else was measured
            assert row["median"] is not None and (row["median"] > 0 or row["kind"] == "count"), (
                section["id"], row)
    ratio = sections["guestbook"]["rows"][-1]
    assert ratio["kind"] == "ratio" and len(ratio["values"]) == 1 and ratio["goal"] == [">=", 0.7]
    assert all(s["connections"] >= 100 for s in result["raw"]["hold"]["stock"])
    # Suite 6 proves the collector settings: the same server with Python's GC defaults beside it
    assert all(s["connections"] >= 100 for s in result["raw"]["hold"]["gcdefault-tornado"])
    gc_rows = [r for r in sections["hold"]["rows"] if "GC tuned ÷ Python's GC defaults" in r["label"]]
    assert [r["kind"] for r in gc_rows] == ["ratio"] * 3 and all(r["median"] for r in gc_rows)
    assert any("--no-gc-freeze --gc-threshold ''" in c for c in sections["hold"]["commands"])
    held = result["raw"]["hold"]["full-tornado"][0]  # the collector's pauses, from its /metrics
    assert held["gc_pause_ms"] >= 0 and held["gc_full"] >= 0
    assert result["raw"]["hold"]["stock"][0]["gc_pause_ms"] is None  # no /metrics there
    # Suite 3 side by side: both servers loaded at once, and the control pair of identical ones
    side = {r["label"]: r for r in sections["metrics"]["rows"] if "at once" in r["label"]}
    assert len(side) == 2 and all(0.5 < r["median"] < 2 for r in side.values())
    assert [r["goal"] for r in side.values()] == [[">=", 0.95], None]
    assert len(result["raw"]["side_by_side"]["twins-tornado"]) == 1
    assert result["raw"]["slow"]["slow-tornado"][0]["ok"] == 20
    # Suite 3's in-process measure: CPU per request of each variant, and its ratio with the goal
    in_process = {r["label"]: r for r in sections["metrics"]["rows"] if r["kind"] in ("us", "ratio")}
    on_off = in_process["metrics on ÷ --no-metrics, in process (requests per CPU second)"]
    assert on_off["goal"] == [">=", 0.95] and 0.5 < on_off["median"] < 2
    assert set(result["raw"]["app_cpu"]) == {"bare", "metrics", "nometrics"}

    text = markdown.read_text()
    assert KEPT in text and text.startswith(before.split(BEGIN)[0].rstrip("\n"))  # others kept
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "## Suite 3: metrics on vs off" in text and "python -m bench.app_cpu" in text
    assert "## Suite 4: guestbook first page from the cache vs hello" in text
    assert "## Suite 6: 100 idle keep-alive connections" in text
    assert "python -m bench.suite --tool bench" in text  # the exact command


def test_the_block_is_replaced_in_place(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Ours\n\nkept\n")
    write_block(path, f"{BEGIN}\nfirst\n{END}\n")
    path.write_text(path.read_text() + "\n## After\n\nalso kept\n")
    write_block(path, f"{BEGIN}\nsecond\n{END}\n")
    text = path.read_text()
    assert "first" not in text and "second" in text and text.count(BEGIN) == 1
    assert text.index("## Ours") < text.index("second") < text.index("## After")
    assert "also kept" in text


def test_techempower_scenario_verifies_then_measures(tmp_path):
    """--only techempower: its own PostgreSQL, the verification pass on every server, one tiny
    run per server of a plain and a pipelined type, --processes 2, its JSON and its own block."""
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text((ROOT / "BENCHMARKS.md").read_text())
    cmd = [sys.executable, "-m", "bench.suite", "--only", "techempower", "--engines", "fast",
           "--tfb-types", "plaintext,db", "--seconds", "1", "--rounds", "1", "--no-wait",
           "--no-warmup", "--tfb-pool", "2", "--out", str(tmp_path), "--markdown", str(markdown)]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "bench-techempower.json").read_text())
    assert result["raw"]["violations"] == []
    assert set(result["raw"]["types"]) == {"plaintext", "db"}
    for runs in result["raw"]["types"].values():
        assert set(runs) == {"project-fast", "stock", "aiohttp", "starlette"}
        assert all(r[0]["rps"] > 0 and r[0]["errors"] == 0 for r in runs.values()), runs
    summary = {s["id"]: s for s in result["summary"]}
    ours = next(s for s in summary["techempower-db"]["servers"] if s["server"] == "project-fast")
    assert ours["rps_vs_stock"] > 0 and ours["cpu_vs_aiohttp"] > 0
    assert summary["techempower-processes-db-fast"]["per_cpu_s_ratio"] > 0
    text = markdown.read_text()
    assert text.count("bench.suite techempower: begin") == 1 and BEGIN in text  # the suite's kept
    assert "### `/plaintext` (plaintext)" in text and "wrk_pipeline.lua" in text


def test_techempower_against_a_git_ref_measures_both_in_one_run(tmp_path):
    """--tfb-against REF: the server as of REF (a temporary git worktree) is verified and measured
    beside this checkout, the block gains a before/after table, and the worktree is removed."""
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text((ROOT / "BENCHMARKS.md").read_text())
    cmd = [sys.executable, "-m", "bench.suite", "--only", "techempower", "--engines", "fast",
           "--tfb-types", "json", "--seconds", "1", "--rounds", "1", "--no-wait", "--no-warmup",
           "--no-tfb-processes", "--tfb-pool", "2", "--tfb-against", "HEAD",
           "--out", str(tmp_path), "--markdown", str(markdown)]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "bench-techempower.json").read_text())
    assert result["raw"]["violations"] == [] and result["raw"]["against"] == "HEAD"
    runs = result["raw"]["types"]["json"]
    assert set(runs) == {"project-fast", "ref-fast", "stock", "aiohttp", "starlette"}
    assert runs["ref-fast"][0]["rps"] > 0 and runs["ref-fast"][0]["errors"] == 0
    ours = next(s for s in result["summary"][0]["servers"] if s["server"] == "project-fast")
    assert ours["rps_vs_ref"] > 0
    text = markdown.read_text()
    assert "itself at `HEAD` (before/after, same run)" in text
    assert "| json | fast | **" in text
    trees = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True)
    assert "against" not in trees.stdout


def test_instructions_counts_the_same_code_the_same_per_request(tmp_path):
    """python -m bench.instructions --against HEAD: both servers run under callgrind, every
    counted request is answered 200, and the same code at both ends counts within 10 %."""
    require(shutil.which("valgrind") is not None, "valgrind (apt-get install valgrind)")
    out = tmp_path / "instructions.json"
    cmd = [sys.executable, "-m", "bench.instructions", "--against", "HEAD", "--types", "json",
           "--engines", "tornado", "--requests", "40", "--connections", "2", "--out", str(out)]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(out.read_text())["instructions_per_request"]["json"]
    assert set(counts) == {"project-tornado", "ref-tornado"}
    assert counts["project-tornado"] > 10_000  # a request is thousands of bytecodes
    assert 0.9 < counts["ref-tornado"] / counts["project-tornado"] < 1.1
    assert "| json | " in proc.stdout and "before ÷ after" in proc.stdout
    trees = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True)
    assert "against" not in trees.stdout


def test_app_cpu_tfb_runs_the_handler_without_an_engine():
    """python -m bench.app_cpu --tfb json: TFB's /json through the Application alone, every
    request answered (a handler that raised would log and the CPU figure would be missing)."""
    cmd = [sys.executable, "-m", "bench.app_cpu", "--tfb", "json", "--rounds", "2",
           "--requests", "300"]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["variants"] == {"tfb-json": "/json"}
    assert len(result["samples"]["tfb-json"]) == 2
    assert all(us > 0 for us in result["samples"]["tfb-json"])
    assert "Uncaught exception" not in proc.stderr and "Traceback" not in proc.stderr
