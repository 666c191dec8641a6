// Copy buttons: a message's Markdown source, a code block's code, a share link. Handled by
// delegation, so buttons that htmx or the websocket swap in later work too.
(function () {
  "use strict";

  var FEEDBACK_MS = 2000;

  function announcer() {
    var region = document.getElementById("copy-status");
    if (!region) {
      region = document.createElement("p");
      region.id = "copy-status";
      region.className = "visually-hidden";
      region.setAttribute("role", "status");
      region.setAttribute("aria-live", "polite");
      document.body.appendChild(region);
    }
    return region;
  }

  function textFor(button) {
    if (button.hasAttribute("data-copy-text")) {
      return button.getAttribute("data-copy-text");
    }
    var sourceId = button.getAttribute("data-copy-from");
    if (sourceId) {
      var source = document.getElementById(sourceId);
      return source ? (source.value !== undefined ? source.value : source.textContent) : "";
    }
    var block = button.closest(".code-block");
    var code = block && block.querySelector("code");
    return code ? code.textContent : "";
  }

  // Pages served over plain http on a LAN address have no Clipboard API: copy through a
  // selected, off-screen textarea instead.
  function copyWithSelection(text) {
    var buffer = document.createElement("textarea");
    buffer.className = "copy-buffer";
    buffer.value = text;
    buffer.setAttribute("readonly", "");
    buffer.setAttribute("aria-hidden", "true");
    document.body.appendChild(buffer);
    var focused = document.activeElement;
    buffer.select();
    var copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (error) {
      copied = false;
    }
    buffer.remove();
    if (focused && focused.focus) {
      focused.focus();
    }
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return copyWithSelection(text);
      });
    }
    return copyWithSelection(text);
  }

  function show(button, label, message) {
    if (!button.hasAttribute("data-label")) {
      button.setAttribute("data-label", button.textContent);
    }
    button.textContent = label;
    button.classList.add("copied");
    announcer().textContent = message;
    clearTimeout(button._copyTimer);
    button._copyTimer = setTimeout(function () {
      button.textContent = button.getAttribute("data-label");
      button.classList.remove("copied");
    }, FEEDBACK_MS);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest(".copy-button, .copy-code");
    if (!button) {
      return;
    }
    event.preventDefault();
    copy(textFor(button)).then(
      function () { show(button, "Copied", "Copied to the clipboard."); },
      function () { show(button, "Copy failed", "Could not copy: select the text and copy it by hand."); }
    );
  });

  document.addEventListener("DOMContentLoaded", announcer);
})();
