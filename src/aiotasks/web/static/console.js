// The aiotasks web console: refresh the page's live part in place, and send the controls
// after a confirmation. No inline script anywhere (the CSP forbids it); text from the
// server's JSON is set with textContent, the live HTML comes escaped from the server.
(function () {
  "use strict";
  var meta = function (name) {
    var found = document.querySelector('meta[name="' + name + '"]');
    return found ? found.getAttribute("content") : "";
  };
  var every = Math.max(parseFloat(meta("aiotasks-refresh")) || 5, 0.5) * 1000;
  var busy = false;

  function refresh() {
    var live = document.getElementById("live");
    if (!live || busy) return Promise.resolve();
    busy = true;
    return fetch(window.location.href, {
      headers: { "X-Aiotasks-Fragment": "1" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.text();
    }).then(function (html) {
      live.innerHTML = html;
      var fresh = document.getElementById("fresh");
      if (fresh) fresh.textContent = "- last refresh " + new Date().toLocaleTimeString();
      document.body.removeAttribute("data-stale");
    }).catch(function (error) {
      var fresh = document.getElementById("fresh");
      if (fresh) fresh.textContent = "- refresh failed (" + error.message + "), retrying";
      document.body.setAttribute("data-stale", "1");
    }).finally(function () {
      busy = false;
    });
  }

  function say(ok, message) {
    var flash = document.getElementById("flash");
    if (!flash) return;
    flash.hidden = false;
    flash.className = ok ? "good" : "bad";
    flash.textContent = message;
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("control")) return;
    event.preventDefault();
    if (!window.confirm(form.getAttribute("data-confirm") || "Are you sure?")) return;
    var body = new URLSearchParams(new FormData(form));
    body.set("confirmed", "1");
    form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    say(true, "sending...");
    fetch(form.action, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": meta("aiotasks-csrf") }
    }).then(function (response) {
      return response.json().catch(function () {
        return { ok: false, message: "HTTP " + response.status };
      });
    }).then(function (reply) {
      say(!!reply.ok, reply.message);
    }).catch(function (error) {
      say(false, "not sent: " + error.message);
    }).finally(function () {
      // Show the fleet acting on it: now, and again as replicas pick it up.
      refresh();
      window.setTimeout(refresh, 1000);
      window.setTimeout(refresh, 3000);
    });
  });

  window.setInterval(function () {
    if (!document.hidden) refresh();
  }, every);
})();
