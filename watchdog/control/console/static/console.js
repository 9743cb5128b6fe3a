// Live updates: the server sends each panel again as HTML when it changes (server-sent events).
// Without this script the page is the same, only frozen at load time.
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  var live = document.getElementById("live");
  var updated = document.getElementById("updated");
  var range = document.body.getAttribute("data-range") || "24h";
  var source = new EventSource("/console/events?range=" + encodeURIComponent(range));
  function replace(id, html) {
    var panel = document.getElementById(id);
    if (!panel) { return; }
    // keep what the operator opened (a log, an incident, a restart confirmation) open across updates
    var open = {};
    panel.querySelectorAll("details[open]").forEach(function (d) { open[d.getAttribute("data-key")] = true; });
    panel.innerHTML = html;
    panel.querySelectorAll("details").forEach(function (d) {
      if (open[d.getAttribute("data-key")]) { d.open = true; }
    });
    if (updated) { updated.textContent = "as of " + clock(new Date()); }
  }
  // 24-hour like every other time on the page (toLocaleTimeString is 12-hour in many locales)
  function clock(d) {
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map(function (n) { return ("0" + n).slice(-2); }).join(":");
  }
  ["now", "timeline", "incidents", "logs"].forEach(function (id) {
    source.addEventListener(id, function (event) { replace(id, event.data); });
  });
  document.querySelectorAll("section .panel[id^='x-']").forEach(function (panel) {
    source.addEventListener(panel.id, function (event) { replace(panel.id, event.data); });
  });
  source.onopen = function () { live.textContent = "live"; live.className = "ok"; };
  source.onerror = function () { live.textContent = "not live: reconnecting…"; live.className = "bad"; };
})();
