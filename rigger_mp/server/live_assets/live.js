// The live page: polls /stats, shows the counts, draws the last minutes as SVG.
// Every figure from the server is written with textContent, never as HTML: hook names
// and tracebacks come from clients. A token goes in the address: /#token=...
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const INTERVAL = Math.max(200, Number(params.get("interval")) || 1000);  // ms between polls
  const WINDOW = 5 * 60 * 1000;  // the charts' span
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const history = [];  // {t, rate, queued}
  let last = null;     // {t, done} of the previous poll
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "–");

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n.toFixed(0)) + " " + units[i];
  }

  function duration(s) {
    if (s < 60) return s.toFixed(1) + "s";
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    return h ? h + "h " + String(m % 60).padStart(2, "0") + "m" : m + "m " + String(Math.floor(s % 60)).padStart(2, "0") + "s";
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function chart(svg, key) {
    const W = 600, H = 140, now = Date.now();
    const points = history.filter((p) => now - p.t <= WINDOW);
    const top = Math.max(1, ...points.map((p) => p[key])) * 1.1;
    const x = (t) => W - ((now - t) / WINDOW) * W;
    const y = (v) => H - (v / top) * (H - 14);
    const ns = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    for (const f of [0.5, 1]) {
      const g = document.createElementNS(ns, "line");
      g.setAttribute("class", "grid");
      g.setAttribute("x1", 0); g.setAttribute("x2", W);
      g.setAttribute("y1", y(top / 1.1 * f)); g.setAttribute("y2", y(top / 1.1 * f));
      svg.appendChild(g);
    }
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 4); label.setAttribute("y", 12);
    label.textContent = "max " + fmt(Math.round((top / 1.1) * 10) / 10);
    svg.appendChild(label);
    if (points.length < 2) return;
    const coords = points.map((p) => x(p.t).toFixed(1) + "," + y(p[key]).toFixed(1));
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("class", "line");
    line.setAttribute("points", coords.join(" "));
    const area = document.createElementNS(ns, "polygon");
    area.setAttribute("class", "area");
    area.setAttribute("points", x(points[0].t).toFixed(1) + "," + H + " " + coords.join(" ") + " " + x(points[points.length - 1].t).toFixed(1) + "," + H);
    svg.appendChild(area);
    svg.appendChild(line);
  }

  function show(stats) {
    const ev = stats.events || {};
    const now = Date.now();
    let rate = stats.events_per_second || 0;
    if (last && now > last.t) rate = Math.max(0, (ev.done - last.done) / ((now - last.t) / 1000));
    last = { t: now, done: ev.done };
    history.push({ t: now, rate: rate, queued: ev.queued || 0 });
    while (history.length && now - history[0].t > WINDOW) history.shift();
    $("accepted").textContent = fmt(ev.accepted);
    $("done").textContent = fmt(ev.done);
    $("failed").textContent = fmt(ev.failed);
    $("failed-figure").classList.toggle("bad", (ev.failed || 0) > 0);  // red only when some failed
    $("queued").textContent = fmt(ev.queued);
    $("rate").textContent = rate.toFixed(1);
    const bg = stats.background || {};
    $("background").textContent = [bg.queued, bg.running, bg.done, bg.failed].map(fmt).join(" / ");
    $("uptime").textContent = duration(stats.uptime || 0);
    chart($("chart-rate"), "rate");
    chart($("chart-queue"), "queued");

    const workers = stats.workers || [];
    $("worker-count").textContent = "(" + workers.length + ")";
    const body = $("workers").tBodies[0];
    body.replaceChildren(...workers.map((w) => {
      const tr = el("tr", "worker");
      tr.append(el("td", "pid", w.pid), el("td", "rss", bytes(w.rss_bytes || 0)),
        el("td", "cpu", (w.cpu_percent || 0).toFixed(1) + "%"), el("td", "tasks", fmt(w.tasks_done)));
      return tr;
    }));

    const failures = (stats.recent_failures || []).slice().reverse();
    $("failure-count").textContent = "(" + fmt(stats.failures_total || 0) + " in all, the last " + failures.length + " kept)";
    const box = $("failures");
    if (!failures.length) { box.replaceChildren(el("p", "dim", "none")); return; }
    box.replaceChildren(...failures.map((f) => {
      const div = el("div", "failure");
      const when = new Date(f.time * 1000).toLocaleTimeString();
      const what = f.hook_name ? f.hook_name + (f.tid ? " (tid " + f.tid + ")" : "") : "callable";
      div.append(el("div", "head", when + " · " + what + " · " + f.error), el("pre", "traceback", f.traceback));
      return div;
    }));
  }

  // Without the token the page can show nothing: say how to open it with one.
  function tokenHint() {
    const hint = $("token-hint");
    hint.textContent = (token ? "The token in this address was refused. " : "") +
      "This dispatcher has a server_token: open this page as " +
      location.origin + location.pathname + "#token=YOUR_TOKEN (the token stays in your " +
      "browser: the part after # is never sent to the server).";
    hint.hidden = false;
  }

  async function poll() {
    try {
      const response = await fetch("stats", { headers: headers, cache: "no-store" });
      const reply = await response.json();
      if (!reply.ok) {
        if (reply.error && reply.error.code === "unauthorized") tokenHint();
        throw new Error(reply.error ? reply.error.code + ": " + reply.error.message : response.status);
      }
      $("token-hint").hidden = true;
      show(reply.stats);
      $("status").textContent = "updated " + new Date().toLocaleTimeString() + " · every " + INTERVAL / 1000 + " s";
      document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    } catch (err) {
      $("status").textContent = "cannot read /stats: " + err.message;
    }
    setTimeout(poll, INTERVAL);
  }
  poll();
})();
