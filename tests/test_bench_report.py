"""Histogram merging, the JSON schema, the HTML report (parsed, one screenshot), the PNG."""

import json
import random
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.report import html_report
from bench.stats import (
    Aggregator,
    encode_histogram,
    histogram_from_values,
    latency_summary,
    merge_encoded,
    new_histogram,
)

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "bench" / "schema.json").read_text())
TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def validate(value, schema, where="$"):
    """The subset of JSON Schema used by bench/schema.json (type, const, enum, required, ...)."""
    if "const" in schema:
        assert value == schema["const"], where
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            isinstance(value, TYPES[t])
            and not (t in ("integer", "number") and isinstance(value, bool))
            for t in types
        )
        assert ok, f"{where}: {value!r} is not {types}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key}"
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                validate(item, props[key], f"{where}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                validate(item, schema["additionalProperties"], f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{where}[{i}]")


def test_merged_histograms_equal_one_histogram_of_all_values():
    rng = random.Random(42)
    values = [int(rng.lognormvariate(6, 1.5)) for _ in range(30000)] + [0, 1, 5_000_000_000]
    parts = [values[i::3] for i in range(3)]
    merged = merge_encoded(encode_histogram(histogram_from_values(p)) for p in parts)
    whole = histogram_from_values(values)
    assert merged.get_total_count() == whole.get_total_count() == len(values)
    assert list(merged.counts) == list(whole.counts)
    assert latency_summary(merged) == latency_summary(whole)
    for pct in (50, 90, 99, 99.9, 100):
        assert merged.get_value_at_percentile(pct) == whole.get_value_at_percentile(pct)
    assert merged.get_max_value() == whole.get_max_value() and merged.get_min_value() == 0


def test_aggregator_sums_a_second_across_workers():
    agg = Aggregator(2)
    a, b = histogram_from_values([100] * 10), histogram_from_values([3000] * 10)
    base = {
        "phase": "run",
        "second": 1,
        "t": 1.0,
        "dt": 1.0,
        "errors": 1,
        "connect_errors": 0,
        "cpu_s": 0.25,
    }
    agg.tick(0, {**base, "sent": 11, "responses": 10, "open": 5, "hist": encode_histogram(a)})
    assert agg.timeline == []  # waits for the other worker
    agg.tick(1, {**base, "sent": 11, "responses": 10, "open": 6, "hist": encode_histogram(b)})
    (entry,) = agg.timeline
    assert (entry["sent"], entry["responses"], entry["errors"], entry["open_connections"]) == (
        22,
        20,
        2,
        11,
    )
    assert entry["cpu_percent"] == 50.0 and entry["requests_per_s"] == 20
    assert entry["latency_ms"]["p50"] == 0.1 and entry["latency_ms"]["max"] == pytest.approx(
        3.0, rel=1e-3
    )
    assert new_histogram().get_total_count() == 0


@pytest.fixture
def finished_report(bench_stub, bench_run, tmp_path):
    """A real short run with JSON and HTML output."""
    stub = bench_stub()
    html_path = tmp_path / "report.html"
    code, rep, _, _ = bench_run(
        stub.url + "/", "-c", "10", "-d", "2.2s", "--rate", "800", "--report", str(html_path)
    )
    assert code == 0
    return rep, html_path


def test_json_report_matches_the_documented_schema(finished_report):
    rep, _ = finished_report
    validate(rep, SCHEMA)
    assert rep["schema_version"] == 1
    assert len(rep["timeline"]) == 3 and rep["timeline"][-1]["dt"] < 0.5
    docs = (Path(__file__).resolve().parent.parent / "docs" / "bench.md").read_text()
    for key in SCHEMA["required"]:
        assert f"`{key}`" in docs, f"docs/bench.md does not document {key}"


