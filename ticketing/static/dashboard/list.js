/* The live ticket list: builds the list body from the filter bar, opens the list-updates
   stream and applies snapshot / created / updated / deleted to the rows in place. */
(function () {
  "use strict";
  const Dash = window.Dash;
  const config = Dash.config();
  const STATUS_RANK = { open: 0, in_progress: 1, on_hold: 2, resolved: 3, closed: 4, cancelled: 5 };
  const PRIORITY_RANK = { low: 0, medium: 1, high: 2, urgent: 3 };
  const ACTIVE_STATUSES = ["open", "in_progress", "on_hold"];
  const FILTER_FIELDS = ["view", "status", "priority", "team", "assignee", "search", "top"];

  const form = document.getElementById("filters");
  const tbody = document.getElementById("rows");
  const empty = document.getElementById("empty");
  const summary = document.getElementById("summary");
  const prev = document.getElementById("prev");
  const next = document.getElementById("next");
  const activity = document.getElementById("activity");

  const state = {
    sort: "updatedAt",
    order: "DESC",
    offset: 0,
    rows: [],
    total: 0,
    stream: null,
    savedViewId: null,
    savedView: null, // a saved view opened from the sidebar: its filter is the list's
  };

  function field(name) {
    return form.elements[name];
  }

  function readUrl() {
    const params = new URLSearchParams(location.search);
    field("view").value = config.defaultView;
    for (const name of FILTER_FIELDS) {
      if (!params.has(name)) continue;
      const input = field(name);
      const value = params.get(name);
      // A shared link may name what this user is not offered (a view an end user does not
      // have, a team or agent of someone else's): such a value keeps the field's default,
      // rather than a select with nothing chosen and a list the server refuses.
      if (input.options && ![...input.options].some(function (o) { return o.value === value; })) continue;
      // A shared link's search is cut to the input's maxlength (the API takes no more).
      input.value = name === "search" ? value.slice(0, input.maxLength) : value;
    }
    if (params.has("sort")) state.sort = params.get("sort");
    if (params.has("order")) state.order = params.get("order") === "ASC" ? "ASC" : "DESC";
    state.offset = Math.max(0, Number(params.get("offset")) || 0);
    state.savedViewId = params.get("savedView");
  }

  function writeUrl() {
    const params = new URLSearchParams();
    for (const name of FILTER_FIELDS) {
      if (field(name).value) params.set(name, field(name).value);
    }
    params.set("sort", state.sort);
    params.set("order", state.order);
    if (state.offset) params.set("offset", state.offset);
    if (state.savedView) params.set("savedView", state.savedView.id);
    history.replaceState(null, "", "?" + params.toString());
  }

  function condition(id, column, op, operand) {
    return { id: id, column: column, op: op, operand: operand };
  }

  function body() {
    const operand = [];
    const status = field("status").value;
    if (status === "active") operand.push(condition("status", "status", "IN", ACTIVE_STATUSES));
    else if (status) operand.push(condition("status", "status", "EQ", status));
    if (field("priority").value) operand.push(condition("priority", "priority", "EQ", field("priority").value));
    if (field("team").value) operand.push(condition("team", "team", "EQ", field("team").value));
    const assignee = field("assignee").value;
    if (assignee === "none") operand.push(condition("assignee", "assignee", "EQ", null));
    else if (assignee) operand.push(condition("assignee", "assignee", "EQ", assignee));
    let filter = { op: "AND", operand: operand };
    // A saved view's filter, narrowed by whatever the filter bar adds.
    if (state.savedView) {
      const saved = state.savedView.filter && Object.keys(state.savedView.filter).length ? state.savedView.filter : null;
      if (saved) filter = operand.length ? { op: "AND", operand: [saved].concat(operand) } : saved;
    }
    const result = {
      top: Number(field("top").value) || 25,
      offset: state.offset,
      sort: state.sort,
      searchOrder: state.order,
      filter: filter,
    };
    const search = field("search").value.trim();
    if (search) result.search = search;
    return result;
  }

  function sortKey(ticket, column) {
    if (column === "status") return STATUS_RANK[ticket.status];
    if (column === "priority") return PRIORITY_RANK[ticket.priority];
    return ticket[column] || "";
  }

  function compare(a, b) {
    const x = sortKey(a, state.sort);
    const y = sortKey(b, state.sort);
    let result = x < y ? -1 : x > y ? 1 : 0;
    if (state.order === "DESC") result = -result;
    if (result === 0) result = a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    return result;
  }

  function pill(kind, value) {
    return Dash.el("span", { className: "pill " + kind + "-" + value, text: Dash.label(value) });
  }

  function renderRow(ticket) {
    const link = "/dashboard/tickets/" + ticket.id + "/";
    return Dash.el("tr", { "data-id": ticket.id, "data-number": ticket.ticketNumber, "data-status": ticket.status }, [
      Dash.el("td", { "data-label": "Number" }, [Dash.el("a", { href: link, text: ticket.ticketNumber })]),
      Dash.el("td", { "data-label": "Subject", className: "subject" }, [ticket.subject]),
      Dash.el("td", { "data-label": "Status" }, [pill("status", ticket.status)]),
      Dash.el("td", { "data-label": "Priority" }, [pill("priority", ticket.priority)]),
      Dash.el("td", { "data-label": "Team", text: ticket.team || "–" }),
      Dash.el("td", { "data-label": "SLA" }, [window.DashSla ? DashSla.badge(ticket) : "–"]),
      Dash.el("td", { "data-label": "Assignee", text: ticket.assignee ? ticket.assignee.name : "Unassigned" }),
      Dash.el("td", { "data-label": "Requester", text: ticket.requester ? ticket.requester.name : "–" }),
      Dash.el("td", { "data-label": "Updated" }, [
        Dash.el("time", { datetime: ticket.updatedAt, title: ticket.updatedAt, text: Dash.relativeTime(ticket.updatedAt) }),
      ]),
    ]);
  }

  function render(changedId) {
    const fragment = document.createDocumentFragment();
    let changedRow = null;
    for (const ticket of state.rows) {
      const row = renderRow(ticket);
      if (ticket.id === changedId) changedRow = row;
      fragment.appendChild(row);
    }
    tbody.replaceChildren(fragment);
    if (changedRow) Dash.flash(changedRow);
    empty.hidden = state.rows.length > 0;
    const top = body().top;
    const first = state.total ? state.offset + 1 : 0;
    const last = state.offset + state.rows.length;
    summary.textContent = first + "–" + last + " of " + state.total;
    prev.disabled = state.offset === 0;
    next.disabled = state.offset + top >= state.total;
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.setAttribute(
        "aria-sort",
        th.dataset.sort === state.sort ? (state.order === "ASC" ? "ascending" : "descending") : "none"
      );
    }
  }

  function log(kind, ticket, extra) {
    const time = new Date().toLocaleTimeString();
    const text = (ticket.ticketNumber || ticket.id) + " " + kind + (extra ? " — " + extra : "");
    activity.prepend(Dash.el("li", { "data-kind": kind, "data-id": ticket.id }, [Dash.el("time", { text: time }), " " + text]));
    while (activity.children.length > 20) activity.lastChild.remove();
  }

  function describeChanges(changes) {
    return Object.entries(changes || {})
      .filter(function (entry) { return entry[0] !== "updatedAt"; })
      .map(function (entry) {
        const from = entry[1].from, to = entry[1].to;
        const text = function (v) { return v && typeof v === "object" ? v.name : Dash.label(v); };
        return entry[0] + ": " + text(from) + " → " + text(to);
      })
      .join(", ");
  }

  /* Put a ticket where the current order says, if that place is on this page. A ticket
     that sorts after every row is on this page only when no other ticket comes after
     them: a page left short by a row that went away is not the list's end, and the
     ticket's place may be on a later page (the total, which counts this ticket, says). */
  function place(ticket) {
    const top = body().top;
    const rows = state.rows.filter(function (t) { return t.id !== ticket.id; });
    let index = rows.findIndex(function (t) { return compare(ticket, t) < 0; });
    if (index < 0) index = rows.length;
    const moreAfter = state.total - 1 > state.offset + rows.length;
    const beforePage = index === 0 && state.offset > 0 && rows.length > 0;
    const afterPage = index >= top || (index === rows.length && (rows.length >= top || moreAfter));
    if (beforePage || afterPage) {
      state.rows = rows;
      return false;
    }
    rows.splice(index, 0, ticket);
    state.rows = rows.slice(0, top);
    return true;
  }

  function onEvent(event, data) {
    if (event === "snapshot") {
      state.rows = data.tickets;
      state.total = data.total;
      render(null);
      if (data.reset) log("reloaded", { id: "", ticketNumber: "List" }, "could not resume, took a fresh snapshot");
      return;
    }
    const replayed = data && data.replayed ? " (replayed)" : "";
    if (event === "created") {
      const known = state.rows.some(function (t) { return t.id === data.id; });
      if (!known && !data.replayed) state.total += 1;
      const shown = place(data);
      render(shown ? data.id : null);
      log(data.reason === "scope" ? "entered" : "created", data, (data.subject || "") + replayed);
    } else if (event === "updated") {
      const shown = place(data);
      render(shown ? data.id : null);
      log("updated", data, describeChanges(data.changes) + replayed);
    } else if (event === "deleted") {
      const before = state.rows.length;
      state.rows = state.rows.filter(function (t) { return t.id !== data.id; });
      if (!data.replayed) state.total = Math.max(0, state.total - 1);
      if (before !== state.rows.length || !data.replayed) render(null);
      log(data.reason === "scope" ? "left the list" : "deleted", data, replayed.trim());
    } else if (event === "error") {
      log("stream error", { id: "", ticketNumber: "Stream" }, data && data.message);
    }
  }

  /* Changes in quick succession (a few clicks in the filter bar) open one stream, not one
     per click: each stream being opened costs the server a subscription and a snapshot. */
  let restartTimer = null;
  function restart() {
    clearTimeout(restartTimer);
    if (state.stream) state.stream.stop();
    state.stream = null;
    Dash.showConnection("connecting");
    restartTimer = setTimeout(openStream, 150);
  }

  /* A list request the server refuses (400: a sort from a link it does not know, a search
     it does not take) is not retried: say why, rather than leave a dead list. */
  const listError = document.getElementById("list-error");
  function onState(name, detail, message) {
    Dash.showConnection(name, detail);
    if (name === "failed") {
      listError.textContent = "The list could not be loaded: " + (message || detail);
      listError.hidden = false;
    } else if (name === "live") {
      listError.hidden = true;
    }
  }

  function openStream() {
    writeUrl();
    state.stream = new Dash.FetchEventStream({
      url: Dash.listStreamUrl(field("view").value),
      body: body(),
      onEvent: onEvent,
      onState: onState,
      pauseWhenHidden: true,
    }).start();
  }

  let searchTimer = null;
  form.addEventListener("change", function (event) {
    if (event.target.name === "search") return;
    state.offset = 0;
    restart();
  });
  form.addEventListener("input", function (event) {
    if (event.target.name !== "search") return;
    clearTimeout(searchTimer);
    searchTimer = setTimeout(function () { state.offset = 0; restart(); }, 300);
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearTimeout(searchTimer);
    state.offset = 0;
    restart();
  });
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.querySelector("button").addEventListener("click", function () {
      if (state.sort === th.dataset.sort) state.order = state.order === "ASC" ? "DESC" : "ASC";
      else {
        state.sort = th.dataset.sort;
        state.order = th.dataset.sort === "updatedAt" ? "DESC" : "ASC";
      }
      state.offset = 0;
      restart();
    });
  }
  prev.addEventListener("click", function () {
    state.offset = Math.max(0, state.offset - body().top);
    restart();
  });
  next.addEventListener("click", function () {
    state.offset += body().top;
    restart();
  });
  // Relative times age while the page stays open.
  setInterval(function () {
    for (const time of tbody.querySelectorAll("time[datetime]")) time.textContent = Dash.relativeTime(time.getAttribute("datetime"));
  }, 30000);

  /* Open a saved view (`?savedView=<id>`): its filter, its sort and its list type. */
  async function loadSavedView() {
    if (!state.savedViewId) return;
    try {
      const view = (await Dash.api("GET", "/api/v2/ticketing/views/" + encodeURIComponent(state.savedViewId))).data;
      state.savedView = view;
      const params = new URLSearchParams(location.search);
      if (view.sortOrder.length && !params.has("sort")) {
        state.sort = view.sortOrder[0].column;
        state.order = view.sortOrder[0].order;
      }
      if ([...field("view").options].some(function (o) { return o.value === view.type; })) field("view").value = view.type;
      document.getElementById("view-banner-name").textContent = view.name;
      document.getElementById("view-banner").hidden = false;
    } catch (error) {
      log("view not found", { id: "", ticketNumber: "View" }, error.message);
    }
  }

  readUrl();
  state.body = body;
  window.DashList = state;
  loadSavedView().then(restart);
})();
