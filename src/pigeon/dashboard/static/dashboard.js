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
