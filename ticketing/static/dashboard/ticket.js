/* The ticket page: edit the ticket, comment with @mentions, add and remove watchers, and
   follow everything that happens to the ticket live (its own stream: GET …/ticket/{id}/sse,
   a snapshot of the page, then one `activity` frame per event about the ticket). */
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
  const watchersList = document.getElementById("watchers");
  const watcherForm = document.getElementById("watcher-form");
  const watcherStatus = document.getElementById("watcher-status");
  const approvalsList = document.getElementById("approvals");
  const dirty = new Set();

  function valueOf(name, state) {
    const value = state[name];
    if (name === "assignee") return value ? value.id : "";
    return value === null || value === undefined ? "" : String(value);
  }

  /* The version the person's edits start from: a save is made against it (If-Match), so a
     change that arrives live to a field they are editing makes their save a 412 (the
     conflict below) instead of silently overwriting it. Changes to other fields move it on. */
  let editVersion = ticket.version;

  /* Show the ticket's state in the form, except fields the person is editing right now.
     `changedNames`: the changes that brought it (live), or null (a state read as a whole). */
  function showTicket(state, changedNames) {
    const collides = changedNames
      ? Object.keys(changedNames).some(function (name) { return dirty.has(name); })
      : dirty.size > 0;
    if (!collides) editVersion = state.version;
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
    if (window.DashSla) DashSla.show(document.getElementById("t-sla"), state);
  }

  form.addEventListener("input", function (event) { if (event.target.name) dirty.add(event.target.name); });
  form.addEventListener("change", function (event) { if (event.target.name) dirty.add(event.target.name); });

  async function patch(changes) {
    saveStatus.textContent = "Saving…";
    hideConflict();
    try {
      // Against the version this page shows: a change made elsewhere meanwhile is a 412.
      const body = await Dash.api("PATCH", ticketUrl, changes, { "If-Match": '"' + editVersion + '"' });
      for (const name of Object.keys(changes)) dirty.delete(name);
      showTicket(body.data, {});
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
    editVersion = current.version;
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

  let comments = config.comments.slice();
  function addComment(comment) {
    if (comments.some(function (c) { return c.id === comment.id; })) return;
    comments.push(comment);
    renderComments(comments);
    const last = commentsList.lastElementChild;
    if (last) Dash.flash(last);
  }

  commentForm.addEventListener("submit", async function (event) {
    event.preventDefault();
    const text = commentBody.value.trim();
    if (!text) return;
    commentStatus.textContent = "Sending…";
    try {
      const body = await Dash.api("POST", ticketUrl + "/comments", { body: text });
      commentBody.value = "";
      commentStatus.textContent = "Comment added.";
      addComment(body.data); // the stream brings it too; shown once
    } catch (error) {
      commentStatus.textContent = "Not sent: " + error.message;
    }
  });

  // --- watchers and approvals ----------------------------------------------------------------

  let watchers = [];
  function renderWatchers(list) {
    watchers = list.slice();
    watchersList.replaceChildren.apply(
      watchersList,
      watchers.map(function (user) {
        // End users may only remove themselves (the API refuses the rest with 403).
        if (!config.isAgent && user.id !== config.me.id) return Dash.el("li", { "data-id": user.id }, [user.name]);
        const remove = Dash.el("button", { type: "button", className: "link", text: "Remove", "aria-label": "Stop " + user.name + " watching" });
        remove.addEventListener("click", async function () {
          watcherStatus.textContent = "Removing…";
          try {
            await Dash.api("DELETE", ticketUrl + "/watchers/" + encodeURIComponent(user.id));
            watcherStatus.textContent = user.name + " no longer watches.";
          } catch (error) {
            watcherStatus.textContent = "Not removed: " + error.message;
          }
        });
        return Dash.el("li", { "data-id": user.id }, [user.name + " ", remove]);
      })
    );
    if (!watchers.length) watchersList.appendChild(Dash.el("li", { className: "muted", text: "Nobody is watching this ticket." }));
  }

  watcherForm.addEventListener("submit", async function (event) {
    event.preventDefault();
    watcherStatus.textContent = "Adding…";
    try {
      const body = await Dash.api("POST", ticketUrl + "/watchers", { user: watcherForm.elements.user.value });
      watcherStatus.textContent = body.data.added ? body.data.user.name + " now watches." : body.data.user.name + " already watches.";
    } catch (error) {
      watcherStatus.textContent = "Not added: " + error.message;
    }
  });

  function renderApprovals(list) {
    approvalsList.replaceChildren.apply(
      approvalsList,
      list.map(function (a) {
        return Dash.el("li", { "data-id": a.id }, [
          Dash.el("strong", { text: Dash.label(a.approvalType) }),
          " by " + (a.approver ? a.approver.name : "–") + " · ",
          Dash.el("span", { className: "tag", text: Dash.label(a.state) }),
        ]);
      })
    );
    if (!list.length) approvalsList.appendChild(Dash.el("li", { className: "muted", text: "No approvals requested." }));
  }
  let approvals = [];
  function upsertApproval(approval) {
    approvals = approvals.filter(function (a) { return a.id !== approval.id; }).concat([approval]);
    renderApprovals(approvals);
  }

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

  /* A live history line reads as the lines the page was served with (ticketing/dashboard.py
     history_row): coded values (status, priority) as words, other values as they are, and
     a support action tagged *support*. */
  const CODED = ["status", "priority"];
  function historyLine(event) {
    const text = function (name, v) {
      if (v && typeof v === "object") return v.name || v.id || "–";
      if (v === null || v === undefined || v === "") return "–";
      return CODED.indexOf(name) >= 0 ? Dash.label(v) : String(v);
    };
    const changes = Object.entries(event.changes || {})
      .filter(function (e) { return e[0] !== "updatedAt"; })
      .map(function (e) { return Dash.el("span", { text: e[0] + ": " + text(e[0], e[1].from) + " → " + text(e[0], e[1].to) }); });
    const what = event.type.replace("tickets.ticket.", "").replace(/_/g, " ");
    const line = Dash.el("li", {}, [
      Dash.el("time", { datetime: event.occurred_at, text: Dash.shortTime(event.occurred_at, true) }),
      " ",
      Dash.el("strong", { text: event.replayed ? what + " (replayed)" : what }),
      " by " + (event.actor ? event.actor.name : "system"),
      event.support ? " " : null,
      event.support ? Dash.el("span", { className: "tag", text: "support" }) : null,
      " ",
      Dash.el("span", { className: "changes" }, changes),
    ]);
    historyList.appendChild(line);
    Dash.flash(line);
  }

  function onActivity(event) {
    const payload = event.payload || {};
    const type = event.type.replace("tickets.ticket.", "");
    historyLine(event);
    if (type === "deleted") {
      document.getElementById("gone").hidden = false;
      return;
    }
    if (payload.ticket && payload.ticket.id === ticket.id) showTicket(payload.ticket, event.changes || {});
    if (type === "comment_added" && payload.comment) {
      addComment({ id: payload.comment.id, author: payload.comment.author, body: payload.comment.body, createdAt: event.occurred_at });
    } else if (type === "watcher_added" && payload.watcher) {
      if (!watchers.some(function (w) { return w.id === payload.watcher.id; })) renderWatchers(watchers.concat([payload.watcher]));
    } else if (type === "watcher_removed" && payload.watcher) {
      renderWatchers(watchers.filter(function (w) { return w.id !== payload.watcher.id; }));
    } else if ((type === "approval_requested" || type === "approval_decided") && payload.approval) {
      upsertApproval(payload.approval);
    }
  }

  // --- presence: who else is on this ticket ---------------------------------------------

  const presenceLine = document.getElementById("presence");
  let myClientId = null;
  let typingSentAt = 0;

  function showPresence(data) {
    const others = data.viewers.filter(function (v) { return v.clientId !== data.you; });
    // One line per person, even with several tabs open; typing wins.
    const people = new Map();
    for (const v of others) {
      const known = people.get(v.user.id);
      if (!known || v.state === "typing") people.set(v.user.id, v);
    }
    const names = Array.from(people.values()).map(function (v) {
      return v.state === "typing" ? v.user.name + " (typing…)" : v.user.name;
    });
    presenceLine.hidden = !names.length;
    presenceLine.textContent = names.length ? "Also on this ticket: " + names.join(", ") : "";
  }

  /* Tell the other viewers this person is typing (at most every 3 s while it lasts). */
  function typing() {
    if (!myClientId || Date.now() - typingSentAt < 3000) return;
    typingSentAt = Date.now();
    Dash.api("POST", ticketUrl + "/presence", { clientId: myClientId, state: "typing" }).catch(function () {});
  }
  commentBody.addEventListener("input", typing);
  form.addEventListener("input", typing);

  function onEvent(name, data) {
    if (name === "connected") {
      myClientId = data.connectionId;
    } else if (name === "presence") {
      showPresence(data);
    } else if (name === "snapshot") {
      document.getElementById("gone").hidden = true;
      showTicket(data.ticket, null);
      comments = data.comments.slice();
      renderComments(comments);
      renderWatchers(data.watchers);
      approvals = data.approvals.slice();
      renderApprovals(approvals);
    } else if (name === "activity") {
      onActivity(data);
    }
  }

  function onState(state, detail) {
    // 404 before the stream starts: the ticket was deleted or is no longer visible.
    if (state === "failed" && /TICKET_NOT_FOUND/.test(String(detail))) document.getElementById("gone").hidden = false;
    Dash.showConnection(state, detail);
  }

  renderComments(comments);
  // Closed while the tab is hidden (the browser's connections per host are few), resumed
  // with Last-Event-ID when it shows again.
  new Dash.FetchEventStream({ url: ticketUrl + "/sse", method: "GET", onEvent: onEvent, onState: onState, pauseWhenHidden: true }).start();
})();
