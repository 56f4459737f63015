// Keyboard and ARIA behaviour of the search box (WAI-ARIA combobox with a listbox popup).
// HTMX fetches the listbox; this script only moves the active option, chooses and closes (and
// submits the form when another collection is chosen).
(function () {
  "use strict";

  function init() {
    var input = document.getElementById("q");
    var popup = document.getElementById("suggestions");
    if (!input || !popup) return;
    var status = document.getElementById("suggestion-status");
    var answer = document.getElementById("answer");
    var active = -1;

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
      input.value = question;
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
      setActive(-1);
      setExpanded(count > 0 || popup.textContent.trim() !== "");
      if (status) {
        status.textContent = count === 0 ? "" :
          count + (count === 1 ? " suggestion" : " suggestions") + " available.";
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

    input.addEventListener("blur", function () {
      window.setTimeout(close, 150);
    });

    setExpanded(false);
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
