// Comfort: the colour theme switch, keyboard shortcuts and the phone drawer's state.
// Everything here enhances what works without it (forms, links, a checkbox).
(function () {
  "use strict";

  function byId(id) {
    return document.getElementById(id);
  }

  // --- Theme: switch at once; htmx posts the same form so the server remembers it. -----
  document.addEventListener("click", function (event) {
    var choice = event.target.closest && event.target.closest("#theme-form .theme-choice");
    if (!choice) {
      return;
    }
    document.documentElement.setAttribute("data-theme", choice.value);
    var all = choice.form.querySelectorAll(".theme-choice");
    for (var i = 0; i < all.length; i++) {
      all[i].setAttribute("aria-pressed", all[i] === choice ? "true" : "false");
    }
  });

  // --- The conversation drawer on narrow screens. ------------------------------------
  function drawer() {
    return byId("sidebar-toggle");
  }
  function drawerIsUsed() {
    var toggle = drawer();
    return toggle && window.getComputedStyle(toggle).display !== "none";
  }
  function syncDrawer() {
    var toggle = drawer();
    if (toggle) {
      toggle.setAttribute("aria-expanded", toggle.checked ? "true" : "false");
    }
  }
  function setDrawer(open) {
    var toggle = drawer();
    if (toggle) {
      toggle.checked = open;
      syncDrawer();
    }
  }
  document.addEventListener("change", function (event) {
    if (event.target === drawer()) {
      syncDrawer();
    }
  });

  // --- The shortcuts dialog. ---------------------------------------------------------
  var openedFrom = null;
  function openShortcuts() {
    var dialog = byId("shortcuts-dialog");
    if (dialog && !dialog.open) {
      openedFrom = document.activeElement;
      dialog.showModal();
    }
  }
  document.addEventListener("click", function (event) {
    if (!event.target.closest) {
      return;
    }
    if (event.target.closest("[data-open-shortcuts]")) {
      openShortcuts();
    } else if (event.target.closest("[data-close-dialog]")) {
      event.target.closest("dialog").close();
    }
  });
  document.addEventListener("close", function (event) {
    if (event.target.id === "shortcuts-dialog" && openedFrom && document.body.contains(openedFrom)) {
      openedFrom.focus();
    }
  }, true);

  // --- Keyboard shortcuts. -----------------------------------------------------------
  function isTyping(element) {
    if (!element) {
      return false;
    }
    var tag = element.tagName;
    return element.isContentEditable || tag === "TEXTAREA" || tag === "SELECT" ||
      (tag === "INPUT" && !/^(checkbox|radio|button|submit|reset)$/.test(element.type));
  }
  function hasText(element) {
    return isTyping(element) && element.value !== undefined && element.value !== "";
  }
  function focusSearch() {
    var search = byId("search-input");
    if (!search) {
      return false;
    }
    // On a phone the search box lives in the closed drawer: open it first.
    if (drawerIsUsed() && !drawer().checked) {
      setDrawer(true);
    }
    search.focus();
    if (search.select) {
      search.select();
    }
    return true;
  }

  // Capture phase: shortcuts win over the page's own keys, except inside an open dialog.
  window.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.isComposing) {
      return;
    }
    var dialog = byId("shortcuts-dialog");
    if (dialog && dialog.open) {
      return; // Esc closes it (the browser's own), Tab stays inside it
    }
    var key = event.key;
    var command = event.ctrlKey || event.metaKey;
    var target = event.target;

    if (command && event.shiftKey && !event.altKey && (key === "O" || key === "o")) {
      event.preventDefault();
      var newChat = dialog ? dialog.dataset.newChatUrl : "/";
      window.location.assign(newChat);
      return;
    }
    if (command && event.shiftKey && !event.altKey && (key === "S" || key === "s")) {
      if (drawerIsUsed()) {
        event.preventDefault();
        setDrawer(!drawer().checked);
        drawer().focus();
      }
      return;
    }
    if (command && !event.shiftKey && !event.altKey && (key === "k" || key === "K")) {
      if (focusSearch()) {
        event.preventDefault();
      }
      return;
    }
    if (key === "Escape" && event.shiftKey && !command && !event.altKey) {
      var composer = byId("composer-input");
      if (composer) {
        event.preventDefault();
        if (drawerIsUsed() && drawer().checked) {
          setDrawer(false);
        }
        composer.focus();
      }
      return;
    }
    if (key === "Escape" && !event.shiftKey && !command && !event.altKey) {
      if (drawerIsUsed() && drawer().checked) {
        // chat.js closes the drawer and gives the focus back to its toggle.
        window.setTimeout(syncDrawer);
        return;
      }
      var stop = document.querySelector("#composer-actions .stop");
      if (stop && !hasText(target)) {
        event.preventDefault();
        stop.click();
      }
      return;
    }
    if (command || event.altKey || isTyping(target)) {
      return;
    }
    if (key === "?") {
      event.preventDefault();
      openShortcuts();
    } else if (key === "/") {
      if (focusSearch()) {
        event.preventDefault();
      }
    } else if (key === "Enter" && target === drawer()) {
      // A checkbox answers Space only; a drawer toggle should open with Enter too.
      event.preventDefault();
      setDrawer(!target.checked);
    }
  }, true);
})();
