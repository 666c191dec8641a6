// Small behaviours of the chat page. Everything that changes data goes through htmx.
(function () {
  "use strict";

  function composerBusy() {
    var actions = document.getElementById("composer-actions");
    return actions && actions.dataset.busy === "true";
  }

  // Enter sends, Shift+Enter inserts a new line; nothing is sent while a reply streams.
  document.addEventListener("keydown", function (event) {
    var input = event.target;
    if (input.id !== "composer-input" || event.key !== "Enter" || event.shiftKey || event.isComposing) {
      return;
    }
    event.preventDefault();
    if (!composerBusy() && input.value.trim()) {
      input.form.requestSubmit();
    }
  });

  // Keep the newest text in view while the reader is already at the bottom.
  var stickToBottom = true;
  function scroller() {
    return document.getElementById("chat-stream");
  }
  document.addEventListener("scroll", function (event) {
    var box = scroller();
    if (event.target === box) {
      stickToBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    }
  }, true);
  function scrollToEnd() {
    var box = scroller();
    if (box && stickToBottom) {
      box.scrollTop = box.scrollHeight;
    }
  }

  document.addEventListener("htmx:wsAfterMessage", scrollToEnd);
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.target.id === "composer") {
      stickToBottom = true;
      var input = document.getElementById("composer-input");
      if (input) {
        input.focus();
      }
    }
  });
  // The conversation list arrives rendered once for all of a user's tabs: mark this tab's own.
  function markCurrentConversation() {
    var links = document.querySelectorAll("#conversation-list a");
    for (var i = 0; i < links.length; i++) {
      if (links[i].getAttribute("href") === window.location.pathname) {
        links[i].setAttribute("aria-current", "page");
      } else {
        links[i].removeAttribute("aria-current");
      }
    }
  }
  document.addEventListener("htmx:wsAfterMessage", markCurrentConversation);

  // An Edit form that htmx just swapped in takes the focus, with the caret at the end.
  document.addEventListener("htmx:load", function (event) {
    var edit = event.detail.elt.querySelector && event.detail.elt.querySelector(".message-edit textarea");
    if (edit) {
      edit.focus();
      edit.setSelectionRange(edit.value.length, edit.value.length);
    }
  });
  document.addEventListener("DOMContentLoaded", function () {
    scrollToEnd();
    var input = document.getElementById("composer-input");
    if (input && !document.querySelector("[aria-invalid]")) {
      input.focus();
    }
  });
})();
