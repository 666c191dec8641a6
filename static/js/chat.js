// Small behaviours of the chat page. Everything that changes data goes through htmx.
(function () {
  "use strict";

  // Phones and tablets have no Shift+Enter: there Enter starts a new line and Send sends.
  var touchOnly = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;

  function composerBusy() {
    var actions = document.getElementById("composer-actions");
    return actions && actions.dataset.busy === "true";
  }

  function composerInput() {
    return document.getElementById("composer-input");
  }

  // Escape (closing the rename form, the drawer, dialogs and menus) is shortcuts.js's.
  document.addEventListener("keydown", function (event) {
    // Enter sends, Shift+Enter inserts a new line; nothing is sent while a reply streams.
    var input = event.target;
    if (input.id !== "composer-input" || event.key !== "Enter" || event.shiftKey ||
        event.isComposing || touchOnly) {
      return;
    }
    event.preventDefault();
    if (!composerBusy() && input.value.trim()) {
      input.form.requestSubmit();
    }
  });

  // Keep the newest text in view while the reader is already at the bottom.
  // A link to one message (from search) shows that message instead.
  var stickToBottom = !targetMessage();
  function targetMessage() {
    var hash = window.location.hash;
    return /^#message-[0-9a-f-]+$/.test(hash) ? document.getElementById(hash.slice(1)) : null;
  }
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

  // A fragment from the socket may replace the element that had the keyboard focus (the Stop
  // button, a message's Regenerate): give the focus to the composer rather than lose it.
  var focusedBeforeMessage = null;
  document.addEventListener("htmx:wsBeforeMessage", function () {
    focusedBeforeMessage = document.activeElement;
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    scrollToEnd();
    markCurrentConversation();
    if (focusedBeforeMessage && focusedBeforeMessage !== document.body &&
        !document.body.contains(focusedBeforeMessage) && composerInput()) {
      composerInput().focus();
    }
    focusedBeforeMessage = null;
  });

  // A socket closed because its sign-in ended (a logout, a password change, the account
  // deactivated: conversations/replies/events.py) is opened again a second later with the cookie the
  // browser holds by then. A password changed in another tab keeps this browser signed in, and
  // the page goes on as it was; if the new socket is refused too, the page reloads, which shows
  // the login page. A socket closed for being one too many is not reopened: the page says why.
  var CLOSED_SIGNED_OUT = 4401;
  var checkingSignIn = false;
  document.addEventListener("htmx:wsOpen", function () {
    checkingSignIn = false;
  });
  document.addEventListener("htmx:wsClose", function (event) {
    if (checkingSignIn) {
      window.location.reload();
    } else if (event.detail.event.code === CLOSED_SIGNED_OUT) {
      checkingSignIn = true;
      var socket = event.detail.socketWrapper;
      setTimeout(function () { socket.reconnect(); }, 1000);
    }
  });

  // A server too busy to take a request answers 503 with what to show: the composer again, with
  // the text typed and the reason; or, with `HX-Reswap: none`, only the reason, out of band.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.xhr.status === 503) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // After a send, the emptied composer keeps the focus.
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.elt.id === "composer" && event.detail.successful && composerInput()) {
      stickToBottom = true;
      composerInput().focus();
    }
  });

  // An Edit form that htmx just swapped in takes the focus, with the caret at the end, in one
  // step: nothing moves the caret once the editor has the focus, so a selection made or a key
  // typed the moment it arrives stays. Hence no autofocus attribute on the editor: the browser
  // would focus it a frame after the swap, before htmx has wired the form and before this runs.
  document.addEventListener("htmx:load", function (event) {
    var edit = event.detail.elt.querySelector && event.detail.elt.querySelector(".message-edit textarea");
    if (edit) {
      edit.setSelectionRange(edit.value.length, edit.value.length);
      edit.focus();
    }
  });

  // The delete confirmation arrives as a <dialog>: shown modal (Escape, in shortcuts.js, or
  // Cancel close it, the focus stays inside), and removed once closed or once its request
  // succeeded.
  document.addEventListener("htmx:load", function (event) {
    var dialog = event.detail.elt;
    if (dialog.tagName !== "DIALOG" || dialog.open) {
      return;
    }
    var opener = document.activeElement;
    // The close event comes a task after close(): a key pressed since may have moved the focus
    // on. Give it back to the opener only if it is lost (still in the dialog, or nowhere).
    dialog.addEventListener("close", function () {
      var active = document.activeElement;
      var lost = !active || active === document.body || dialog.contains(active);
      dialog.remove();
      if (lost && opener && document.body.contains(opener)) {
        opener.focus();
      }
    });
    dialog.querySelector(".dialog-cancel").addEventListener("click", function () {
      dialog.close();
    });
    dialog.showModal();
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var dialog = event.detail.elt.closest && event.detail.elt.closest("dialog");
    if (dialog && event.detail.successful && dialog.open) {
      dialog.close();
    }
  });

  // A rename form selects the title for typing over.
  document.addEventListener("htmx:load", function (event) {
    var input = event.detail.elt.querySelector && event.detail.elt.querySelector(".rename-input");
    if (input) {
      input.focus();
      input.select();
    }
  });
  // The sidebar, swapped by a request of this tab, marks this tab's conversation again.
  document.addEventListener("htmx:afterSwap", markCurrentConversation);

  document.addEventListener("DOMContentLoaded", function () {
    var target = targetMessage();
    if (target) {
      target.scrollIntoView({block: "center"});
    }
    scrollToEnd();
    // Not on touch screens, where focusing would pop the keyboard over the conversation.
    if (composerInput() && !touchOnly && !document.querySelector("[aria-invalid]")) {
      composerInput().focus();
    }
  });
})();
