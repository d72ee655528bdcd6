// Google Analytics, only on the marketing pages and only when the instance's operator
// configured it and the browser sent neither DNT nor Sec-GPC (the server decides).
(function () {
  var id = document.currentScript && document.currentScript.dataset.measurementId;
  if (!id) { return; }
  window.dataLayer = window.dataLayer || [];
  function gtag() { window.dataLayer.push(arguments); }
  gtag("js", new Date());
  gtag("config", id, { anonymize_ip: true });
})();
