// callvault console: small progressive enhancements; every page works without this file.
"use strict";
document.documentElement.classList.add("js");

// the storage form: show only the chosen backend's fields
document.querySelectorAll("select[data-switches]").forEach(function (select) {
  var group = select.getAttribute("data-switches");
  function show() {
    document.querySelectorAll("fieldset." + group).forEach(function (fieldset) {
      var active = fieldset.getAttribute("data-backend") === select.value;
      if (active) { fieldset.removeAttribute("data-inactive"); } else { fieldset.setAttribute("data-inactive", ""); }
      fieldset.disabled = !active;
    });
  }
  select.addEventListener("change", show);
  show();
});

// destructive forms ask first
document.querySelectorAll("form[data-confirm]").forEach(function (form) {
  form.addEventListener("submit", function (event) {
    if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
  });
});
