// Keyboard shortcuts, their dialog ("?") and the one Escape dispatcher; with the phone drawer
// they open and close. Everything here enhances what works without it (links, a checkbox).
(function () {
  "use strict";

  function byId(id) {
    return document.getElementById(id);
  }

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
  // The close event comes a task after close(): by then the browser has given the focus back,
  // and a key pressed since (Shift+Esc, Tab) may have moved it on. Put it back only if it is lost.
  document.addEventListener("close", function (event) {
    var dialog = event.target;
    if (dialog.id !== "shortcuts-dialog") {
      return;
    }
    var from = openedFrom;
    openedFrom = null;
    var active = document.activeElement;
    var lost = !active || active === document.body || dialog.contains(active);
    if (lost && from && document.body.contains(from)) {
      from.focus();
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
  // The search box of this page: the chat sidebar's, else the search page's; else the
  // search page itself (its URL is on the shortcuts dialog, for signed-in visitors only).
  function focusSearch() {
    var search = byId("sidebar-search-input") || byId("search-input");
    if (!search) {
      var dialog = byId("shortcuts-dialog");
      var url = dialog && dialog.dataset.searchUrl;
      if (!url) {
        return false;
      }
      window.location.assign(url);
      return true;
    }
    // On a phone the sidebar's box lives in the closed drawer: open it first.
    var sidebar = byId("sidebar");
    if (sidebar && sidebar.contains(search) && drawerIsUsed() && !drawer().checked) {
      setDrawer(true);
    }
    search.focus();
    if (search.select) {
      search.select();
    }
    return true;
  }

  // --- Escape: one dispatcher, so it closes what is open before it stops a reply. ----
  // In order: a modal dialog, an open menu or settings panel, a rename form, the phone
  // drawer; only when none is open does Escape stop the reply being written.
  function openModal() {
    var open = document.querySelectorAll("dialog[open]");
    for (var i = open.length - 1; i >= 0; i--) {
      var modal = true;
      try {
        modal = open[i].matches(":modal");
      } catch (error) {
        // A browser without :modal: every open dialog here is shown modal.
      }
      if (modal) {
        return open[i];
      }
    }
    return null;
  }
  function visible(element) {
    return element.getClientRects().length > 0;
  }
  var MENUS = ".conversation-tools details[open], details.conversation-menu[open], details.chat-settings[open]";
  function openMenu(target) {
    var here = target && target.closest && target.closest("details[open]");
    if (here && here.matches(MENUS)) {
      return here;
    }
    var menus = document.querySelectorAll(MENUS);
    for (var i = 0; i < menus.length; i++) {
      if (visible(menus[i])) {
        return menus[i];
      }
    }
    return null;
  }
  function openRenameForm(target) {
    var here = target && target.closest && target.closest(".rename-form");
    if (here) {
      return here;
    }
    var forms = document.querySelectorAll(".rename-form");
    for (var i = 0; i < forms.length; i++) {
      if (visible(forms[i])) {
        return forms[i];
      }
    }
    return null;
  }
  function onEscape(event) {
    if (event.defaultPrevented) {
      return;
    }
    var target = event.target;
    var dialog = openModal();
    if (dialog) {
      // Closed here rather than by the browser, so nothing else reads this Escape.
      event.preventDefault();
      dialog.close();
      return;
    }
    var menu = openMenu(target);
    if (menu) {
      event.preventDefault();
      menu.open = false;
      menu.querySelector("summary").focus();
      return;
    }
    var renaming = openRenameForm(target);
    if (renaming) {
      event.preventDefault();
      // Asked of htmx directly: a form swapped in a moment ago may not have its Cancel
      // button wired by htmx yet, and a click on it would do nothing.
      var cancel = renaming.querySelector(".rename-cancel");
      window.htmx.ajax("GET", cancel.getAttribute("hx-get"), {
        target: cancel.getAttribute("hx-target"),
        swap: "outerHTML",
      });
      return;
    }
    if (drawerIsUsed() && drawer().checked) {
      event.preventDefault();
      setDrawer(false);
      drawer().focus();
      return;
    }
    var stop = document.querySelector("#composer-actions .stop");
    if (stop && !hasText(target)) {
      event.preventDefault();
      stop.click();
    }
  }

  // Capture phase: shortcuts win over the page's own keys, except inside an open dialog.
  window.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.isComposing) {
      return;
    }
    var key = event.key;
    var command = event.ctrlKey || event.metaKey;
    var target = event.target;
    if (key === "Escape" && !event.shiftKey && !command && !event.altKey) {
      onEscape(event);
      return;
    }
    if (openModal()) {
      return; // no shortcut behind a modal dialog; Tab stays inside it
    }
    var dialog = byId("shortcuts-dialog");

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
