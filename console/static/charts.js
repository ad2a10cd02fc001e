// Draws the hub page's charts (templates/fleet/_charts.html) with uPlot, under the console's Content-Security-Policy:
// this file and uPlot come from /static, each chart's data from its element's data-chart attribute (JSON written by
// console/services/monitoring.py:Chart.data), and no inline script or style element is used.
//
// uPlot and its stylesheet are fetched the first time a page has a chart.  The hub page is replaced every few
// seconds by htmx; each new copy of its charts is drawn when htmx adds it, and the plots it replaced are destroyed
// (a plot listens on the window until then).
(function () {
  "use strict";
  var base = document.currentScript.src.replace(/charts\.js(\?.*)?$/, "");
  var plots = [];
  var loading = null;

  function load() {
    if (window.uPlot) return Promise.resolve();
    if (!loading) {
      loading = new Promise(function (resolve, reject) {
        ["uPlot.min.css", "charts.css"].forEach(function (name) {
          var link = document.createElement("link");
          link.rel = "stylesheet";
          link.href = base + name;
          document.head.appendChild(link);
        });
        var script = document.createElement("script");
        script.src = base + "uPlot.iife.min.js";
        script.onload = resolve;
        script.onerror = reject;
        document.head.appendChild(script);
      });
    }
    return loading;
  }

  // The points to mark: all of them when they are few, else those with no neighbour to join (a lone sample between
  // gaps draws no line) and the newest.
  function marked(u, seriesIdx) {
    var ys = u.data[seriesIdx], shown = [], last = -1, count = 0;
    for (var i = 0; i < ys.length; i++) {
      if (ys[i] != null) { count++; last = i; }
    }
    for (var j = 0; j < ys.length; j++) {
      if (ys[j] == null) continue;
      var alone = (j === 0 || ys[j - 1] == null) && (j === ys.length - 1 || ys[j + 1] == null);
      if (count <= 60 || alone || j === last) shown.push(j);
    }
    return shown;
  }

  function utc(ts) {  // the console gives times in UTC
    return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
  }

  function draw(el) {
    var d = JSON.parse(el.getAttribute("data-chart"));
    var high = Math.max.apply(null, d.y.filter(function (v) { return v != null; }).concat([d.integer ? 1 : 0]));
    var accent = "#2457c5";  // base.html's --accent
    var opts = {
      width: Math.max(240, el.clientWidth),
      height: 180,
      tzDate: utc,
      legend: {show: false},
      cursor: {show: false},
      scales: {
        x: {time: true, range: [d.since, d.until + (d.until - d.since) / 50]},  // room for the newest point
        y: {range: [0, high * 1.15 || 1]}
      },
      axes: [
        {label: "time (UTC)", labelSize: 20, size: 40, values: function (u, splits) {
          var format = uPlot.fmtDate(d.until - d.since > 2 * 86400 ? "{MMM} {D}" : "{HH}:{mm}");
          return splits.map(function (ts) { return format(utc(ts)); });
        }},
        {label: d.unit, labelSize: 20, size: 50,
         incrs: d.integer ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] : undefined}
      ],
      series: [
        {},
        {label: d.title, stroke: accent, width: 2, fill: "rgba(36, 87, 197, 0.08)", spanGaps: false,
         points: {show: true, size: 7, fill: accent, filter: marked}}
      ]
    };
    var plot = new uPlot(opts, [d.x, d.y], el);
    plot.resizer = new ResizeObserver(function () {  // follows its figure's width
      var width = Math.max(240, el.clientWidth);
      if (width !== plot.width) plot.setSize({width: width, height: 180});
    });
    plot.resizer.observe(el);
    plots.push(plot);
    el.setAttribute("data-drawn", "true");
  }

  function drawAll(root) {
    plots = plots.filter(function (u) {
      if (u.root.isConnected) return true;
      u.resizer.disconnect();
      u.destroy();
      return false;
    });
    var pending = root.querySelectorAll ? root.querySelectorAll(".chart-plot:not([data-drawn])") : [];
    if (!pending.length) return;
    load().then(function () { pending.forEach(draw); });
  }

  if (window.htmx) {
    htmx.onLoad(drawAll);  // the page itself, then everything htmx adds
  } else {
    document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  }
})();
