// The colour theme switch: the page changes at once; htmx posts the same form so the server
// remembers it (templates/_theme_toggle.html works without this, as a plain form).
(function () {
  "use strict";

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
})();
