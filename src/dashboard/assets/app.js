// genq dashboard: live counts and key countdowns, polled lightly. No framework.
"use strict";
(function () {
  const status = document.getElementById("live-status");
  function fmtSecs(s) {
    if (s <= 0) return "now";
    if (s < 60) return s.toFixed(0) + "s";
    const m = Math.floor(s / 60);
    return m + "m " + Math.floor(s % 60) + "s";
  }
  // Cooldowns count down every second from the server's deadline.
  function tick() {
    for (const el of document.querySelectorAll(".countdown[data-until]")) {
      const left = (Date.parse(el.dataset.until) - Date.now()) / 1000;
      el.textContent = left > 0 ? fmtSecs(left) + " left" : "over";
    }
  }
  async function poll() {
    try {
      const r = await fetch("/live", { credentials: "same-origin", headers: { "Accept": "application/json" } });
      if (!r.ok) { if (status) status.textContent = "live updates paused (" + r.status + ")"; return; }
      const live = await r.json();
      for (const el of document.querySelectorAll("[data-live]")) {
        const v = live.totals[el.dataset.live];
        if (v !== undefined) el.textContent = v;
      }
      for (const el of document.querySelectorAll("[data-key-state]")) {
        const k = live.keys[el.dataset.keyState];
        if (k) { el.textContent = k; el.className = "badge " + k; }
      }
      const jobEl = document.querySelector("[data-live-job]");
      if (jobEl) {
        const r2 = await fetch("/live/jobs/" + encodeURIComponent(jobEl.dataset.liveJob), { credentials: "same-origin" });
        if (r2.ok) {
          const j = await r2.json();
          // The page follows its job: a new state shows in full (without the note of the change that led here).
          if (j.state !== jobEl.textContent) { window.location.replace(window.location.pathname); return; }
        }
      }
      if (status) status.textContent = "live · " + new Date().toLocaleTimeString();
    } catch (e) {
      if (status) status.textContent = "live updates paused";
    }
  }
  tick();
  setInterval(tick, 1000);
  poll();
  setInterval(poll, 2000);
})();
