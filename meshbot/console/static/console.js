// The meshbot console page: reads /api/console.json every few seconds and draws it with uPlot.
"use strict";
(function () {
  var REFRESH_MS = 5000;
  var token = new URLSearchParams(location.search).get("token");
  var headers = token ? { Authorization: "Bearer " + token } : {};
  if (token) { document.getElementById("metrics").href = "/metrics?token=" + encodeURIComponent(token); }

  // Each chart: a title, the feed's series it plots, and how they look.
  var CHARTS = [
    { id: "airtime", title: "Air time per 10 minutes against the budget (s)", series: [
      { key: "airtime_10m", label: "air time", stroke: "#2b7bb9", fill: "rgba(43,123,185,0.15)" },
      { key: "budget_10m", label: "budget", stroke: "#d33", dash: [6, 4], counted: false }] },
    { id: "chutil", title: "Channel utilisation (%)", series: [
      { key: "channel_util", label: "channel util", stroke: "#8a4fbf" },
      { key: "air_util_tx", label: "air util tx", stroke: "#d98c1f" }] },
    { id: "ttff", title: "Time to first fragment, last 10 min (s)", series: [
      { key: "ttff_p50", label: "p50", stroke: "#2a8" },
      { key: "ttff_p95", label: "p95", stroke: "#c63" }] },
    { id: "questions", title: "Questions per hour by outcome", series: [
      { key: "answered_h", label: "answered", stroke: "#2a8" },
      { key: "refused_h", label: "refused", stroke: "#d98c1f" },
      { key: "dropped_h", label: "dropped", stroke: "#999" },
      { key: "failed_h", label: "failed", stroke: "#d33" }] },
    { id: "queue", title: "Queue depth (deepest per minute)", series: [
      { key: "queue_depth", label: "queued", stroke: "#2b7bb9", fill: "rgba(43,123,185,0.15)" }] },
    { id: "acks", title: "ACKs and NAKs per minute", series: [
      { key: "acks", label: "ACK", stroke: "#2a8" },
      { key: "naks", label: "NAK", stroke: "#d33" }] },
    { id: "nodes", title: "Nodes heard (last hour)", series: [
      { key: "nodes_heard", label: "nodes", stroke: "#8a4fbf" }] },
    { id: "fragments", title: "Answer fragments and model tokens per minute", series: [
      { key: "fragments", label: "fragments", stroke: "#2b7bb9" },
      { key: "tokens", label: "tokens", stroke: "#999", scale: "tokens" }] },
  ];
  var plots = {};

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function width(box) { return Math.max(box.clientWidth - 12, 200); }

  function build(chart, data) {
    var box = el("div", "chart");
    box.id = "chart-" + chart.id;
    box.appendChild(el("h3", null, chart.title));
    document.getElementById("charts").appendChild(box);
    var series = [{}].concat(chart.series.map(function (s) {
      return { label: s.label, stroke: s.stroke, fill: s.fill, dash: s.dash, width: 2, spanGaps: true,
               scale: s.scale || "y", points: { show: true, size: 4 } };
    }));
    var axes = [{}, { scale: "y" }];
    var scales = { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max, 1)]; } } };
    if (chart.series.some(function (s) { return s.scale === "tokens"; })) {
      axes.push({ scale: "tokens", side: 1, grid: { show: false } });
      scales.tokens = { range: function (u, min, max) { return [0, Math.max(max, 1)]; } };
    }
    var opts = { width: width(box), height: 200, series: series, axes: axes, scales: scales, legend: { live: false } };
    plots[chart.id] = { plot: new uPlot(opts, data, box), box: box, chart: chart };
  }

  function columns(chart, feed) {
    var s = feed.series;
    var cols = [s.t];
    chart.series.forEach(function (def) {
      if (def.key === "budget_10m") {
        cols.push(s.t.map(function () { return feed.budget_10m_s; }));
      } else {
        cols.push(s[def.key] || s.t.map(function () { return null; }));
      }
    });
    return cols;
  }

  // How many values a chart shows, and its largest (the tests read both from the chart's data-* attributes).
  function points(chart, cols) {
    var n = 0, max = null;
    chart.series.forEach(function (def, i) {
      if (def.counted === false) { return; }
      cols[i + 1].forEach(function (v) {
        if (v !== null && v !== undefined) { n += 1; max = max === null ? v : Math.max(max, v); }
      });
    });
    return [n, max];
  }

  // At least the last hour on the x axis, so a fresh start's few points are not stretched over years.
  function span(feed) {
    var t = feed.series.t, end = t.length ? t[t.length - 1] : feed.now;
    return { min: Math.min(t.length ? t[0] : end, end - 3600), max: end + 60 };
  }

  function draw(feed) {
    CHARTS.forEach(function (chart) {
      var cols = columns(chart, feed);
      if (!plots[chart.id]) { build(chart, cols); } else { plots[chart.id].plot.setData(cols); }
      plots[chart.id].plot.setScale("x", span(feed));
      var seen = points(chart, cols);
      plots[chart.id].box.dataset.points = String(seen[0]);
      plots[chart.id].box.dataset.max = seen[1] === null ? "" : String(seen[1]);
    });
  }

  function cell(row, text, cls) { var td = el("td", cls, text); row.appendChild(td); }

  function node(num) { return "!" + ("00000000" + (num >>> 0).toString(16)).slice(-8); }

  function table(feed) {
    var body = document.querySelector("#questions tbody");
    var head = document.querySelector("#questions thead tr");
    if (feed.show_text && head.children.length === 6) { head.appendChild(el("th", null, "question")); }
    body.textContent = "";
    feed.questions.forEach(function (q) {
      var tr = el("tr");
      cell(tr, new Date(q.at * 1000).toLocaleTimeString());
      cell(tr, node(q.asker));
      cell(tr, q.hops === null ? "?" : String(q.hops));
      cell(tr, q.wait_s === null ? "-" : q.wait_s.toFixed(1) + " s");
      cell(tr, String(q.fragments));
      cell(tr, q.outcome + (q.reason ? " (" + q.reason + ")" : ""));
      if (feed.show_text) { cell(tr, q.text || "", "text"); }
      body.appendChild(tr);
    });
  }

  function figures(feed) {
    var bot = feed.bot || {};
    document.getElementById("bot").textContent = bot.short_name ? bot.short_name + " · " + bot.region + " " + bot.preset : "";
    var radio = document.getElementById("radio");
    radio.textContent = feed.radio_up ? "radio up" : "radio down";
    radio.className = "pill " + (feed.radio_up ? "up" : "down");
    document.getElementById("queue").textContent = String(feed.queue_depth);
    document.getElementById("budget").textContent = feed.budget_s === null ? "-" : feed.budget_s.toFixed(0);
    document.getElementById("updated").textContent = "updated " + new Date(feed.now * 1000).toLocaleTimeString();
  }

  function refresh() {
    fetch("/api/console.json", { headers: headers, cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (feed) { figures(feed); draw(feed); table(feed); document.body.dataset.loaded = "1"; })
      .catch(function (err) { document.getElementById("updated").textContent = "cannot reach the daemon (" + err.message + ")"; })
      .then(function () { setTimeout(refresh, REFRESH_MS); });
  }

  window.addEventListener("resize", function () {
    Object.keys(plots).forEach(function (id) {
      var p = plots[id];
      p.plot.setSize({ width: width(p.box), height: 200 });
    });
  });
  refresh();
})();
