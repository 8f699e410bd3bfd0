/* Saved views in the sidebar with live counts: lists the caller's views, follows the
   counts stream (snapshot, then only the counts that changed), and saves the list as it
   is filtered now as a new private view. Clicking a view opens the list with its filter. */
(function () {
  "use strict";
  const Dash = window.Dash;
  const VIEWS_URL = "/api/v2/ticketing/views";
  const COUNTS_URL = "/api/v2/ticketing/views/counts/stream";
  const list = document.getElementById("view-list");
  const empty = document.getElementById("views-empty");
  const form = document.getElementById("save-view");
  const status = document.getElementById("save-view-status");
  let stream = null;

  function countText(count, exact) {
    return exact === false ? count.toLocaleString() + "+" : count.toLocaleString();
  }

  function render(views) {
    const current = new URLSearchParams(location.search).get("savedView");
    list.replaceChildren();
    for (const view of views) {
      const link = Dash.el("a", { href: "?savedView=" + encodeURIComponent(view.id), "data-view-id": view.id }, [
        Dash.el("span", { className: "view-name", text: view.name }),
        Dash.el("span", { className: "view-count", "data-count": "", text: view.count === undefined ? "…" : countText(view.count, view.exact) }),
        Dash.el("span", { className: "visually-hidden", text: " tickets" }),
      ]);
      if (view.id === current) link.setAttribute("aria-current", "page");
      list.appendChild(Dash.el("li", {}, [link]));
    }
    empty.hidden = views.length > 0;
  }

  function setCount(view) {
    const link = list.querySelector('a[data-view-id="' + view.id + '"]');
    if (!link) return;
    const badge = link.querySelector(".view-count");
    badge.textContent = countText(view.count, view.exact);
    badge.setAttribute("data-count", String(view.count));
  }

  function onEvent(event, data) {
    if (event === "snapshot") {
      render(data.views);
      data.views.forEach(setCount);
    } else if (event === "counts") {
      for (const view of data.views) {
        setCount(view);
        const link = list.querySelector('a[data-view-id="' + view.id + '"]');
        if (link) Dash.flash(link);
      }
    }
  }

  /* The stream reads the caller's views when it opens: reopen it after saving one.
     A browser keeps at most 6 connections per host over HTTP/1.1 and this page already
     holds two streams (the list and the bell), so the counts stream is opened only when
     the caller has views, and only while the tab is visible (counts have no history to
     resume: a reopened stream starts with a fresh snapshot). */
  let hasViews = false;
  function follow() {
    if (stream) stream.stop();
    stream = null;
    if (!hasViews || document.hidden) return;
    stream = new Dash.FetchEventStream({ url: COUNTS_URL, method: "GET", onEvent: onEvent }).start();
  }

  async function load() {
    try {
      const views = (await Dash.api("GET", VIEWS_URL)).data;
      hasViews = views.length > 0;
      render(views);
    } catch (error) {
      empty.hidden = false;
      empty.textContent = "Views unavailable: " + error.message;
      return;
    }
    follow();
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      if (stream) stream.stop();
      stream = null;
    } else if (!stream) {
      follow();
    }
  });

  /* A saved view has a filter, a sort and a list type, but no search (the views API has
     no field for it): saving a searched list silently dropped the search, so Save view is
     off while a search is active, and says why. */
  const search = document.getElementById("f-search");
  const saveButton = document.getElementById("save-view-button");
  const searchNote = document.getElementById("save-view-search");
  function searching() {
    return Boolean(search && search.value.trim());
  }
  function showSearchState() {
    saveButton.disabled = searching();
    searchNote.hidden = !searching();
  }
  if (search) search.addEventListener("input", showSearchState);
  showSearchState();

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const name = form.elements.name.value.trim();
    if (!name || !window.DashList || searching()) return;
    const current = window.DashList.body();
    const body = {
      name: name,
      filter: current.filter,
      sortOrder: [{ column: current.sort, order: current.searchOrder }],
      type: document.getElementById("f-view").value,
    };
    try {
      await Dash.api("POST", VIEWS_URL, body);
      form.reset();
      status.textContent = "Saved “" + name + "”.";
      load();
    } catch (error) {
      status.textContent = "Not saved: " + error.message;
    }
  });

  load();
})();
