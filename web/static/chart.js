// The task panel stays live: every few seconds it is fetched again, so checks re-run by the server's live
// worker (after FHIR API or HL7 writes, say) show without a reload.  Paused while the page is hidden or
// while keyboard focus is inside the panel, so a refresh never pulls a button from under the user.
// Coded pickers: beside the code, say what it means (the datalist option's label) as it is typed or picked.
(function () {
  "use strict";
  var inputs = document.querySelectorAll("input[list]");
  Array.prototype.forEach.call(inputs, function (input) {
    var output = document.getElementById(input.id + "-picked");
    if (!output || !input.list) { return; }
    input.addEventListener("input", function () {
      var code = input.value.trim().split(/\s+/)[0];
      var match = Array.prototype.find.call(input.list.options, function (o) { return o.value === code; });
      output.textContent = match ? match.textContent : "";
    });
  });
})();

(function () {
  "use strict";
  var panel = document.getElementById("task-panel");
  if (!panel || !panel.dataset.refresh || !window.fetch) { return; }
  var url = panel.dataset.refresh;
  function refresh() {
    if (document.hidden || panel.contains(document.activeElement)) { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html !== null && !panel.contains(document.activeElement) && panel.innerHTML !== html) {
          panel.innerHTML = html;
        }
      })
      .catch(function () { /* offline for a moment: try again at the next tick */ });
  }
  window.setInterval(refresh, 5000);
  panel.addEventListener("task-panel-refresh", refresh);  // asked for by the timed task's clock at zero
})();

// A timed task's clock.  The server draws the seconds left when it renders the panel (so the computer's own
// clock need not agree with the server's); this counts them down each second, and at zero says the time is
// up, disables the task's buttons, and a second later asks for the panel again: the server closes the attempt
// as it draws the panel (if the live worker has not already), so the refresh brings the final result.
// Without the script the panel still shows the time left when drawn and the deadline's clock time.
(function () {
  "use strict";
  function shown(seconds) {
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    var mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0");
  }
  function tick() {
    var left = document.getElementById("time-left");
    if (!left) { return; }
    if (!left.dataset.until) {  // a fresh panel (first load, or a refresh): count from what the server said
      left.dataset.until = String(Date.now() + 1000 * Number(left.dataset.secondsLeft));
    }
    var seconds = Math.max(0, Math.ceil((Number(left.dataset.until) - Date.now()) / 1000));
    left.textContent = shown(seconds);
    if (seconds === 0) {
      var timer = document.getElementById("task-timer");
      timer.textContent = "Time is up: the attempt closes with what you had done by the deadline.";
      timer.classList.add("time-up");
      Array.prototype.forEach.call(document.querySelectorAll("#task-panel .task-actions button"), function (b) {
        b.disabled = true;
      });
      window.setTimeout(function () {
        document.getElementById("task-panel").dispatchEvent(new Event("task-panel-refresh"));
      }, 1000);
    }
  }
  tick();
  window.setInterval(tick, 1000);
})();
