// Keyboard and ARIA behaviour of the search box (WAI-ARIA combobox with a listbox popup).
// HTMX fetches the listbox; this script only moves the active option, chooses and closes (and
// submits the form when another collection is chosen). It also reports settled queries (not
// keystrokes) and choices to /api/events, with a random id per page view and nothing personal.
(function () {
  "use strict";

  function normalise(text) {
    return text.replace(/\s+/g, " ").trim();
  }

  function randomId() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  // Settled queries: the text left after a pause of data-settle-ms, a submit, a choice or leaving
  // the page; each is sent once, so an event never stands for a keystroke.
  function eventRecorder(input, form) {
    var url = form && form.getAttribute("data-events-url");
    if (!url) return { listShown: function () {}, typed: function () {}, chose: function () {} };
    var settleMs = parseInt(form.getAttribute("data-settle-ms"), 10) || 1500;
    var pageView = randomId();
    var corpus = form.querySelector('[name="corpus"]');
    var shown = { query: null, ids: [], encoder: "" };
    var lastSent = null;
    var timer = null;

    function send(body) {
      body.corpus = corpus ? corpus.value : "";
      body.page_view = pageView;
      if (shown.encoder) body.encoder = shown.encoder;
      var data = JSON.stringify(body);
      // sendBeacon outlives the page, so the text left when the visitor goes is not lost.
      if (navigator.sendBeacon && navigator.sendBeacon(url, new Blob([data], { type: "application/json" }))) return;
      fetch(url, { method: "POST", body: data, keepalive: true, headers: { "Content-Type": "application/json" } });
    }

    function settle(trigger) {
      window.clearTimeout(timer);
      timer = null;
      var query = normalise(input.value);
      if (!query || query === lastSent) return;
      lastSent = query;
      var ids = shown.query !== null && normalise(shown.query) === query ? shown.ids : [];
      send({ query: query, shown_ids: ids, trigger: trigger });
    }

    function typed() {
      window.clearTimeout(timer);
      timer = normalise(input.value) ? window.setTimeout(function () { settle("pause"); }, settleMs) : null;
    }

    if (form) form.addEventListener("submit", function () { settle("submit"); });
    window.addEventListener("pagehide", function () { settle("leave"); });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden") settle("leave");
    });

    return {
      // The list now shown, and what it was for; the pause is counted from when it appears.
      listShown: function (list, options) {
        shown.query = list ? list.getAttribute("data-query") : null;
        shown.encoder = list ? list.getAttribute("data-encoder") || "" : "";
        shown.ids = options.map(function (option) { return parseInt(option.getAttribute("data-id"), 10); });
        if (timer !== null) typed();
      },
      typed: typed,
      chose: function (option, options) {
        window.clearTimeout(timer);
        timer = null;
        var query = normalise(shown.query || "");
        var id = parseInt(option.getAttribute("data-id"), 10);
        send({ query: query, shown_ids: shown.ids, chosen_id: id, chosen_position: options.indexOf(option) + 1, trigger: "choice" });
        // The chosen question now fills the box: it is an answer, not a query to record.
        lastSent = normalise(input.value);
      },
    };
  }

  function init() {
    var input = document.getElementById("q");
    var popup = document.getElementById("suggestions");
    if (!input || !popup) return;
    var status = document.getElementById("suggestion-status");
    var answer = document.getElementById("answer");
    var active = -1;
    var recorder = eventRecorder(input, document.getElementById("search-form"));

    function options() {
      return Array.prototype.slice.call(popup.querySelectorAll('[role="option"]'));
    }

    function setExpanded(open) {
      input.setAttribute("aria-expanded", open ? "true" : "false");
      popup.hidden = !open;
    }

    function setActive(index) {
      var list = options();
      list.forEach(function (option, i) {
        option.setAttribute("aria-selected", i === index ? "true" : "false");
        option.classList.toggle("active", i === index);
      });
      active = index;
      if (index >= 0 && list[index]) {
        input.setAttribute("aria-activedescendant", list[index].id);
        list[index].scrollIntoView({ block: "nearest" });
      } else {
        input.removeAttribute("aria-activedescendant");
      }
    }

    function close() {
      setActive(-1);
      setExpanded(false);
    }

    function choose(option) {
      var question = option.querySelector(".question").textContent;
      var source = option.querySelector("template.answer-source");
      var url = option.querySelector(".answer-url");
      var list = options();
      input.value = question;
      recorder.chose(option, list);
      close();
      if (!answer) return;
      document.getElementById("answer-question").textContent = question;
      var text = document.getElementById("answer-text");
      text.replaceChildren(source.content.cloneNode(true));
      var link = document.getElementById("answer-link");
      // The server sends only http(s) addresses; checked here too, so no other scheme becomes a link.
      var href = url && /^https?:\/\//i.test(url.textContent) ? url.textContent : "";
      link.hidden = !href;
      if (href) link.querySelector("a").setAttribute("href", href);
      answer.hidden = false;
      if (status) status.textContent = "Answer shown below: " + question;
    }

    // A box embedded with data-tags="a,b" asks only for suggestions with one of those tags, unless
    // the form already names tags (the search page's topic select).
    document.body.addEventListener("htmx:configRequest", function (event) {
      if (event.detail.elt !== input || !input.dataset.tags) return;
      if (!event.detail.parameters.tags) event.detail.parameters.tags = input.dataset.tags;
    });

    // A response for an older query must never replace the list for a newer one.
    document.body.addEventListener("htmx:beforeSwap", function (event) {
      if (event.detail.target !== popup) return;
      // Over the rate limit the server answers 429 with a message for the list: show it.
      if (event.detail.xhr && event.detail.xhr.status === 429) {
        event.detail.shouldSwap = true;
        event.detail.isError = false;
        return;
      }
      var match = /data-query="([^"]*)"/.exec(event.detail.serverResponse || "");
      if (match) {
        var holder = document.createElement("textarea");
        holder.innerHTML = match[1];
        if (holder.value !== input.value) event.detail.shouldSwap = false;
      }
    });

    document.body.addEventListener("htmx:afterSwap", function (event) {
      if (event.detail.target !== popup) return;
      var count = options().length;
      var list = popup.querySelector('[role="listbox"]');
      var popular = list !== null && list.hasAttribute("data-zero-state");
      setActive(-1);
      setExpanded(count > 0 || popup.textContent.trim() !== "");
      recorder.listShown(list, options());
      if (status) {
        status.textContent = count === 0 ? "" :
          count + (popular ? " popular question" : " suggestion") + (count === 1 ? "" : "s") + " available.";
      }
    });

    input.addEventListener("keydown", function (event) {
      var list = options();
      var open = input.getAttribute("aria-expanded") === "true";
      if (event.key === "ArrowDown") {
        if (!list.length) return;
        event.preventDefault();
        setExpanded(true);
        setActive(open ? (active + 1) % list.length : 0);
      } else if (event.key === "ArrowUp") {
        if (!list.length) return;
        event.preventDefault();
        setExpanded(true);
        setActive(active <= 0 ? list.length - 1 : active - 1);
      } else if (event.key === "Enter") {
        if (open && active >= 0 && list[active]) {
          event.preventDefault();
          choose(list[active]);
        }
      } else if (event.key === "Escape") {
        if (open) {
          event.preventDefault();
          close();
        } else {
          input.value = "";
        }
      }
    });

    popup.addEventListener("mousedown", function (event) {
      // mousedown rather than click: the input keeps focus, as a native listbox would.
      var option = event.target.closest('[role="option"]');
      if (option) {
        event.preventDefault();
        choose(option);
      }
    });

    // Focusing or clearing the box asks for the popular questions (the "zero-state" trigger of
    // hx-trigger): htmx's "changed" sees no change in a box that was empty when the page loaded.
    function askPopular() {
      if (input.value === "") input.dispatchEvent(new Event("zero-state"));
    }

    input.addEventListener("input", function () {
      recorder.typed();
      askPopular();
      // The popular questions answer no typed text: they go at the first keystroke, not when the
      // suggestions for it arrive.
      if (input.value !== "" && popup.querySelector("[data-zero-state]")) {
        popup.replaceChildren();
        close();
      }
    });

    var closing = null;
    input.addEventListener("focus", function () {
      // Back before the blur's close: the list opened now must stay open.
      window.clearTimeout(closing);
      askPopular();
    });

    input.addEventListener("blur", function () {
      closing = window.setTimeout(close, 150);
    });

    setExpanded(false);
    // A box focused as the page loads (autofocus) had its focus event before this listened.
    if (document.activeElement === input) window.setTimeout(askPopular, 0);
  }

  // Choosing another collection reloads the page for it (here rather than in an inline onchange,
  // which the Content-Security-Policy refuses).
  function submitOnChange() {
    document.querySelectorAll("select[data-submit-on-change]").forEach(function (select) {
      select.addEventListener("change", function () {
        select.form.submit();
      });
    });
  }

  function start() {
    submitOnChange();
    init();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
