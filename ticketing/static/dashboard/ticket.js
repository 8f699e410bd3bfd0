/* The ticket page: edit the ticket, comment with @mentions, and follow changes made
   elsewhere live (a list-updates stream filtered to this one ticket). */
(function () {
  "use strict";
  const Dash = window.Dash;
  const config = Dash.config();
  let ticket = config.ticket;
  const ticketUrl = "/api/v2/ticketing/ticket/" + ticket.id;
  const EDITABLE = ["subject", "status", "priority", "team", "assignee", "description"];

  const form = document.getElementById("edit");
  const saveStatus = document.getElementById("save-status");
  const commentsList = document.getElementById("comments");
  const commentForm = document.getElementById("comment-form");
  const commentBody = document.getElementById("comment-body");
  const commentStatus = document.getElementById("comment-status");
  const mentionList = document.getElementById("mention-list");
  const historyList = document.getElementById("history");
  const channel = "BroadcastChannel" in window ? new BroadcastChannel("dashboard-ticket-" + ticket.id) : null;
  const dirty = new Set();

  function valueOf(name, state) {
    const value = state[name];
    if (name === "assignee") return value ? value.id : "";
    return value === null || value === undefined ? "" : String(value);
  }

  /* Show the ticket's state in the form, except fields the person is editing right now. */
  function showTicket(state, changedNames) {
    ticket = state;
    for (const name of EDITABLE) {
      const input = form.elements[name];
      if (!input || dirty.has(name)) continue;
      if (input.value !== valueOf(name, state)) {
        input.value = valueOf(name, state);
        if (changedNames) Dash.flash(input);
      }
    }
    document.getElementById("t-subject").textContent = state.subject;
    const updated = document.getElementById("t-updated");
    updated.setAttribute("datetime", state.updatedAt);
    updated.textContent = Dash.shortTime(state.updatedAt);
    document.getElementById("t-requester").textContent = state.requester ? state.requester.name : "–";
    document.getElementById("t-category").textContent = state.category || "–";
    document.getElementById("t-customer").textContent = state.customer || "–";
  }

  form.addEventListener("input", function (event) { if (event.target.name) dirty.add(event.target.name); });
  form.addEventListener("change", function (event) { if (event.target.name) dirty.add(event.target.name); });

  async function patch(changes) {
    saveStatus.textContent = "Saving…";
    hideConflict();
    try {
      // Against the version this page shows: a change made elsewhere meanwhile is a 412.
      const body = await Dash.api("PATCH", ticketUrl, changes, { "If-Match": '"' + ticket.version + '"' });
      for (const name of Object.keys(changes)) dirty.delete(name);
      showTicket(body.data, null);
      saveStatus.textContent = "Saved.";
    } catch (error) {
      if (error.status === 412 && error.body && error.body.error.details) {
        showConflict(changes, error.body.error.details.ticket);
        saveStatus.textContent = "Not saved: the ticket was changed meanwhile.";
      } else {
        saveStatus.textContent = "Not saved: " + error.message;
      }
    }
  }

  // --- edit conflicts (412 PRECONDITION_FAILED) -------------------------------------------

  const FIELD_LABELS = { subject: "Subject", status: "Status", priority: "Priority", team: "Team",
    assignee: "Assignee", description: "Description" };
  let conflictBox = null;

  function shownValue(name, value) {
    if (name === "assignee") return value && value.name ? value.name : (value ? String(value) : "Unassigned");
    if (value === null || value === undefined || value === "") return "–";
    return name === "status" || name === "priority" ? Dash.label(value) : String(value);
  }

  function hideConflict() {
    if (conflictBox) conflictBox.hidden = true;
  }

  /* Someone saved the ticket after this page read it: nothing of ours was saved. Show
     their values next to ours, and let the agent apply theirs or send ours again on top
     of the current version. */
  function showConflict(changes, current) {
    if (!conflictBox) {
      conflictBox = Dash.el("div", { id: "edit-conflict", className: "banner", role: "alert" });
      form.querySelector(".actions").before(conflictBox);
    }
    const assignee = function (id) {
      const option = form.elements.assignee && form.elements.assignee.querySelector('option[value="' + id + '"]');
      return option ? option.textContent : id;
    };
    const rows = Object.keys(changes).map(function (name) {
      const mine = name === "assignee" ? (changes[name] ? assignee(changes[name]) : "Unassigned") : changes[name];
      return Dash.el("li", { "data-field": name }, [
        Dash.el("strong", { text: (FIELD_LABELS[name] || name) + ": " }),
        "now " + shownValue(name, current[name]) + " · yours " + shownValue(name, mine),
      ]);
    });
    const reapply = Dash.el("button", { type: "button", className: "primary", id: "conflict-reapply",
      text: "Save my changes over theirs" });
    const discard = Dash.el("button", { type: "button", id: "conflict-discard", text: "Discard mine, show theirs" });
    conflictBox.replaceChildren(
      Dash.el("p", { text: "Someone else changed this ticket while you were editing (it is now version " +
        current.version + "). Your changes were not saved." }),
      Dash.el("ul", { className: "plain" }, rows),
      Dash.el("div", { className: "actions" }, [reapply, " ", discard])
    );
    conflictBox.hidden = false;
    ticket = current;  // the next save is made against what the agent has now seen
    reapply.addEventListener("click", function () { patch(changes); });
    discard.addEventListener("click", function () {
      for (const name of Object.keys(changes)) dirty.delete(name);
      showTicket(current, changes);
      hideConflict();
      saveStatus.textContent = "Showing the current version.";
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const changes = {};
    for (const name of EDITABLE) {
      const input = form.elements[name];
      if (!input || input.disabled) continue;
      if (input.value !== valueOf(name, ticket)) changes[name] = name === "assignee" && !input.value ? null : input.value;
    }
    if (!Object.keys(changes).length) {
      saveStatus.textContent = "Nothing to save.";
      return;
    }
    patch(changes);
  });
  const cancelButton = document.getElementById("cancel-ticket");
  if (cancelButton) cancelButton.addEventListener("click", function () { patch({ status: "cancelled" }); });

  // --- comments and @mentions ------------------------------------------------------------

  const known = new Set((config.mentionable || []).map(function (u) { return u.username.toLowerCase(); }));

  function withMentions(text) {
    const parts = [];
    const pattern = /@([A-Za-z0-9_.-]+)/g;
    let last = 0;
    let match;
    while ((match = pattern.exec(text))) {
      if (!known.has(match[1].toLowerCase())) continue;
      parts.push(text.slice(last, match.index));
      parts.push(Dash.el("span", { className: "mention", text: match[0] }));
      last = match.index + match[0].length;
    }
    parts.push(text.slice(last));
    return parts;
  }

  function renderComments(comments) {
    commentsList.replaceChildren.apply(
      commentsList,
      comments.map(function (c) {
        return Dash.el("li", { "data-id": c.id }, [
          Dash.el("div", { className: "comment-meta" }, [
            Dash.el("strong", { text: c.author ? c.author.name : "system" }),
            " · ",
            Dash.el("time", { datetime: c.createdAt, title: c.createdAt, text: Dash.relativeTime(c.createdAt) }),
          ]),
          Dash.el("p", { className: "comment-body" }, withMentions(c.body)),
        ]);
      })
    );
    if (!comments.length) commentsList.appendChild(Dash.el("li", { className: "muted", text: "No comments yet." }));
  }

  let commentCount = config.comments.length;
  async function refreshComments() {
    try {
      const body = await Dash.api("GET", ticketUrl + "/comments");
      if (body.data.length !== commentCount) {
        commentCount = body.data.length;
        renderComments(body.data);
        const last = commentsList.lastElementChild;
        if (last) Dash.flash(last);
      }
    } catch (error) {
      /* shown by the connection state */
    }
  }

  commentForm.addEventListener("submit", async function (event) {
    event.preventDefault();
    const text = commentBody.value.trim();
    if (!text) return;
    commentStatus.textContent = "Sending…";
    try {
      await Dash.api("POST", ticketUrl + "/comments", { body: text });
      commentBody.value = "";
      commentStatus.textContent = "Comment added.";
      await refreshComments();
      if (channel) channel.postMessage({ type: "comments" });
    } catch (error) {
      commentStatus.textContent = "Not sent: " + error.message;
    }
  });
  if (channel) channel.onmessage = refreshComments;
  // Comments are not part of the list stream; other browsers see them within this interval.
  setInterval(function () { if (!document.hidden) refreshComments(); }, 10000);

  let mentionIndex = 0;
  let mentionMatches = [];

  function mentionQuery() {
    const before = commentBody.value.slice(0, commentBody.selectionStart);
    const match = before.match(/(^|\s)@([A-Za-z0-9_.-]*)$/);
    return match ? match[2] : null;
  }

  function closeMentions() {
    mentionList.hidden = true;
    commentBody.setAttribute("aria-expanded", "false");
    commentBody.removeAttribute("aria-activedescendant");
    mentionMatches = [];
  }

  function showMentions() {
    const query = mentionQuery();
    if (query === null) return closeMentions();
    const q = query.toLowerCase();
    mentionMatches = (config.mentionable || []).filter(function (u) {
      return u.username.toLowerCase().startsWith(q) || u.name.toLowerCase().startsWith(q);
    }).slice(0, 6);
    if (!mentionMatches.length) return closeMentions();
    mentionIndex = Math.min(mentionIndex, mentionMatches.length - 1);
    mentionList.replaceChildren.apply(
      mentionList,
      mentionMatches.map(function (u, i) {
        const option = Dash.el("li", { role: "option", id: "mention-" + i, "aria-selected": String(i === mentionIndex) }, [
          "@" + u.username + " ",
          Dash.el("span", { className: "muted", text: u.name }),
        ]);
        option.addEventListener("mousedown", function (event) { event.preventDefault(); chooseMention(i); });
        return option;
      })
    );
    mentionList.hidden = false;
    commentBody.setAttribute("aria-expanded", "true");
    commentBody.setAttribute("aria-activedescendant", "mention-" + mentionIndex);
  }

  function chooseMention(i) {
    const user = mentionMatches[i];
    if (!user) return;
    const caret = commentBody.selectionStart;
    const before = commentBody.value.slice(0, caret).replace(/@([A-Za-z0-9_.-]*)$/, "@" + user.username + " ");
    commentBody.value = before + commentBody.value.slice(caret);
    commentBody.selectionStart = commentBody.selectionEnd = before.length;
    closeMentions();
    commentBody.focus();
  }

  commentBody.addEventListener("input", function () { mentionIndex = 0; showMentions(); });
  commentBody.addEventListener("blur", closeMentions);
  commentBody.addEventListener("keydown", function (event) {
    if (mentionList.hidden) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      mentionIndex = (mentionIndex + step + mentionMatches.length) % mentionMatches.length;
      showMentions();
    } else if (event.key === "Enter" || event.key === "Tab") {
      event.preventDefault();
      chooseMention(mentionIndex);
    } else if (event.key === "Escape") {
      event.preventDefault();
      closeMentions();
    }
  });

  // --- live changes ----------------------------------------------------------------------

  function historyLine(data) {
    const changes = Object.entries(data.changes || {})
      .filter(function (e) { return e[0] !== "updatedAt"; })
      .map(function (e) {
        const text = function (v) { return v && typeof v === "object" ? v.name : Dash.label(v); };
        return Dash.el("span", { text: e[0] + ": " + text(e[1].from) + " → " + text(e[1].to) });
      });
    const line = Dash.el("li", {}, [
      Dash.el("time", { datetime: data.updatedAt, text: Dash.shortTime(data.updatedAt, true) }),
      " ",
      Dash.el("strong", { text: data.replayed ? "updated (replayed)" : "updated" }),
      " ",
      Dash.el("span", { className: "changes" }, changes),
    ]);
    historyList.appendChild(line);
    Dash.flash(line);
  }

  function onEvent(event, data) {
    if (event === "snapshot") {
      if (data.tickets.length) showTicket(data.tickets[0], null);
      else document.getElementById("gone").hidden = false;
    } else if (event === "updated" || event === "created") {
      document.getElementById("gone").hidden = true;
      showTicket(data, data.changes || {});
      if (event === "updated") historyLine(data);
    } else if (event === "deleted") {
      document.getElementById("gone").hidden = false;
    }
  }

  renderComments(config.comments);
  new Dash.FetchEventStream({
    url: Dash.listStreamUrl(config.view),
    body: {
      top: 1,
      offset: 0,
      filter: { op: "AND", operand: [{ id: "this", column: "id", op: "EQ", operand: ticket.id }] },
    },
    onEvent: onEvent,
    onState: Dash.showConnection,
  }).start();
})();
