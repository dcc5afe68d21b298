// TermPulse dashboard: small progressive enhancements on top of htmx. No build step.
(function () {
  "use strict";

  // Relative times ("12 min ago", "since 3 h 5 min") stay true between live updates.
  function ago(seconds) {
    if (seconds >= 86400) return Math.floor(seconds / 86400) + " d ago";
    if (seconds >= 3600) return Math.floor(seconds / 3600) + " h ago";
    if (seconds >= 60) return Math.floor(seconds / 60) + " min ago";
    return Math.max(seconds, 0) + " s ago";
  }
  function lasted(seconds) {
    seconds = Math.max(seconds, 0);
    var d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600), m = Math.floor((seconds % 3600) / 60);
    if (d) return d + " d " + h + " h";
    if (h) return h + " h " + m + " min";
    if (m) return m + " min";
    return seconds + " s";
  }
  function refreshTimes() {
    if (document.hidden) return;
    var now = Date.now();
    document.querySelectorAll("time[data-rel]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("datetime"));
      if (isNaN(t)) return;
      var s = Math.floor((now - t) / 1000);
      el.textContent = el.dataset.rel === "since" ? lasted(s) : ago(s);
    });
  }
  setInterval(refreshTimes, 15000);

  // Copy report: clipboard API where allowed, a selection copy otherwise.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.dataset.copy);
    var status = button.parentElement.querySelector(".copied");
    if (!source) return;
    var text = source.textContent;
    function done(ok) {
      if (status) status.textContent = ok ? "Copied to the clipboard." : "Select the text and copy it (Ctrl+C).";
      button.dataset.copied = ok ? "yes" : "no";
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { fallback(); });
    } else {
      fallback();
    }
    function fallback() {
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      done(ok);
    }
  });

  // "/" focuses the top bar's search, as it advertises (not while typing in a field); an exact
  // POIID or serial there opens the terminal.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    var tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || event.target.isContentEditable) return;
    var box = document.getElementById("quick-q");
    if (box) { event.preventDefault(); box.focus(); box.select(); }
  });

  // Check connection: the keyboard focus stays on the button (htmx disables it while checking,
  // which drops the focus), and the verdict with its cause and fix is brought into view.
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail && event.detail.target;
    if (!target || target.id !== "check-result") return;
    var button = document.getElementById("check-btn");
    var verdict = target.querySelector(".verdict");
    function settle() {
      if (button) button.focus({ preventScroll: true });
      if (!verdict) return;
      var last = verdict.querySelector(".diagnosis") || verdict.querySelector(".meta") || verdict;
      var box = last.getBoundingClientRect();
      if (box.bottom > window.innerHeight || verdict.getBoundingClientRect().top < 0) {
        verdict.scrollIntoView({ block: "start" });
      }
    }
    // The button is enabled again once the request is done; focus it after that.
    setTimeout(settle, 0);
  });

  // Live pollers: say so when the server cannot be reached, and when the tab is paused.
  function liveElements() { return document.querySelectorAll(".live"); }
  document.addEventListener("htmx:sendError", function (event) {
    if (!event.target.classList || !event.target.classList.contains("live")) return;
    event.target.classList.add("offline");
    var banner = document.getElementById("banner");
    if (banner && !banner.dataset.offline) {
      banner.dataset.offline = "yes";
      banner.innerHTML = '<div class="banner error" role="alert"><strong>TermPulse cannot be reached.</strong> ' +
        "What is on screen may be out of date; it updates again as soon as the server answers.</div>";
    }
  });
  document.addEventListener("visibilitychange", function () {
    liveElements().forEach(function (el) { el.classList.toggle("paused", document.hidden); });
    if (!document.hidden) refreshTimes();
  });
  // Flash rows that a live update replaced, so a change catches the eye on a wall screen.
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var el = event.detail && event.detail.target;
    if (el && el.tagName === "TR") {
      el.classList.add("changed");
      setTimeout(function () { el.classList.remove("changed"); }, 4000);
    }
  });

  // Live updates pushed by the server (Server-Sent Events: the #sse element, the htmx SSE
  // extension swaps each update out of band). While its stream is heard from (an update or its
  // 15 s ping within 40 s) the pollers skip their timed turns; when it breaks (a proxy that
  // buffers, the server away) they poll as before. Opening it, a resync (the server missed
  // changes while reconnecting to the database) and a tab shown again poll once.
  var heardAt = 0;
  function pushed() { return Date.now() - heardAt < 40000; }
  function catchUp() {
    document.querySelectorAll(".live[hx-get], #tstatus[hx-get]").forEach(function (el) {
      var done = htmx.ajax("GET", el.getAttribute("hx-get"), { source: el, target: el, swap: "outerHTML", event: new CustomEvent("live-catchup") });
      if (done && done.catch) done.catch(function () {}); // a failed poll says so itself (htmx:sendError)
    });
  }
  document.addEventListener("htmx:confirm", function (event) {
    var d = event.detail, elt = d && d.elt;
    if (!elt || !pushed() || !(elt.id === "tstatus" || (elt.classList && elt.classList.contains("live")))) return;
    if (!d.triggeringEvent) event.preventDefault(); // a timed poll ("every Ns") has no event
  });
  document.addEventListener("htmx:sseOpen", function () { heardAt = Date.now(); catchUp(); });
  document.addEventListener("htmx:sseMessage", function (event) {
    heardAt = Date.now();
    if (event.detail && event.detail.type === "resync") catchUp();
    if (event.detail && event.detail.type === "order") sortStores(event.detail.data);
    // "Live · updated": when the server was last heard (pushes do not replace the poller).
    var now = new Date();
    document.querySelectorAll(".live").forEach(function (el) {
      el.classList.remove("offline");
      var time = el.querySelector("time");
      if (time) { time.setAttribute("datetime", now.toISOString()); time.textContent = now.toISOString().slice(11, 19) + " UTC"; }
    });
  });
  document.addEventListener("htmx:sseError", function () { heardAt = 0; });
  // The overview's worst-first order moved: its rows in the order pushed ("12,7,3"), the rows
  // no longer on the page removed (the rows that came onto it were appended just before). A row
  // appended as new that the page showed already (the server's idea of the page was read a
  // moment after the page was) is there twice: the appended one, the newer, stays.
  function sortStores(ids) {
    var body = document.getElementById("stores-body");
    if (!body) return;
    var rows = {};
    Array.prototype.slice.call(body.children).forEach(function (tr) {
      if (rows[tr.id]) rows[tr.id].remove();
      rows[tr.id] = tr;
    });
    ids.split(",").forEach(function (id) {
      var tr = rows["s-" + id];
      if (tr) { body.appendChild(tr); delete rows["s-" + id]; }
    });
    Object.keys(rows).forEach(function (key) { rows[key].remove(); });
  }

  // What the templates would otherwise say inline: the Content-Security-Policy runs no inline
  // script, no on* attribute and no hx-on (htmx.config.allowEval is off, base.html).

  // Pollers (hx-trigger "every Ns") skip their turn while the tab is hidden; "visible-again"
  // brings the live lists up to date as soon as it is shown.
  document.addEventListener("htmx:confirm", function (event) {
    var elt = event.detail && event.detail.elt;
    if (document.hidden && elt && elt.matches && elt.matches('[hx-trigger^="every"]')) event.preventDefault();
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) document.dispatchEvent(new Event("visible-again"));
  });

  // A form marked data-swap-invalid shows a 422 answer: it is the form with its errors. (The
  // event is the target's; the form that asked is the request's element.)
  document.addEventListener("htmx:beforeSwap", function (event) {
    var asked = event.detail.requestConfig && event.detail.requestConfig.elt;
    if (event.detail.xhr.status === 422 && asked && asked.closest && asked.closest("[data-swap-invalid]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // Download links (data-export-form) take the form as it is now, Show pressed or not; the
  // dates only count for a custom period.
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-export-form]");
    if (!link) return;
    var form = document.getElementById(link.dataset.exportForm);
    if (!form) return;
    var query = new URLSearchParams(new FormData(form));
    if (query.get("period") !== "custom") { query.delete("from"); query.delete("to"); }
    if (link.dataset.table) query.set("table", link.dataset.table);
    link.href = link.pathname + "?" + query;
  });

  // Forms that destroy something ask first (data-confirm: the question).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  // The "database cannot be reached" page tries again by itself (data-reload-after: seconds).
  function scheduleReload() {
    var el = document.querySelector("[data-reload-after]");
    if (!el) return;
    setTimeout(function () {
      if (!document.hidden) location.reload(); else scheduleReload();
    }, 1000 * Number(el.dataset.reloadAfter));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", scheduleReload);
  else scheduleReload();
})();
