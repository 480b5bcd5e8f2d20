// stride's operator dashboard: live regions, throughput charts, form niceties.
// Plain JavaScript, no dependencies, nothing fetched from elsewhere.
//
// A page with <main data-live="URL"> polls URL (JSON: {as_of, regions, charts})
// every data-poll-ms milliseconds while it is visible. Each region's HTML
// replaces the element with the same data-region name, unless the keyboard
// focus is inside it (so tabbing through a table's buttons is never
// interrupted); each chart document redraws the element with the same
// data-chart name as an inline SVG.
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var CHART_HEIGHT = 220;
  var PAD = { left: 52, right: 14, top: 14, bottom: 30 };
  var charts = new Map(); // host element -> last chart document
  var regionHtml = new Map(); // region element -> last HTML put in

  function svg(name, attrs, parent) {
    var node = document.createElementNS(SVG_NS, name);
    Object.keys(attrs).forEach(function (key) {
      node.setAttribute(key, String(attrs[key]));
    });
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceCeiling(value) {
    if (!(value > 0)) return 1;
    var power = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (value <= steps[i] * power) return steps[i] * power;
    }
    return 10 * power;
  }

  function formatNumber(value) {
    if (value >= 100) return Math.round(value).toLocaleString("en-US");
    return (Math.round(value * 10) / 10).toLocaleString("en-US");
  }

  function clock(ms) {
    return new Date(ms).toISOString().slice(11, 19);
  }

  function drawChart(host, doc) {
    charts.set(host, doc);
    if (!doc || !doc.lines || !doc.lines.length) return;
    var points = doc.points;
    var width = Math.max(host.clientWidth, 280);
    var height = CHART_HEIGHT;
    var plotW = width - PAD.left - PAD.right;
    var plotH = height - PAD.top - PAD.bottom;
    var top = 0;
    doc.lines.forEach(function (line) {
      line.values.forEach(function (v) { if (v > top) top = v; });
    });
    top = niceCeiling(top);

    var root = svg("svg", {
      viewBox: "0 0 " + width + " " + height,
      width: width,
      height: height,
      class: "chart-svg",
      "aria-hidden": "true",
      focusable: "false",
    });
    [0, 0.5, 1].forEach(function (share) {
      var y = PAD.top + plotH * (1 - share);
      svg("line", { x1: PAD.left, x2: PAD.left + plotW, y1: y, y2: y, class: "grid" }, root);
      var label = svg("text", { x: PAD.left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, root);
      label.textContent = formatNumber(top * share);
    });
    var stepX = points > 1 ? plotW / (points - 1) : 0;
    doc.lines.forEach(function (line, index) {
      var coords = line.values.map(function (v, i) {
        var x = PAD.left + (points > 1 ? i * stepX : plotW);
        var y = PAD.top + plotH * (1 - v / top);
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      if (coords.length === 1) {
        var xy = coords[0].split(",");
        svg("circle", { cx: xy[0], cy: xy[1], r: 3, class: "dot line-" + index }, root);
      } else if (coords.length > 1) {
        svg("polyline", { points: coords.join(" "), class: "line line-" + index }, root);
      }
    });
    if (points > 0) {
      var first = doc.start_ms;
      var last = doc.start_ms + (points - 1) * doc.bucket_seconds * 1000;
      var left = svg("text", { x: PAD.left, y: height - 8, class: "axis", "text-anchor": "start" }, root);
      left.textContent = clock(first);
      var right = svg("text", { x: PAD.left + plotW, y: height - 8, class: "axis", "text-anchor": "end" }, root);
      right.textContent = clock(last) + " UTC";
    }

    var legend = document.createElement("ul");
    legend.className = "legend";
    var summary = [];
    doc.lines.forEach(function (line, index) {
      var latest = line.values.length ? line.values[line.values.length - 1] : null;
      var peak = line.values.length ? Math.max.apply(null, line.values) : null;
      var item = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "swatch line-" + index;
      item.appendChild(swatch);
      var text = latest === null
        ? line.label + ": none yet"
        : line.label + ": " + formatNumber(latest) + " latest, peak " + formatNumber(peak);
      item.appendChild(document.createTextNode(text));
      legend.appendChild(item);
      summary.push(text);
    });
    if (points === 0) {
      var none = document.createElement("p");
      none.className = "empty";
      none.textContent = "Nothing completed yet.";
      host.replaceChildren(none, legend);
    } else {
      host.replaceChildren(root, legend);
    }
    host.setAttribute("aria-label", "Latest " + doc.bucket_seconds + "-second bucket: " + summary.join(", "));
  }

  function drawCharts(docs) {
    Object.keys(docs).forEach(function (name) {
      var host = document.querySelector('[data-chart="' + name + '"]');
      if (host) drawChart(host, docs[name]);
    });
  }

  function initialCharts() {
    document.querySelectorAll("[data-chart]").forEach(function (host) {
      var raw = host.getAttribute("data-chart-doc");
      if (raw && raw !== "null") drawChart(host, JSON.parse(raw));
    });
  }

  function focusInside(element) {
    var active = document.activeElement;
    return active && active !== document.body && element.contains(active);
  }

  function applyRegions(main, regions) {
    Object.keys(regions).forEach(function (name) {
      var region = main.querySelector('[data-region="' + name + '"]');
      if (!region || focusInside(region)) return;
      var html = regions[name];
      if (regionHtml.get(region) === html) return;
      region.innerHTML = html;
      regionHtml.set(region, html);
    });
  }

  function startPolling(main) {
    var url = main.getAttribute("data-live");
    var every = Number(main.getAttribute("data-poll-ms")) || 1500;
    var status = document.querySelector("[data-live-status]");
    var failures = 0;
    var timer = null;
    var inFlight = false;

    function setStatus(text, trouble) {
      if (!status) return;
      status.textContent = text;
      status.classList.toggle("trouble", trouble);
    }

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(poll, Math.min(every * Math.pow(2, failures), 30000));
    }

    function poll() {
      if (inFlight) return;
      if (document.hidden) {
        setStatus("paused", false);
        return; // resumed by visibilitychange
      }
      inFlight = true;
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.status === 401) {
            var here = location.pathname + location.search;
            location.assign("/admin/signin?next=" + encodeURIComponent(here));
            return null;
          }
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (doc) {
          inFlight = false;
          if (!doc) return;
          applyRegions(main, doc.regions || {});
          drawCharts(doc.charts || {});
          failures = 0;
          main.setAttribute("data-updated", doc.as_of);
          setStatus("live · " + doc.as_of.slice(11, 19) + " UTC", false);
          schedule();
        })
        .catch(function () {
          inFlight = false;
          failures = Math.min(failures + 1, 5);
          setStatus("connection lost · retrying", true);
          schedule();
        });
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) poll();
    });
    schedule();
  }

  function guardForms() {
    // One click, one action: disable a form's buttons once it is submitted.
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
      setTimeout(function () {
        form.querySelectorAll("button").forEach(function (button) { button.disabled = true; });
      }, 0);
    });
    // Coming back through the history cache, the buttons work again.
    window.addEventListener("pageshow", function () {
      document.querySelectorAll("form button[disabled]").forEach(function (button) {
        button.disabled = false;
      });
    });
  }

  function redrawOnResize() {
    var pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () {
        charts.forEach(function (doc, host) { drawChart(host, doc); });
      }, 150);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    initialCharts();
    guardForms();
    redrawOnResize();
    var main = document.querySelector("main[data-live]");
    if (main) startPolling(main);
  });
})();
