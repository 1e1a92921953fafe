// tmiDB console, dashboard: keeps the units table current without a reload. The
// server sends the whole list on one Server-Sent Events stream whenever it changes;
// the page without this script shows the state at load.
(function () {
  "use strict";
  var table = document.getElementById("units");
  if (!table) { return; }
  var status = document.getElementById("units-status");
  var source = new EventSource(table.dataset.stream);

  function set(row, field, text) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    if (cell && cell.textContent !== text) { cell.textContent = text; }
    return cell;
  }

  source.addEventListener("units", function (e) {
    JSON.parse(e.data).forEach(function (u) {
      var row = table.querySelector('tr[data-unit="' + CSS.escape(u.name) + '"]');
      if (!row) { return; }
      var state = set(row, "state", u.state);
      if (state) { state.className = "state state-" + u.state; }
      set(row, "pid", u.pid == null ? "–" : String(u.pid));
      set(row, "restarts", String(u.restarts));
      set(row, "since", u.since);
      set(row, "last_exit", u.last_exit || "–");
      set(row, "reason", u.reason);
    });
    status.textContent = "(live)";
  });
  source.onerror = function () { status.textContent = "(reconnecting…)"; };
}());