class _Page(HTMLParser):
    """Collects what a self-contained page must (not) reference."""

    def __init__(self):
        super().__init__()
        self.external, self.ids, self.scripts, self._in_script = [], set(), [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("src", "href"):
            if attrs.get(key):
                self.external.append((tag, attrs[key]))
        if tag == "link":
            self.external.append((tag, attrs))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def test_html_report_is_self_contained(finished_report):
    rep, html_path = finished_report
    page = _Page()
    page.feed(html_path.read_text())
    assert page.external == []  # nothing loaded from anywhere
    assert {
        "chart-rps",
        "chart-latency",
        "chart-conns",
        "summary",
        "latency",
        "bench-data",
    } <= page.ids
    assert any("uPlot" in s for s in page.scripts)
    embedded = json.loads(page.scripts[0])
    assert embedded["requests"] == rep["requests"] and embedded["timeline"] == rep["timeline"]


def test_html_survives_hostile_strings():
    rep = json.loads(json.dumps(_minimal_report()))
    rep["config"]["paths"] = ["/</script><script>alert(1)</script>"]
    rep["warnings"] = ["<b>bold</b>"]
    text = html_report(rep)
    assert "</script><script>alert" not in text and "&lt;b&gt;bold" in text


def test_png_report(finished_report, tmp_path):
    pytest.importorskip("matplotlib")
    from bench.report import write_png

    rep, _ = finished_report
    out = tmp_path / "charts.png"
    write_png(rep, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
def test_html_report_renders_in_a_browser(finished_report, page, artifacts_dir):
    _, html_path = finished_report
    page.goto(html_path.as_uri())
    page.wait_for_selector("body[data-charts='3']", timeout=10000)
    assert page.locator(".uplot canvas").count() == 3
    assert page.locator("#summary").inner_text().startswith("Requests/s")
    box = page.locator("#chart-rps canvas").bounding_box()
    assert box["width"] > 300 and box["height"] > 100
    page.set_viewport_size({"width": 1280, "height": 1400})
    page.screenshot(path=str(artifacts_dir / "bench-report.png"), full_page=True)


def _minimal_report():
    """A report-shaped dict without running anything."""
    return {
        "tool": {
            "name": "tornado-hps-bench",
            "version": "0",
            "python": "3",
            "event_loop": "asyncio",
            "parser": "httptools",
        },
        "started_at": "2024-01-01T00:00:00+00:00",
        "interrupted": False,
        "config": {
            "url": "http://127.0.0.1/",
            "mode": "closed",
            "method": "GET",
            "paths": ["/"],
            "headers": [],
            "body_bytes": 0,
            "connections": 1,
            "duration_s": 1.0,
            "warmup_s": 0.0,
            "ramp": None,
            "rate": None,
            "interval_s": None,
            "workers": 1,
            "timeout_s": 1.0,
            "keepalive": True,
            "max_error_rate": None,
            "seed": None,
        },
        "duration_s": 1.0,
        "connections": {
            "target": 1,
            "attempted": 1,
            "established": 1,
            "closed_by_server": 0,
            "closed_by_client": 0,
            "open_at_end": 1,
            "peak_open": 1,
            "cancelled": 0,
            "failed": {},
            "failed_total": 0,
        },
        "requests": {
            "sent": 0,
            "responses": {},
            "responses_total": 0,
            "non_2xx_3xx": 0,
            "errors": {},
            "errors_total": 0,
            "backlog_at_end": 0,
        },
        "errors": {},
        "error_rate": 0.0,
        "requests_per_s": 0.0,
        "rate": None,
        "latency_ms": latency_summary(new_histogram()),
        "latency_histogram": "",
        "cpu": {"workers": [], "total_cpu_s": 0, "max_percent": 0, "saturated": False},
        "warnings": [],
        "timeline": [],
        "exit_code": 0,
    }


def test_compare_section_leaves_disturbed_rounds_out():
    from types import SimpleNamespace

    from bench.compare import _ms, render_markdown

    assert (_ms("452.31us"), _ms("1.20ms"), _ms("2.00s")) == (0.45231, 1.2, 2000.0)
    wrk = {"rps": 100000.0, "p50": 0.3, "p99": 1.0, "cpu_percent": 99.0}
    tool = {"requests_per_s": 95000.0, "latency_ms": {"p50": 0.5, "p99": 1.2},
            "cpu": {"max_percent": 99.0}}
    slow = {**tool, "requests_per_s": 10000.0, "cpu": {"max_percent": 40.0}}
    args = SimpleNamespace(connections=100, seconds=5, rounds=3)
    setup = {"cmd": "python -m bench.compare", "nginx": "nginx/1", "wrk": "wrk 4", "pin": (0, 1),
             "busy": 0.1, "discarded": 2}
    text = render_markdown(args, setup, [(wrk, tool), (wrk, slow), (wrk, tool)], None)
    assert text.startswith("## Load generator vs wrk (issue 3)")
    assert "| 2 (disturbed) |" in text and "**0.95x**" in text and "left out of the medians" in text
