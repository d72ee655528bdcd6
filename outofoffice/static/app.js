// Progressive enhancement only: every page works without this file.
document.addEventListener("DOMContentLoaded", function () {
  var tz = document.querySelector('input[data-autofill="timezone"]');
  if (tz && !tz.value && window.Intl) {
    tz.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  }

  // The caller's status link: share it (phones) or copy it (desktops).
  document.querySelectorAll("button[data-share]").forEach(function (button) {
    if (!navigator.share && !(navigator.clipboard && window.isSecureContext)) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      var url = button.getAttribute("data-share");
      if (navigator.share) {
        navigator.share({ title: button.getAttribute("data-share-title") || "", url: url })
          .catch(function () {});
        return;
      }
      navigator.clipboard.writeText(url).then(function () {
        button.textContent = "Link copied";
      });
    });
  });

  // The caller's status page: new steps appear in place, without a reload.
  var progress = document.querySelector("#progress[data-live]");
  if (progress && window.fetch && window.DOMParser) {
    var every = parseInt(progress.getAttribute("data-live"), 10) * 1000;
    var timer = window.setInterval(function () {
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("progress");
          if (!fresh) return;
          if (progress.innerHTML !== fresh.innerHTML) progress.innerHTML = fresh.innerHTML;
          if (!fresh.hasAttribute("data-live")) window.clearInterval(timer);
        })
        .catch(function () {});
    }, every);
  }

  // The dashboard's menu folds away on a phone; without this file it stays open.
  var toggle = document.querySelector("button[data-menu]");
  var menu = toggle && document.getElementById(toggle.getAttribute("aria-controls"));
  if (toggle && menu) {
    toggle.hidden = false;
    menu.classList.add("folded");
    toggle.addEventListener("click", function () {
      var open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", String(open));
      menu.classList.toggle("folded", !open);
    });
  }

  // A long list of time zones: typing filters it.
  var filter = document.querySelector("input[data-filter-for]");
  var select = filter && document.getElementById(filter.getAttribute("data-filter-for"));
  if (filter && select) {
    filter.hidden = false;
    var options = Array.prototype.slice.call(select.options);
    filter.addEventListener("input", function () {
      var words = filter.value.toLowerCase().replace(/ /g, "_");
      options.forEach(function (option) {
        option.hidden = words && option.value.toLowerCase().indexOf(words) < 0 && !option.selected;
      });
    });
  }
});
