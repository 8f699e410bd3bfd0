/* The notification bell: unread badge, a dropdown of recent notifications, mark one / all
   read, live updates from the notification stream (session cookie; Dash.FetchEventStream,
   which resumes with Last-Event-ID after any drop or refusal),
   and a BroadcastChannel so every open tab shows the same state at once. */
(function () {
  "use strict";
  const Dash = window.Dash;
  const BASE = "/api/v2/ticketing/ticket/";
  const ICONS = {
    assignment: ["➜", "Assignment"],
    statusChange: ["⟳", "Status change"],
    comment: ["✎", "Comment"],
    mention: ["@", "Mention"],
    slaWarning: ["!", "SLA warning"],
    slaBreach: ["!!", "SLA breach"],
    approval: ["✓", "Approval"],
    escalation: ["↑", "Escalation"],
    queued: ["⇥", "In your team's queue"],
    reassignment: ["⇄", "Reassigned"],
    resolution: ["✔", "Resolved"],
    reopened: ["↺", "Reopened"],
    merge: ["⇉", "Merged"],
    watchAdded: ["◉", "Now watching"],
    approvalDecision: ["☑", "Approval decided"],
  };

  const root = document.getElementById("bell");
  if (!root) return;
  const button = document.getElementById("bell-button");
  const badge = document.getElementById("bell-badge");
  const panel = document.getElementById("bell-panel");
  const list = document.getElementById("bell-list");
  const emptyNote = document.getElementById("bell-empty");
  const markAll = document.getElementById("bell-mark-all");
  const channel = "BroadcastChannel" in window ? new BroadcastChannel("dashboard-notifications") : null;
  let items = [];

  function setUnread(unread) {
    const count = Math.max(0, Number(unread) || 0);
    badge.dataset.count = String(count);
    badge.textContent = count > 99 ? "99+" : String(count);
    badge.hidden = count === 0;
    button.setAttribute("aria-label", count ? "Notifications, " + count + " unread" : "Notifications");
  }

  function ticketLink(item) {
    if (item.ticketId) return "/dashboard/tickets/" + encodeURIComponent(item.ticketId) + "/";
    return item.actionUrl || "#";
  }

  function renderItem(item) {
    const icon = ICONS[item.type] || ["•", item.type || "Notification"];
    const markButton = item.read
      ? null
      : Dash.el("button", { type: "button", className: "link-button mark-one", text: "Mark read", "aria-label": "Mark read: " + (item.title || item.message) });
    if (markButton) markButton.addEventListener("click", function () { markRead({ ids: [item.id] }); });
    return Dash.el("li", { className: item.read ? "read" : "unread", "data-id": item.id, "data-type": item.type }, [
      Dash.el("span", { className: "type-icon type-" + item.type, "aria-hidden": "true", text: icon[0] }),
      Dash.el("div", { className: "bell-body" }, [
        Dash.el("span", { className: "visually-hidden", text: icon[1] + ": " }),
        Dash.el("a", { href: ticketLink(item), className: "bell-message", text: item.message || item.title || "" }),
        Dash.el("div", { className: "bell-meta" }, [
          (item.actor ? item.actor.name + " · " : "") + (item.ticketNumber ? item.ticketNumber + " · " : ""),
          Dash.el("time", { datetime: item.createdAt, title: item.createdAt, text: Dash.relativeTime(item.createdAt) }),
        ]),
      ]),
      markButton,
    ]);
  }

  function render() {
    list.replaceChildren.apply(list, items.slice(0, 10).map(renderItem));
    emptyNote.hidden = items.length > 0;
  }

  async function refreshCount() {
    try {
      const body = await Dash.api("GET", BASE + "notification/count");
      setUnread(body.data.unread);
      root.dataset.available = "true";
    } catch (error) {
      root.dataset.available = "false";
    }
  }

  // Reloads may overlap, and frames arrive while one is in flight: only the latest
  // reload's answer is shown, and a notification that arrives meanwhile starts another
  // (the answer on its way may predate it), so an older list never replaces a newer one.
  let listRequests = 0;
  let listAnswered = 0;

  async function refreshList() {
    const request = ++listRequests;
    try {
      const body = await Dash.api("GET", BASE + "notification/list?top=10");
      if (request !== listRequests) return;
      listAnswered = request;
      items = body.data.notifications || [];
      render();
    } catch (error) {
      /* the count call reports availability */
      if (request === listRequests) listAnswered = request;
    }
  }

  async function markRead(selection) {
    try {
      await Dash.api("PUT", BASE + "notification/read", selection);
    } catch (error) {
      return;
    }
    for (const item of items) {
      if (selection.all || selection.ids.indexOf(item.id) >= 0) item.read = true;
    }
    render();
    await refreshCount();
    if (channel) channel.postMessage({ type: "changed" });
  }

  function openPanel(open) {
    panel.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (open) {
      refreshList();
      markAll.focus();
    }
  }

  button.addEventListener("click", function () { openPanel(panel.hidden); });
  markAll.addEventListener("click", function () { markRead({ all: true }); });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !panel.hidden) {
      openPanel(false);
      button.focus();
    }
  });
  document.addEventListener("click", function (event) {
    if (!panel.hidden && !root.contains(event.target)) openPanel(false);
  });
  /* One stream's frames, in the tab that holds it or relayed to another tab. */
  let connections = 0;
  function onFrame(event, data) {
    if (event === "connected") {
      connections += 1;
    } else if (event === "notification") {
      items = [data].concat(items.filter(function (x) { return x.id !== data.id; }));
      render();
      if (listAnswered !== listRequests) refreshList();
      if (!data.read) setUnread(Number(badge.dataset.count) + 1);
      const first = list.querySelector("li");
      if (first) Dash.flash(first);
    } else if (event === "count") {
      setUnread(data.unread);
      // Read elsewhere, or a queued notice withdrawn because someone took the ticket.
      if (Array.isArray(data.ids) && (data.reason === "read" || data.reason === "withdrawn")) {
        for (const item of items) if (data.ids.indexOf(item.id) >= 0) item.read = true;
        render();
      } else if (data.reason === "deleted" || data.reason === "read") {
        // Deleted elsewhere (the list refills to ten), or read in a batch too large
        // for the event to list its ids: only the server knows what the list is now.
        refreshList();
      }
      // A fresh start after a reconnect (the missed events could not be replayed), or a
      // stream another tab took over: the counts are current, the dropdown's list is
      // reloaded to match.
      if (data.reason === "snapshot" && (connections > 1 || data.reset)) refreshList();
    }
  }

  function showStreamState(state) {
    root.dataset.stream = state === "failed" ? "closed" : state;
  }

  /* The stream goes through the list stream's client (Dash.FetchEventStream) rather than
     a native EventSource: that one gives up for good on a refused open (503, 429) and
     cannot send Last-Event-ID when reopened by hand, so notifications made meanwhile
     never arrived live. This one retries with backoff and resumes from the last id.

     One stream per browser, not one per tab: a browser keeps at most 6 connections per
     host over HTTP/1.1, and with a bell stream in every tab three tabs took them all (the
     next request of any tab then waited for good). The tab holding the Web Lock
     "dashboard-bell-stream" opens it and passes every frame to the other tabs over the
     BroadcastChannel; when that tab closes, its lock is released and the next tab waiting
     for it takes over, resuming from the last event id the tabs saw. Without Web Locks
     (a page not served from a secure context) every tab opens its own, as before. */
  let lastEventId = null;
  let holder = false; // this tab holds the browser's bell stream
  let holderState = null;
  function openStream(shared) {
    holder = shared;
    const stream = new Dash.FetchEventStream({
      url: BASE + "sse/notifications",
      method: "GET",
      onState: function (state) {
        holderState = state;
        showStreamState(state);
        if (shared) channel.postMessage({ type: "state", state: state });
      },
      onEvent: function (event, data, id) {
        if (id) lastEventId = id;
        onFrame(event, data);
        if (shared) channel.postMessage({ type: "frame", event: event, data: data, id: id || null });
      },
    });
    stream.lastEventId = lastEventId;
    return stream.start();
  }

  function connect() {
    if (!channel || !(navigator.locks && navigator.locks.request)) {
      openStream(false);
      return;
    }
    navigator.locks.request("dashboard-bell-stream", function () {
      openStream(true);
      return new Promise(function () {}); // held until this tab goes away
    });
    channel.postMessage({ type: "hello" }); // the holder answers with its stream's state
  }

  if (channel) {
    channel.onmessage = function (message) {
      const data = message.data || {};
      if (data.type === "frame") {
        if (data.id) lastEventId = data.id;
        onFrame(data.event, data.data);
      } else if (data.type === "state") {
        showStreamState(data.state);
        if (data.state === "signed-out") Dash.toSignIn();
      } else if (data.type === "hello") {
        if (holder && holderState) channel.postMessage({ type: "state", state: holderState });
      } else {
        // Marked read in another tab.
        refreshCount();
        refreshList();
      }
    };
  }

  refreshCount();
  refreshList();
  connect();
})();
