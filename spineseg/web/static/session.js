// Every page: when the server says the login session has expired (401 from the API on a page
// that was logged in), go to the login page with a "session expired" message and come back
// here after logging in. Uploads call SpineSegSession.expired() for their XHR requests; fetch
// requests are watched here.
"use strict";
(function () {
  let leaving = false;
  function expired() {
    if (leaving || window.location.pathname === "/login") return;
    leaving = true;
    const here = window.location.pathname + window.location.search;
    window.location.assign("/login?expired=1&next=" + encodeURIComponent(here));
  }
  const original = window.fetch.bind(window);
  window.fetch = async function (input, init) {
    const response = await original(input, init);
    const url = new URL(typeof input === "string" ? input : input.url, window.location.href);
    if (response.status === 401 && url.origin === window.location.origin && url.pathname.startsWith("/api/")) expired();
    return response;
  };
  window.SpineSegSession = { expired };
})();
