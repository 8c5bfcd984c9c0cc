// Renders the test list from the inline JSON; the filter lives in the URL's hash
// (#result=failed&q=text), so a filtered view is a link. Text only via textContent.
(function () {
  "use strict";
  var PAGE = 1000;
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var filter = document.getElementById("filter");
  var search = document.getElementById("search");
  var rows = document.getElementById("rows");
  var shown = document.getElementById("shown");
  var more = document.getElementById("more");
  var limit = PAGE;
  var KNOWN = { failed: 1, error: 1, unfinished: 1, skipped: 1, passed: 1 };

  data.results.forEach(function (result) {
    var option = document.createElement("option");
    option.value = result;
    option.textContent = result;
    filter.appendChild(option);
  });

  function readHash() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    var result = params.get("result") || "";
    filter.value = data.results.indexOf(result) >= 0 ? result : "";
    search.value = params.get("q") || "";
  }

  function writeHash() {
    var params = new URLSearchParams();
    if (filter.value) params.set("result", filter.value);
    if (search.value) params.set("q", search.value);
    history.replaceState(null, "", "#" + params.toString());
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function link(td, href, text) {
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  }

  function duration(seconds) {
    if (seconds === null) return "\u2014";
    if (seconds < 1) return seconds.toFixed(3) + " s";
    if (seconds < 60) return seconds.toFixed(2) + " s";
    var total = Math.round(seconds);
    var rest = total % 60;
    return Math.floor(total / 60) + " min " + (rest < 10 ? "0" : "") + rest + " s";
  }

  function row(test) {
    // [result, location, name, duration, dir href, archive state, archive href, note]
    var tr = document.createElement("tr");
    tr.className = "r-" + (KNOWN[test[0]] ? test[0] : "other");
    cell(tr, test[0], "result");
    cell(tr, test[1], "location");
    cell(tr, test[2], "name");
    cell(tr, duration(test[3]), "num");
    var dir = cell(tr, "", "dir");
    if (test[4]) link(dir, test[4], "files");
    var archive = cell(tr, "", "archive " + test[5]);
    if (test[5] === "failed") {
      archive.className = "archive failed-archive";
      archive.textContent = "failed: " + test[7];
    } else if (test[6]) {
      link(archive, test[6], test[5] === "pending" ? "archive (pending)" : "archive");
      if (test[7]) archive.title = test[7];
    }
    return tr;
  }

  function render() {
    var result = filter.value;
    var q = search.value.toLowerCase();
    var matching = data.tests.filter(function (test) {
      return (!result || test[0] === result) &&
        (!q || (test[1] + "::" + test[2]).toLowerCase().indexOf(q) >= 0);
    });
    var fragment = document.createDocumentFragment();
    matching.slice(0, limit).forEach(function (test) { fragment.appendChild(row(test)); });
    rows.replaceChildren(fragment);
    shown.textContent = Math.min(limit, matching.length) + " of " + matching.length +
      " matching (" + data.tests.length + " listed)";
    more.hidden = matching.length <= limit;
  }

  function changed() { limit = PAGE; writeHash(); render(); }

  filter.addEventListener("change", changed);
  search.addEventListener("input", changed);
  more.addEventListener("click", function () { limit += PAGE; render(); });
  window.addEventListener("hashchange", function () { readHash(); limit = PAGE; render(); });
  readHash();
  render();
})();
