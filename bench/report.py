"""Renders a finished run: the text report, the JSON file, the self-contained HTML page, the PNG."""

from __future__ import annotations

import html
import json
import os
import textwrap
from pathlib import Path

VENDOR = Path(__file__).resolve().parent / "vendor"


def _n(value) -> str:
    """Thousands separators for counts."""
    return f"{value:,}"


def _ms(value: float) -> str:
    """Milliseconds with precision that suits the magnitude."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def _kinds(counts: dict) -> str:
    """'timeout 3, reset 1' for the non-zero entries, or 'none'."""
    items = [f"{k} {_n(v)}" for k, v in counts.items() if v]
    return ", ".join(items) if items else "none"


def mode_line(rep: dict) -> str:
    """One line saying what was run."""
    cfg = rep["config"]
    if cfg["mode"] == "rate":
        what = f"fixed rate {cfg['rate']:,g} req/s"
    else:
        what = "closed loop" if cfg["mode"] == "closed" else "hold"
    if cfg["mode"] == "hold":
        low, high = cfg["interval_s"]
        what += f" (one request per connection every {low:g}-{high:g} s)"
    paths = cfg["paths"][0] if len(cfg["paths"]) == 1 else f"{len(cfg['paths'])} paths"
    origin = "/".join(cfg["url"].split("/")[:3])
    extra = f" + {cfg['warmup_s']:g} s warm-up" if cfg["warmup_s"] else ""
    ramp = (
        f", ramp {cfg['ramp']['connections']}/{cfg['ramp']['period_s'] * 1000:g}ms"
        if cfg["ramp"]
        else ""
    )
    workers = f"{cfg['workers']} worker{'s' if cfg['workers'] > 1 else ''}"
    return (
        f"{what}: {cfg['method']} {paths} on {origin}, {_n(cfg['connections'])} connections"
        f"{ramp}, {workers}, {cfg['duration_s']:g} s{extra}, "
        f"{'keep-alive' if cfg['keepalive'] else 'no keep-alive'}"
    )


def text_report(rep: dict) -> str:
    """The human-readable final report printed on stdout."""
    c, r, lat, cpu = rep["connections"], rep["requests"], rep["latency_ms"], rep["cpu"]
    tool = rep["tool"]
    lines = [
        f"{tool['name']} {tool['version']} ({tool['event_loop']}, {tool['parser']})"
        + ("  [INTERRUPTED]" if rep["interrupted"] else ""),
        mode_line(rep),
        "",
        f"Connections  attempted {_n(c['attempted'])}, established {_n(c['established'])}, "
        f"closed by server {_n(c['closed_by_server'])}, "
        f"closed by client {_n(c['closed_by_client'])}, "
        f"open at end {_n(c['open_at_end'])} (peak {_n(c['peak_open'])})",
        f"  failed     {_n(c['failed_total'])}: {_kinds(c['failed'])}",
        f"Requests     sent {_n(r['sent'])}, answered {_n(r['responses_total'])}, "
        f"errors {_n(r['errors_total'])}"
        + (f", scheduled but never sent {_n(r['backlog_at_end'])}" if r["backlog_at_end"] else ""),
        "  responses  "
        + (", ".join(f"{code}: {_n(n)}" for code, n in r["responses"].items()) or "none"),
        f"  errors     {_kinds(r['errors'])}",
        f"Error rate   {rep['error_rate'] * 100:.3f}% "
        "(failed requests + failed connects + non-2xx/3xx)",
        f"Throughput   {rep['requests_per_s']:,.1f} responses/s over {rep['duration_s']:.2f} s"
        + (f" (target {rep['rate']['target']:,g}/s)" if rep["rate"] else ""),
        "Latency ms   "
        + (
            f"min {_ms(lat['min'])}  p50 {_ms(lat['p50'])}  p90 {_ms(lat['p90'])}  "
            f"p99 {_ms(lat['p99'])}  p99.9 {_ms(lat['p99_9'])}  max {_ms(lat['max'])}  "
            f"(mean {_ms(lat['mean'])}, n={_n(lat['count'])})"
            if lat["count"]
            else "no responses"
        ),
        "CPU          "
        + ", ".join(
            f"worker {w['index']} {w['percent']:.1f}% of a core ({w['cpu_s']:.2f} s)"
            for w in cpu["workers"]
        ),
    ]
    if rep["config"]["mode"] == "rate":
        lines.append("             (rate mode: latency counts from each request's scheduled start)")
    for warning in rep["warnings"]:
        lines.append(f"WARNING: {warning}")
    if rep.get("exit_code") == 1:
        lines.append(
            f"FAIL: error rate {rep['error_rate'] * 100:.3f}% exceeds --max-error-rate "
            f"{rep['config']['max_error_rate'] * 100:g}%"
        )
    return "\n".join(lines) + "\n"


def write_json(rep: dict, path: str) -> None:
    """Write the report as JSON (schema in docs/bench.md and bench/schema.json)."""
    _atomic_write(path, json.dumps(rep, indent=2, sort_keys=False) + "\n")


def _atomic_write(path: str, text: str) -> None:
    """Write via a temporary file so a reader never sees half a report."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _script_json(data) -> str:
    """JSON safe to embed inside <script>: no '</' can end the element early."""
    return json.dumps(data).replace("</", "<\\/").replace("<!--", "<\\!--")


