// tmiDB console, explorer: sizes the chart's buckets to the chart's width and adds
// new records to the first page as they are stored. Without this script the page
// shows the records and the chart as they were at load (960 px buckets).
(function () {
  "use strict";
  var chart = document.getElementById("chart");
  var width = document.getElementById("x-width");
  if (chart && width) {
    var px = Math.round(chart.clientWidth) || 960;
    width.value = String(px);
    // The buckets follow the width the chart really has: the first time a view is
    // opened without one, ask for it again with it (once: the address then has it).
    var url = new URL(window.location.href);
    var asked = Number(url.searchParams.get("width") || 0);
    if (!asked && Math.abs(px - 960) > 240) {
      url.searchParams.set("width", String(px));
      window.location.replace(url.toString());
      return;
    }
  }
  var rows = document.getElementById("rows");
  if (!rows || !rows.dataset.stream) { return; }
  var status = document.getElementById("live-status");
  var keep = Number(rows.dataset.limit || 100) * 5;
  var source = new EventSource(rows.dataset.stream);
  source.addEventListener("rows", function (e) {
    rows.insertAdjacentHTML("afterbegin", e.data);
    while (rows.childElementCount > keep) { rows.removeChild(rows.lastElementChild); }
    status.textContent = "(live: new records appear at the top)";
  });
  source.onopen = function () { status.textContent = "(live)"; };
  source.onerror = function () { status.textContent = "(reconnecting…)"; };
}());
