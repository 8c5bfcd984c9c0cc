// Renders the test list from the inline JSON; the filter lives in the URL's hash
// (#result=failed&q=text&open=1), so a filtered view is a link, and a link to one
// scrolls to the list. Text only via textContent: nothing a test sent becomes markup.
(function () {
  "use strict";
  var PAGE = 1000;
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var filter = document.getElementById("filter");
  var search = document.getElementById("search");
  var expand = document.getElementById("expand");
  var rows = document.getElementById("rows");
  var shown = document.getElementById("shown");
  var more = document.getElementById("more");
  var limit = PAGE;
  var KNOWN = { failed: 1, error: 1, unfinished: 1, missing: 1, skipped: 1, passed: 1, xfailed: 1, xpassed: 1 };
  var KINDS = { stdout: "captured stdout", stderr: "captured stderr", log: "captured log" };
  var COLUMNS = 9;
  var choices = data.results.slice();
  if (data.flaky) choices.push("flaky");

  choices.forEach(function (result) {
    var option = document.createElement("option");
    option.value = result;
    option.textContent = result;
    filter.appendChild(option);
  });

  function readHash() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    var result = params.get("result") || "";
    filter.value = choices.indexOf(result) >= 0 ? result : "";
    search.value = params.get("q") || "";
    expand.checked = params.get("open") === "1";
    return params.has("result") || params.has("q") || params.has("open");
  }

  function writeHash() {
    var params = new URLSearchParams();
    if (filter.value) params.set("result", filter.value);
    if (search.value) params.set("q", search.value);
    if (expand.checked) params.set("open", "1");
    history.replaceState(null, "", "#" + params.toString());
  }

  function el(parent, tag, text, cls) {
    var node = document.createElement(tag);
    if (text) node.textContent = text;
    if (cls) node.className = cls;
    parent.appendChild(node);
    return node;
  }

  function link(parent, href, text) {
    var a = el(parent, "a", text);
    a.href = href;
    return a;
  }

  function duration(seconds) {
    if (seconds === null) return "\u2014";
    if (seconds < 1) return seconds.toFixed(3) + " s";
    if (seconds < 60) return seconds.toFixed(2) + " s";
    var total = Math.round(seconds);
    var rest = total % 60;
    return Math.floor(total / 60) + " min " + (rest < 10 ? "0" : "") + rest + " s";
  }

  function bytes(size) {
    if (size === null) return "";
    if (size < 1024) return size + " B";
    if (size < 1048576) return (size / 1024).toFixed(1) + " KiB";
    return (size / 1048576).toFixed(1) + " MiB";
  }

  function name(index) { return index < 0 ? "" : data.names[index]; }

  function isFlaky(test) { return test[10] !== 0 && test[10].t && test[0] === "passed"; }

  function row(test) {
    // [outcome, location, name, duration, worker, host, dir href, archive state,
    //  archive href, note, extra (0, or what only some tests have)]
    var extra = test[10] || {};
    var tr = document.createElement("tr");
    tr.className = "r-" + (KNOWN[test[0]] ? test[0] : "other");
    var result = el(tr, "td", test[0], "result");
    if (extra.t) {
      var reruns = extra.t.length - 1;
      el(result, "span", (test[0] === "passed" ? "flaky, " : "after ") + reruns +
        (reruns === 1 ? " rerun" : " reruns"), "flaky").title = extra.t.join(" \u2192 ");
    }
    el(tr, "td", test[1], "location");
    el(tr, "td", test[2], "name");
    el(tr, "td", duration(test[3]), "num");
    el(tr, "td", name(test[4]), "worker");
    el(tr, "td", name(test[5]), "host wrap");
    var markers = el(tr, "td", "", "markers");
    (extra.m || []).forEach(function (marker) { el(markers, "span", marker, "tag"); });
    var dir = el(tr, "td", "", "dir");
    if (test[6]) link(dir, test[6], "files");
    var archive = el(tr, "td", "", "archive " + test[7]);
    if (test[7] === "failed") {
      archive.className = "archive failed-archive";
      archive.textContent = "failed: " + test[9];
    } else if (test[8]) {
      link(archive, test[8], test[7] === "pending" ? "archive (pending)" : "archive");
      if (test[9]) archive.title = test[9];
    }
    return tr;
  }

  function detail(test) {
    // The failure text, skip reason, captured sections and attachments, or null.
    var extra = test[10];
    if (!extra || !(extra.f || extra.c || extra.k || extra.s || extra.a)) return null;
    var tr = document.createElement("tr");
    tr.className = "detail";
    var td = el(tr, "td");
    td.colSpan = COLUMNS;
    if (extra.k) el(td, "div", "reason: " + extra.k, "reason");
    if (extra.f || extra.c) {
      var failure = el(td, "details", "", "failure");
      failure.open = expand.checked;
      var failed = test[0] === "error" ? "error" : "failed";
      var title = (extra.w ? failed + " in " + extra.w : failed) + (extra.c ? ": " + extra.c : "");
      el(failure, "summary", title);
      if (extra.f) el(failure, "pre", extra.f);
    }
    (extra.s || []).forEach(function (section) {
      var box = el(td, "details", "", "section " + section[1]);
      box.open = expand.checked;
      el(box, "summary", (KINDS[section[1]] || "captured") + (section[0] ? " (" + section[0] + ")" : ""));
      el(box, "pre", section[2]);
    });
    if (extra.a) {
      var files = el(td, "div", "", "attachments");
      extra.a.forEach(function (item) {
        // [name, href or null, size or null, 1 for an image]
        var figure = el(files, "figure");
        if (item[1] && item[3]) {
          var a = link(figure, item[1], "");
          var img = el(a, "img");
          img.src = item[1];
          img.alt = item[0];
          img.loading = "lazy";
        }
        var caption = el(figure, "figcaption");
        if (item[1]) link(caption, item[1], item[0]); else caption.textContent = item[0];
        if (item[2] !== null) caption.appendChild(document.createTextNode(" " + bytes(item[2])));
      });
    }
    return tr;
  }

  function render() {
    var result = filter.value;
    var q = search.value.toLowerCase();
    var matching = data.tests.filter(function (test) {
      var kept = !result || (result === "flaky" ? isFlaky(test) : test[0] === result);
      return kept && (!q || (test[1] + "::" + test[2]).toLowerCase().indexOf(q) >= 0);
    });
    var fragment = document.createDocumentFragment();
    matching.slice(0, limit).forEach(function (test) {
      fragment.appendChild(row(test));
      var below = detail(test);
      if (below) fragment.appendChild(below);
    });
    rows.replaceChildren(fragment);
    shown.textContent = Math.min(limit, matching.length) + " of " + matching.length +
      " matching (" + data.tests.length + " listed)";
    more.hidden = matching.length <= limit;
  }

  function showList() { document.getElementById("tests").scrollIntoView(); }

  function changed() { limit = PAGE; writeHash(); render(); }

  filter.addEventListener("change", changed);
  search.addEventListener("input", changed);
  expand.addEventListener("change", changed);
  more.addEventListener("click", function () { limit += PAGE; render(); });
  window.addEventListener("hashchange", function () {
    var linked = readHash();
    limit = PAGE;
    render();
    if (linked) showList();
  });
  var linked = readHash();
  render();
  // A link to a filtered view (#result=failed) names no element, so the browser does
  // not scroll by itself: show the list it asked for.
  if (linked) showList();
})();