def _rows(pairs) -> str:
    """Table rows of (label, value)."""
    return "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in pairs
    )


def html_report(rep: dict) -> str:
    """A self-contained HTML page: summary tables and uPlot charts, library and data inlined."""
    js = (VENDOR / "uPlot.iife.min.js").read_text(encoding="utf-8")
    css = (VENDOR / "uPlot.min.css").read_text(encoding="utf-8")
    c, r, lat = rep["connections"], rep["requests"], rep["latency_ms"]
    summary = _rows(
        [
            ("Requests/s", f"{rep['requests_per_s']:,.1f}"),
            ("Requests sent", _n(r["sent"])),
            ("Responses", ", ".join(f"{k}: {_n(v)}" for k, v in r["responses"].items()) or "none"),
            ("Request errors", _kinds(r["errors"])),
            ("Error rate", f"{rep['error_rate'] * 100:.3f}%"),
            (
                "Connections",
                f"attempted {_n(c['attempted'])}, established {_n(c['established'])}, "
                f"peak open {_n(c['peak_open'])}",
            ),
            (
                "Closed by server / client",
                f"{_n(c['closed_by_server'])} / {_n(c['closed_by_client'])}",
            ),
            ("Connect failures", _kinds(c["failed"])),
            (
                "Generator CPU",
                ", ".join(
                    f"worker {w['index']}: {w['percent']:.1f}%" for w in rep["cpu"]["workers"]
                ),
            ),
        ]
    )
    latency = _rows(
        [
            (name, f"{lat[key]:.3f} ms")
            for name, key in (
                ("min", "min"),
                ("p50", "p50"),
                ("p90", "p90"),
                ("p99", "p99"),
                ("p99.9", "p99_9"),
                ("p99.99", "p99_99"),
                ("max", "max"),
                ("mean", "mean"),
            )
        ]
    )
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in rep["warnings"])
    title = f"{rep['tool']['name']}: {rep['config']['mode']} {rep['config']['url']}"
    return _PAGE.format(
        title=html.escape(title),
        css=css,
        js=js,
        data=_script_json(rep),
        heading=html.escape(title),
        subtitle=html.escape(mode_line(rep)),
        started=html.escape(rep["started_at"]),
        summary=summary,
        latency=latency,
        warnings=f"<ul class=warnings>{warnings}</ul>" if warnings else "",
        interrupted=(
            "<p class=warn>Interrupted before the end of --duration.</p>"
            if rep["interrupted"]
            else ""
        ),
    )


def write_html(rep: dict, path: str) -> None:
    """Write the HTML report."""
    _atomic_write(path, html_report(rep))


