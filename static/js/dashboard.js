// Live dashboard: one Server-Sent Event per second from /api/stats/stream feeds the tiles,
// the uPlot charts and the routes table. EventSource reconnects by itself after a restart.
(function () {
  "use strict";
  var MAX_POINTS = 120;
  var status = document.getElementById("live-status");
  var series = { t: [], conns: [], inflight: [], lag: [], rss: [] };
  var charts = {};

  function el(id) { return document.getElementById(id); }
  function fmt(value) { return value === null || value === undefined ? "–" : String(value); }

  function chart(id, labels, colors) {
    var target = el(id);
    var opts = {
      width: target.clientWidth || 500, height: 200,
      scales: { x: { time: true } },
      axes: [{ stroke: "#5b6475" }, { stroke: "#5b6475" }],
      series: [{}].concat(labels.map(function (label, i) {
        return { label: label, stroke: colors[i], width: 2, points: { show: false } };
      }))
    };
    var data = [[]].concat(labels.map(function () { return []; }));
    charts[id] = new uPlot(opts, data, target);
  }

  function push(key, value) {
    series[key].push(value);
    if (series[key].length > MAX_POINTS) { series[key].shift(); }
  }

  function renderRoutes(routes) {
    var body = el("routes").querySelector("tbody");
    while (body.firstChild) { body.removeChild(body.firstChild); }
    routes.forEach(function (r) {
      var row = document.createElement("tr");
      [r.route, r.count, r.errors, r.mean_ms, r.p50_ms, r.p99_ms].forEach(function (v, i) {
        var cell = document.createElement("td");
        if (i > 0) { cell.className = "num"; }
        cell.textContent = fmt(v);
        row.appendChild(cell);
      });
      body.appendChild(row);
    });
  }

  function update(s) {
    el("stat-rps").textContent = fmt(s.requests.per_second);
    el("stat-total").textContent = fmt(s.requests.total);
    el("stat-p50").textContent = fmt(s.latency_ms.p50);
    el("stat-p99").textContent = fmt(s.latency_ms.p99);
    el("stat-conns").textContent = fmt(s.connections.http);
    el("stat-inflight").textContent = fmt(s.requests.in_flight);
    el("stat-lag").textContent = fmt(s.event_loop_lag_ms);
    el("stat-rss").textContent = (s.process.rss_bytes / 1048576).toFixed(1);
    el("stat-uptime").textContent = String(Math.floor(s.uptime_s));
    el("stat-pid").textContent = String(s.pid);
    renderRoutes(s.routes);

    var t = s.timeline.map(function (p) { return p.t; });
    charts["chart-rps"].setData([t, s.timeline.map(function (p) { return p.rps; })]);
    charts["chart-latency"].setData([t, s.timeline.map(function (p) { return p.p50_ms; }),
                                        s.timeline.map(function (p) { return p.p99_ms; })]);
    push("t", Math.floor(s.time));
    push("conns", s.connections.http);
    push("inflight", s.requests.in_flight);
    push("lag", s.event_loop_lag_ms);
    push("rss", s.process.rss_bytes / 1048576);
    charts["chart-conns"].setData([series.t, series.conns, series.inflight]);
    charts["chart-loop"].setData([series.t, series.lag, series.rss]);
  }

  function connect() {
    var source = new EventSource("/api/stats/stream");
    status.dataset.state = "connecting";
    status.textContent = "connecting…";
    source.onopen = function () { status.dataset.state = "live"; status.textContent = "live"; };
    source.onmessage = function (event) { update(JSON.parse(event.data)); };
    source.onerror = function () {
      status.dataset.state = "offline";
      status.textContent = "reconnecting…";
      if (source.readyState === EventSource.CLOSED) { setTimeout(connect, 1000); source.close(); }
    };
  }

  window.addEventListener("DOMContentLoaded", function () {
    chart("chart-rps", ["requests/s"], ["#0b7a75"]);
    chart("chart-latency", ["p50", "p99"], ["#0b7a75", "#d97706"]);
    chart("chart-conns", ["connections", "in flight"], ["#2563eb", "#db2777"]);
    chart("chart-loop", ["loop lag ms", "RSS MiB"], ["#7c3aed", "#64748b"]);
    connect();
  });
})();
