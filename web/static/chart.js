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
})();
