// finetune web UI: the only script. It keeps a running job's loss curve current by asking the server for the chart
// again every few seconds (the server draws the SVG; nothing here builds markup from data).
(function () {
  "use strict";
  var POLL_MS = 3000;

  function followCurve(box) {
    var job = box.getAttribute("data-job");
    var note = document.getElementById("curve-note");
    var status = document.getElementById("job-status");
    function tick() {
      fetch("/ui/jobs/" + encodeURIComponent(job) + "/curve", { credentials: "same-origin", headers: { accept: "application/json" } })
        .then(function (r) {
          var type = r.headers.get("content-type") || "";
          if (!r.ok || type.indexOf("application/json") !== 0) { throw new Error("stopped"); }
          return r.json();
        })
        .then(function (data) {
          if (String(data.points) !== box.getAttribute("data-points")) {
            box.innerHTML = data.svg; // server-rendered SVG, escaped there
            box.setAttribute("data-points", String(data.points));
          }
          if (note) { note.textContent = data.points + (data.points === 1 ? " step" : " steps") + " logged" + (data.active ? ", updating live" : ""); }
          if (status) {
            var badge = document.createElement("span");
            badge.className = "badge status-" + data.status;
            badge.textContent = data.status;
            status.replaceChildren(badge);
          }
          box.setAttribute("data-active", data.active ? "true" : "false");
          if (data.active) { setTimeout(tick, POLL_MS); }
        })
        .catch(function () { /* signed out or gone: stop polling; a reload shows why */ });
    }
    setTimeout(tick, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("loss-curve");
    if (box && box.getAttribute("data-active") === "true") { followCurve(box); }
  });
})();
