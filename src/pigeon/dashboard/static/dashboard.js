// pigeon dashboard: the little the pages do in the browser (no inline script, CSP 'self').
// A button with data-confirm asks first; a checkbox with data-check-all="NAME" toggles all.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
  }
});
document.addEventListener("change", (event) => {
  const all = event.target.closest("[data-check-all]");
  if (!all) return;
  const form = all.closest("form") || document;
  for (const box of form.querySelectorAll(`input[name="${all.dataset.checkAll}"]`)) {
    box.checked = all.checked;
  }
});

// Live pages (pigeon.dashboard.live): a <main data-live> is fetched again every few
// seconds (the header's "refresh" choice, kept in localStorage) as a fragment, only while
// the tab is visible, and never while the user is typing in or has ticked a form of it.
// A 503 marked X-Pigeon-Stale is the "backend unreachable" banner: shown, the page kept.
(() => {
  const main = document.querySelector("main[data-live]");
  const choice = document.getElementById("live-every");
  const banner = document.getElementById("stale");
  const KEY = "pigeon-dashboard-refresh";
  let timer = null;
  let touched = false;
  let silentSince = null;
  if (choice) {
    const kept = window.localStorage.getItem(KEY);
    if (kept !== null && [...choice.options].some((o) => o.value === kept)) choice.value = kept;
    choice.addEventListener("change", () => {
      window.localStorage.setItem(KEY, choice.value);
      if (main) schedule();
    });
  }
  if (!main) return;
  main.addEventListener("input", () => { touched = true; });
  const every = () => (choice ? Number(choice.value) : 5) * 1000;
  const busy = () => {
    const active = document.activeElement;
    return touched || (active && main.contains(active) && active.matches("input, select, textarea"));
  };
  const showBanner = (text) => {
    if (!banner) return;
    banner.textContent = text;
    banner.hidden = false;
  };
  function schedule() {
    window.clearTimeout(timer);
    timer = null;
    if (every() > 0 && document.visibilityState === "visible") {
      timer = window.setTimeout(refresh, every());
    }
  }
  async function refresh() {
    if (busy()) return schedule();
    try {
      const answer = await fetch(window.location.href, {
        headers: { "X-Pigeon-Fragment": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      const text = await answer.text();
      silentSince = null;
      if (answer.ok) {
        if (!busy()) {
          main.innerHTML = text;
          main.dataset.refreshed = String(Number(main.dataset.refreshed || 0) + 1);
        }
        if (banner) banner.hidden = true;
      } else if (answer.headers.get("X-Pigeon-Stale")) {
        showBanner(text);
      } else if (answer.status === 401) {
        window.location.reload(); // signed out: the login form
      }
    } catch (error) {
      silentSince = silentSince || new Date();
      showBanner(`The dashboard does not answer since ${silentSince.toLocaleTimeString()}, retrying.`);
    }
    schedule();
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") refresh();
    else { window.clearTimeout(timer); timer = null; }
  });
  schedule();
})();
