// switchboard admin page: live updates. The page is complete without this
// script (reload it for news); with it, the server's Server-Sent Events
// replace the live part whenever it changed. Nothing else is loaded.
(function () {
  "use strict";
  if (!window.EventSource) return;
  var live = document.getElementById("live");
  var state = document.getElementById("live-state");
  if (!live) return;
  var updates = 0;
  var source = new EventSource("/admin/events");
  function connected() {
    document.body.setAttribute("data-live", "on");
    if (state) state.textContent = "Live: this page updates as things change.";
  }
  source.addEventListener("live", function (e) {
    // Keep the keyboard where it was when the part is replaced.
    var focused = document.activeElement && document.activeElement.id;
    live.innerHTML = e.data;
    if (focused) {
      var again = document.getElementById(focused);
      if (again) again.focus();
    }
    updates += 1;
    document.body.setAttribute("data-updates", String(updates));
    connected();
  });
  source.onerror = function () {
    document.body.setAttribute("data-live", "off");
    if (state) state.textContent = "Live updates interrupted; reconnecting.";
  };
})();
