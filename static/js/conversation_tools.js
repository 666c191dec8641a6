// The Export and Share menus of a conversation's header: one open at a time; a click elsewhere
// closes them (Escape too: see the Escape dispatcher in shortcuts.js).
(function () {
  "use strict";

  function openMenus() {
    return document.querySelectorAll(".conversation-tools details[open]");
  }
  document.addEventListener("toggle", function (event) {
    var menu = event.target;
    if (!menu.open || !menu.closest || !menu.closest(".conversation-tools")) {
      return;
    }
    openMenus().forEach(function (other) {
      if (other !== menu) {
        other.open = false;
      }
    });
  }, true);
  document.addEventListener("click", function (event) {
    openMenus().forEach(function (menu) {
      if (!menu.contains(event.target)) {
        menu.open = false;
      }
    });
  });
})();
