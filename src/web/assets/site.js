// codex-proxy website: progressive enhancement only. Every page works without
// this file; it adds copy buttons, confirmations and double-submit guards.
(function () {
  "use strict";

  function copyText(text, button) {
    var done = function () {
      var label = button.getAttribute("data-label") || button.textContent;
      button.setAttribute("data-label", label);
      button.textContent = button.getAttribute("data-done") || "Copied";
      setTimeout(function () { button.textContent = label; }, 1600);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallback(text); done(); });
    } else {
      fallback(text);
      done();
    }
  }

  // Plain-HTTP deployments have no Clipboard API.
  function fallback(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing else to try */ }
    document.body.removeChild(area);
  }

  // Buttons with data-copy="#id" copy that element's text.
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var target = document.querySelector(b.getAttribute("data-copy"));
      if (target) copyText(target.textContent.trim(), b);
    });
  });

  // Every code block gets a copy button.
  var copyLabel = document.documentElement.getAttribute("data-copy-label") || "Copy";
  var copiedLabel = document.documentElement.getAttribute("data-copied-label") || "Copied";
  document.querySelectorAll("pre > code").forEach(function (code) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "copy";
    b.textContent = copyLabel;
    b.setAttribute("data-done", copiedLabel);
    b.addEventListener("click", function () { copyText(code.textContent, b); });
    code.parentNode.classList.add("has-copy");
    code.parentNode.appendChild(b);
  });

  // Forms that change state: confirm when asked, and never submit twice.
  document.querySelectorAll("form").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      var question = f.getAttribute("data-confirm");
      if (question && !window.confirm(question)) { e.preventDefault(); return; }
      if (f.method.toLowerCase() !== "post") return;
      setTimeout(function () {
        f.querySelectorAll("button[type=submit], button:not([type])").forEach(function (b) { b.disabled = true; });
      }, 0);
    });
  });
})();
