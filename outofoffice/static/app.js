// Progressive enhancement only: every page works without this file.
document.addEventListener("DOMContentLoaded", function () {
  var tz = document.querySelector('input[data-autofill="timezone"]');
  if (tz && !tz.value && window.Intl) {
    tz.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  }
});
