// partners-engine UI: progressive enhancement only. Every page works without
// this file; it adds copy buttons and confirmations. Loaded as a file (the
// Content-Security-Policy allows no inline script).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button.copy[data-copy]").forEach(function (b) {
    var src = document.getElementById(b.getAttribute("data-copy"));
    if (!src || !navigator.clipboard) { return; }
    b.hidden = false;
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(src.textContent.trim()).then(function () {
        b.textContent = "Copied";
      });
    });
  });
  document.querySelectorAll("[data-confirm]").forEach(function (b) {
    var form = b.form;
    if (!form) { return; }
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(b.getAttribute("data-confirm"))) { ev.preventDefault(); }
    });
  });
});
