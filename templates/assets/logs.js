// tmiDB console, logs page: a live tail of every unit on one Server-Sent Events stream.
// The page works without this script (it shows the last lines and the channel
// switches); this adds the live tail, the level and text filters, pause, a bounded
// buffer, and the gap markers the supervisor sends. EventSource reconnects by itself
// with Last-Event-ID (the last sequence number), so a dropped connection resumes
// without a gap.
(function () {
  "use strict";
  var list = document.getElementById("log-lines");
  if (!list) { return; }
  var MAX = 2000;
  var levels = ["trace", "debug", "info", "warn", "error"];
  var levelSelect = document.getElementById("log-level");
  var grepInput = document.getElementById("log-grep");
  var pauseBox = document.getElementById("log-pause");
  var status = document.getElementById("log-status");
  var off = new Set((list.dataset.disabled || "").split(" ").filter(Boolean));
  var held = [];

  function visible(li) {
    var min = levels.indexOf(levelSelect.value);
    var lvl = levels.indexOf(li.dataset.level);
    var text = grepInput.value.toLowerCase();
    return !off.has(li.dataset.channel) && (lvl < 0 || lvl >= min) &&
      (!text || li.textContent.toLowerCase().indexOf(text) >= 0);
  }

  function refilter() {
    for (var li = list.firstElementChild; li; li = li.nextElementSibling) {
      li.hidden = !visible(li);
    }
  }

  function append(li) {
    li.hidden = !visible(li);
    list.appendChild(li);
    while (list.childElementCount > MAX) { list.removeChild(list.firstElementChild); }
    if (!li.hidden) { li.scrollIntoView({ block: "nearest" }); }
  }

  function line(r) {
    var li = document.createElement("li");
    li.dataset.level = r.level;
    li.dataset.channel = r.channel;
    li.dataset.seq = String(r.seq);
    li.className = "level-" + r.level;
    var name = r.instance == null ? r.unit : r.unit + "@" + r.instance;
    li.textContent = r.ts + " " + name + " " + r.level + " " + r.msg;
    return li;
  }

  function gap(d) {
    var li = document.createElement("li");
    li.className = "gap";
    li.dataset.level = "error";
    li.dataset.channel = "";
    li.textContent = "— " + d.missed + " lines missed: " + d.reason + " —";
    return li;
  }

  function deliver(li) {
    if (pauseBox.checked) { held.push(li); } else { append(li); }
  }

  var last = list.lastElementChild;
  var url = "/logs/stream" + (last && last.dataset.seq ? "?since=" + last.dataset.seq : "");
  var source = new EventSource(url);
  source.addEventListener("log", function (e) { deliver(line(JSON.parse(e.data))); });
  source.addEventListener("gap", function (e) { deliver(gap(JSON.parse(e.data))); });
  source.onopen = function () { status.textContent = "live"; };
  source.onerror = function () { status.textContent = "reconnecting…"; };
  levelSelect.addEventListener("change", refilter);
  grepInput.addEventListener("input", refilter);
  pauseBox.addEventListener("change", function () {
    if (!pauseBox.checked) { held.forEach(append); held = []; }
  });
  status.textContent = "connecting…";
}());
