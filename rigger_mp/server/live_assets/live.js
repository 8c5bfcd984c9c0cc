// The live page. Two halves:
// - the test runs: GET live/stream, a server-sent event stream read with fetch (which,
//   unlike EventSource, can send the token), gives a snapshot of the followed run, then
//   deltas (the rows that changed) at most every 150 ms; the filter asks GET runs/{id}/tests;
// - the dispatcher: polls /stats, shows the counts, draws the last minutes as SVG.
// Everything from the server is written with textContent, never as HTML: test names,
// hosts and failure texts come from clients. A token goes in the address: /#token=...
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const INTERVAL = Math.max(200, Number(params.get("interval")) || 1000);  // ms between polls
  const WINDOW = 5 * 60 * 1000;  // the charts' span
  const ROWS = 200;  // test rows shown (the newest; the filter asks the server for the rest)
  const FAILURES = 50;
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const history = [];  // {t, rate, queued}
  let last = null;     // {t, done} of the previous poll
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "–");

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // -- the test runs ---------------------------------------------------------------

  const runs = new Map();   // run_id -> head
  let run = null;           // the followed run: head + lanes (Map) + failures + rows
  let chosen = params.get("run") || "";  // a run picked in the address or the list
  let abort = null;
  let filtering = 0;        // the number of the last filter request (older answers are dropped)
  document.body.dataset.updates = "0";

  const testId = (r) => (r.location ? r.location + "::" : "") + r.name;
  const seconds = (s) => (typeof s === "number" ? (s < 10 ? s.toFixed(2) : s.toFixed(1)) + " s" : "–");

  function testRow(r) {
    const tr = el("tr", "test r-" + r.outcome);
    const link = el("td", "artifacts");
    if (r.artifacts) {
      const a = el("a", "files", r.attachments + (r.attachments === 1 ? " file" : " files"));
      a.href = "files/" + r.artifacts.split("/").map(encodeURIComponent).join("/") + "/";
      link.append(a);
    }
    tr.append(el("td", "result", r.outcome), el("td", "name mono", testId(r)),
      el("td", "num", seconds(r.duration)),
      el("td", "where", (r.host || "") + " · " + (r.worker || "")), link);
    tr.dataset.id = testId(r);
    return tr;
  }

  function failureCard(f) {
    const div = el("div", "failure run-failure");
    div.append(el("div", "head", f.outcome + " · " + testId(f) + " · " + (f.host || "") + " · " + (f.worker || "")),
      el("pre", "traceback", f.text || "(no text)"));
    return div;
  }

  function apply(update, whole) {
    for (const h of update.runs || []) runs.set(h.run_id, h);
    const r = update.run;
    if (r && (whole || !run || run.run_id !== r.run_id)) {
      run = Object.assign({}, r, { lanes: new Map(), failures: [], rows: [] });
      $("tests").tBodies[0].replaceChildren();
      $("run-failures").replaceChildren();
    } else if (r) {
      Object.assign(run, r, { lanes: run.lanes, failures: run.failures, rows: run.rows });
    }
    if (r) {
      for (const lane of r.lanes || []) run.lanes.set(lane.host + "\u0000" + lane.worker, lane);
      addFailures(r.failures || []);
      addRows(r.recent || []);
      if (r.slowest) showSlowest(r.slowest);
    } else if (run && runs.has(run.run_id)) {
      Object.assign(run, runs.get(run.run_id));
    }
    showRuns();
    showRun();
    if (!chosen && run && run.finished && [...runs.values()].some((h) => !h.finished && h.run_id !== run.run_id)) {
      setTimeout(stream, 0);  // following the latest: a newer run has started, follow it
    }
    if (!document.body.dataset.first) document.body.dataset.first = String(Math.round(performance.now()));
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
  }

  function addFailures(list) {
    if (!list.length) return;
    const box = $("run-failures");
    if (!run.failures.length) box.replaceChildren();
    for (const f of list) { run.failures.push(f); box.prepend(failureCard(f)); }
    while (run.failures.length > FAILURES) { run.failures.shift(); box.lastChild.remove(); }
  }

  function addRows(list) {
    if (!list.length || $("filter").value || $("outcome-filter").value) return;  // a filter shows its own
    const body = $("tests").tBodies[0];
    const fresh = document.createDocumentFragment();
    for (const r of list.slice(-ROWS).reverse()) fresh.append(testRow(r));
    body.prepend(fresh);
    while (body.rows.length > ROWS) body.lastChild.remove();
  }

  function showSlowest(list) {
    $("slowest").tBodies[0].replaceChildren(...list.map((r) => {
      const tr = el("tr", "test r-" + r.outcome);
      tr.append(el("td", "num", seconds(r.duration)), el("td", "name mono", testId(r)),
        el("td", "where", (r.host || "") + " · " + (r.worker || "")));
      return tr;
    }));
  }

  function showRuns() {
    const select = $("run-select");
    const ids = [...runs.keys()];
    if (select.options.length - 1 === ids.length && ids.every((id, i) => select.options[i + 1].value === id)) return;
    const keep = select.value;
    select.replaceChildren(el("option", "", "latest"), ...ids.map((id) => {
      const o = el("option", "", id || "(no run id)");
      o.value = id;
      return o;
    }));
    select.options[0].value = "";
    select.value = keep;
  }

  function clock(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "–"; }

  function span(s) {
    if (!(s >= 0) || !isFinite(s)) return "–";
    if (s < 60) return Math.round(s) + " s";
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    return h ? h + " h " + (m % 60) + " min" : m + " min " + Math.round(s % 60) + " s";
  }

  function showRun() {
    if (!run) return;
    const counts = run.counts || {};
    const running = counts.unfinished || 0;
    const done = (run.tests || 0) - running - (counts.missing || 0);
    const expected = typeof run.expected === "number" ? run.expected : null;
    const total = expected !== null ? expected : done + running;
    $("run-id").textContent = run.run_id || "(no run id)";
    const ended = run.timed_out ? "ended: no event for its run_timeout" : "finished";
    $("run-state").textContent = run.finished ? ended + (run.exit_status !== null && run.exit_status !== undefined ? " · exit status " + run.exit_status : "") : "running";
    const bad = (counts.failed || 0) + (counts.error || 0);
    const share = (n) => (total ? Math.min(100, (100 * n) / total) : 0).toFixed(2) + "%";
    $("progress-bad").style.width = share(bad);  // the failed part first, in red
    $("progress-bar").style.width = share(done - bad);
    const took = (run.last_event || 0) - (run.started || run.last_event || 0);
    const rate = took > 0 ? done / took : 0;
    let text = fmt(done) + (expected !== null ? " of " + fmt(expected) + " expected" : " done") +
      (expected ? " (" + Math.floor((100 * done) / expected) + "%)" : "") +
      " · " + fmt(running) + " running" + (rate ? " · " + rate.toFixed(1) + " tests/s" : "");
    if (!run.finished && expected !== null && rate > 0) text += " · about " + span((expected - done) / rate) + " left";
    if (!run.finished && expected === null) text += " · time left unknown (no expected count)";
    if (typeof run.missing === "number" && run.missing) text += " · " + fmt(run.missing) + " missing";
    $("progress-text").textContent = text;
    const order = ["failed", "error", "missing", "unfinished", "xpassed", "xfailed", "skipped", "passed"];
    const keys = Object.keys(counts).sort((a, b) => (order.indexOf(a) + 99) % 99 - (order.indexOf(b) + 99) % 99);
    if (typeof run.missing === "number" && !keys.includes("missing")) { keys.push("missing"); counts.missing = run.missing; }
    $("counts").replaceChildren(...keys.map((k) => {
      const box = el("div", "count r-" + k);
      box.append(el("div", "label", k), el("div", "value", fmt(counts[k])));
      return box;
    }));
    $("run-facts").textContent = "started " + clock(run.started) + " · last event " + clock(run.last_event) +
      " · hosts: " + ((run.hosts || []).join(", ") || "–");
    $("report-line").hidden = !run.report;
    if (run.report) {
      $("report-link").textContent = run.report;
      $("report-link").href = run.report_href || "#";
    }
    $("test-count").textContent = "(" + fmt(run.tests) + " in all" + ($("filter").value || $("outcome-filter").value ? "" : ", the newest first") + ")";
    $("run-failure-count").textContent = "(" + fmt(run.failures_total || 0) + ", the last " + run.failures.length + " shown)";
    showLanes();
  }

  function showLanes() {
    const byHost = new Map();
    for (const lane of run.lanes.values()) {
      if (!byHost.has(lane.host)) byHost.set(lane.host, []);
      byHost.get(lane.host).push(lane);
    }
    $("lane-count").textContent = "(" + byHost.size + " hosts, " + run.lanes.size + " workers)";
    const now = Date.now() / 1000;
    $("lanes").replaceChildren(...[...byHost.entries()].sort().map(([host, lanes]) => {
      const box = el("div", "host");
      box.append(el("h3", "mono", host || "(no host)"));
      const table = el("table", "lanes");
      lanes.sort((a, b) => a.worker.localeCompare(b.worker, "en", { numeric: true }));
      for (const lane of lanes) {
        const tr = el("tr", "lane" + (lane.test ? " busy" : ""));
        tr.append(el("td", "worker mono", lane.worker), el("td", "now mono", lane.test || "idle"),
          el("td", "num", lane.since ? span(now - lane.since) : ""),
          el("td", "num", fmt(lane.done) + " done"), el("td", "num" + (lane.failed ? " bad" : ""), fmt(lane.failed) + " failed"));
        table.append(tr);
      }
      box.append(table);
      return box;
    }));
  }

  async function filter() {
    const mine = ++filtering;
    const q = $("filter").value, outcome = $("outcome-filter").value;
    if (!run) return;
    if (!q && !outcome) {  // back to the newest rows
      const reply = await getJson("runs/" + encodeURIComponent(run.run_id));
      if (mine !== filtering || !reply) return;
      $("tests").tBodies[0].replaceChildren();
      addRows(reply.run.recent || []);
      showRun();
      return;
    }
    const reply = await getJson("runs/" + encodeURIComponent(run.run_id) + "/tests?q=" +
      encodeURIComponent(q) + "&outcome=" + encodeURIComponent(outcome));
    if (mine !== filtering || !reply) return;
    $("tests").tBodies[0].replaceChildren(...reply.tests.slice(0, ROWS).map(testRow));
    $("test-count").textContent = "(" + fmt(reply.matched) + " match" + (reply.matched > ROWS ? ", the first " + ROWS + " shown" : "") + ")";
    document.body.dataset.filtered = String(mine);
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: headers, cache: "no-store" });
    const reply = await response.json();
    if (!reply.ok) { $("stream-status").textContent = reply.error.code + ": " + reply.error.message; return null; }
    return reply;
  }

  function block(text) {
    let kind = "message", data = "";
    for (const line of text.split("\n")) {
      if (line.startsWith("event: ")) kind = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (!data) return;
    apply(JSON.parse(data), kind === "snapshot");
    $("stream-status").textContent = "live · updated " + new Date().toLocaleTimeString();
  }

  async function stream() {
    if (abort) abort.abort();
    abort = new AbortController();
    const mine = abort;
    try {
      const response = await fetch("live/stream" + (chosen ? "?run=" + encodeURIComponent(chosen) : ""),
        { headers: headers, cache: "no-store", signal: mine.signal });
      if (!response.ok) {
        const reply = await response.json();
        if (reply.error && reply.error.code === "unauthorized") tokenHint();
        throw new Error(reply.error ? reply.error.code + ": " + reply.error.message : response.status);
      }
      $("token-hint").hidden = true;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          block(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      $("stream-status").textContent = "stream ended; reconnecting…";
    } catch (err) {
      if (mine.signal.aborted) return;
      $("stream-status").textContent = "cannot follow the runs: " + err.message;
    }
    if (mine === abort) setTimeout(stream, 2000);
  }

  $("run-select").addEventListener("change", () => { chosen = $("run-select").value; run = null; stream(); });
  $("filter").addEventListener("input", filter);
  $("outcome-filter").addEventListener("change", filter);
  // The report and the artifacts: plain links without a token; with one, the page
  // fetches the file with it and opens what it got (its own relative links then lead
  // nowhere: open the page without a token, or the files on disk, to follow them).
  document.addEventListener("click", async (event) => {
    const a = event.target.closest && event.target.closest("a[href^='files/']");
    if (!a || !token) return;
    event.preventDefault();
    const response = await fetch(a.getAttribute("href"), { headers: headers });
    if (response.ok) window.open(URL.createObjectURL(await response.blob()), "_blank");
  });

  // -- the dispatcher --------------------------------------------------------------

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
  stream();
  poll();
})();