def write_png(rep: dict, path: str) -> None:
    """Charts as one PNG via matplotlib (optional dependency, imported only here)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    tl = rep["timeline"]
    t = [e["t"] for e in tl]
    fig = Figure(figsize=(10, 9), dpi=100, layout="constrained")
    ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True)
    ax1.plot(t, [e["requests_per_s"] for e in tl], color="#1f77b4", label="responses/s")
    ax1.plot(
        t,
        [(e["errors"] + e["connect_errors"]) / (e["dt"] or 1) for e in tl],
        color="#d62728",
        label="errors/s",
    )
    ax1.set_ylabel("per second")
    ax1.legend(loc="upper right")
    for key, color in (
        ("p50", "#2ca02c"),
        ("p90", "#ff7f0e"),
        ("p99", "#d62728"),
        ("max", "#7f7f7f"),
    ):
        ax2.plot(t, [(e["latency_ms"] or {}).get(key) for e in tl], color=color, label=key)
    ax2.set_ylabel("latency ms")
    ax2.legend(loc="upper right")
    ax3.plot(t, [e["open_connections"] for e in tl], color="#9467bd")
    ax3.set_ylabel("open connections")
    ax3.set_ylim(bottom=0)
    ax3.set_xlabel("seconds")
    fig.suptitle(textwrap.fill(mode_line(rep), 110), fontsize=9)
    fig.savefig(path)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d2330;
       background: #f5f6f8; }}
header {{ background: #1d2330; color: #fff; padding: 16px 24px; }}
header h1 {{ font-size: 18px; margin: 0 0 4px; word-break: break-all; }}
header p {{ margin: 0; color: #c6cbd6; font-size: 13px; }}
main {{ padding: 16px 24px; max-width: 1200px; }}
.grid {{ display: grid; grid-template-columns: 2fr 1fr; gap: 16px; }}
section {{ background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 12px 16px;
           margin-bottom: 16px; }}
section h2 {{ font-size: 15px; margin: 0 0 8px; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: 3px 8px 3px 0; border-bottom: 1px solid #eef0f4; vertical-align: top; }}
th {{ font-weight: 600; white-space: nowrap; width: 40%; }}
.warnings, .warn {{ color: #9a3412; }}
.chart {{ min-height: 260px; }}
.empty {{ color: #667; font-style: italic; }}
</style>
</head>
<body>
<header><h1>{heading}</h1><p>{subtitle}</p><p>started {started} UTC</p></header>
<main>
{interrupted}{warnings}
<div class="grid">
<section><h2>Summary</h2><table id="summary">{summary}</table></section>
<section><h2>Latency</h2><table id="latency">{latency}</table></section>
</div>
<section><h2>Requests per second</h2><div class="chart" id="chart-rps"></div></section>
<section><h2>Latency percentiles per second (ms)</h2><div class="chart" id="chart-latency"></div></section>
<section><h2>Open connections</h2><div class="chart" id="chart-conns"></div></section>
</main>
<script id="bench-data" type="application/json">{data}</script>
<script>{js}</script>
<script>
(function () {{
  "use strict";
  var rep = JSON.parse(document.getElementById("bench-data").textContent);
  var tl = rep.timeline;
  var t = tl.map(function (e) {{ return e.t; }});
  function col(f) {{ return tl.map(f); }}
  function lat(k) {{ return col(function (e) {{ return e.latency_ms ? e.latency_ms[k] : null; }}); }}
  var charts = [];
  function chart(id, series, data) {{
    var el = document.getElementById(id);
    if (!t.length) {{
      el.innerHTML = '<p class="empty">no per-second data (run shorter than a second?)</p>';
      return;
    }}
    var opts = {{
      width: Math.max(300, el.clientWidth), height: 240,
      scales: {{ x: {{ time: false }} }},
      legend: {{ live: false }},
      axes: [{{ label: "seconds" }}, {{ size: 70 }}],
      series: [{{ label: "t (s)" }}].concat(series)
    }};
    charts.push([el, new uPlot(opts, [t].concat(data), el)]);
  }}
  chart("chart-rps", [
    {{ label: "responses/s", stroke: "#1f77b4", width: 2 }},
    {{ label: "errors/s", stroke: "#d62728", width: 1.5 }}
  ], [col(function (e) {{ return e.requests_per_s; }}),
      col(function (e) {{ return (e.errors + e.connect_errors) / (e.dt || 1); }})]);
  chart("chart-latency", [
    {{ label: "p50", stroke: "#2ca02c", width: 2 }}, {{ label: "p90", stroke: "#ff7f0e", width: 2 }},
    {{ label: "p99", stroke: "#d62728", width: 2 }}, {{ label: "max", stroke: "#7f7f7f", width: 1 }}
  ], [lat("p50"), lat("p90"), lat("p99"), lat("max")]);
  chart("chart-conns", [{{ label: "open connections", stroke: "#9467bd", width: 2 }}],
        [col(function (e) {{ return e.open_connections; }})]);
  window.addEventListener("resize", function () {{
    charts.forEach(function (c) {{
      c[1].setSize({{ width: Math.max(300, c[0].clientWidth), height: 240 }});
    }});
  }});
  document.body.setAttribute("data-charts", String(charts.length));
}})();
</script>
</body>
</html>
"""
