/* Shared by the dashboard pages: CSRF-aware JSON calls, a Server-Sent Events reader over
   fetch() (the list stream is a POST, which native EventSource cannot send), the
   connection-state indicator and small formatting helpers. Plain JS, no build step. */
(function () {
  "use strict";

  function cookie(name) {
    const match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : "";
  }

  function csrfToken() {
    return cookie("csrftoken");
  }

  /* The session behind the page has ended (signed out in another tab, expired, the
     account deactivated): the page's requests then carry no credentials at all, which the
     API answers 401, or 400 MISSING_HEADER (it checks the tenant headers first, and the
     page sends none); an open stream ends with SESSION_ENDED. Either way: sign in again. */
  function sessionEnded(status, body) {
    const code = body && body.error ? body.error.code : null;
    return status === 401 || (status === 400 && code === "MISSING_HEADER");
  }

  /* What the API said when it refused a request, for a person: the envelope's
     `error.message` and, for a 400 with `details` (a serializer's errors), each field
     named with its messages; never the raw JSON. */
  function errorText(body, status) {
    const error = body && body.error;
    if (!error) return "HTTP " + status;
    let text = error.message || error.code || "HTTP " + status;
    const fields = [];
    (function walk(value, path) {
      if (value === null || value === undefined) return;
      if (typeof value !== "object") fields.push((path ? path + ": " : "") + value);
      else if (Array.isArray(value) && value.every(function (v) { return typeof v !== "object"; })) {
        if (value.length) fields.push((path ? path + ": " : "") + value.join(" "));
      } else {
        for (const [key, inner] of Object.entries(value)) walk(inner, Array.isArray(value) || key === "non_field_errors" ? path : path ? path + "." + key : key);
      }
    })(status === 400 ? error.details : null, "");
    if (fields.length) text += " " + fields.join("; ");
    return text;
  }

  /* Back to this very page after signing in: its path and query (a list's filter, sort and
     page), never another origin. The path is this origin's own; leading slashes are
     collapsed so it cannot read as a scheme-relative `//host` address (Django's login view
     refuses another host too). */
  function toSignIn() {
    const back = "/" + location.pathname.replace(/^[/\\]+/, "") + location.search;
    window.location.assign("/dashboard/login/?next=" + encodeURIComponent(back));
  }

  async function api(method, url, body, headers) {
    const options = {
      method: method,
      credentials: "same-origin",
      headers: Object.assign({ Accept: "application/json", "X-CSRFToken": csrfToken() }, headers || {}),
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    if (response.status === 204) return null;
    const data = await response.json().catch(function () { return null; });
    if (!response.ok) {
      if (sessionEnded(response.status, data)) toSignIn();
      // The envelope's message (a 403 showed as "HTTP 403: {…}", its raw JSON).
      const error = new Error(errorText(data, response.status));
      error.status = response.status;
      error.body = data;
      throw error;
    }
    return data;
  }

  /* One SSE stream over fetch: parses frames, remembers the last `id:`, reconnects with
     exponential backoff (and jitter) sending Last-Event-ID, and treats a silence longer
     than three heartbeats as a dead connection. Unlike a native EventSource, it also
     retries a refused open (503 while Redis is down, 429 at the stream limit), waiting
     for the server's Retry-After, so no event is lost while it is refused. Both streams
     use it: the list (POST with a body) and the bell (GET). */
  class FetchEventStream {
    constructor(options) {
      this.url = options.url;
      this.method = options.method || "POST";
      this.body = options.body;
      this.onEvent = options.onEvent;
      this.onState = options.onState || function () {};
      this.lastEventId = null;
      this.attempt = 0;
      this.stopped = false;
      this.controller = null;
      this.retryTimer = null;
      this.watchdog = null;
      this.silenceMs = options.silenceMs || 75000;
      this.pauseWhenHidden = Boolean(options.pauseWhenHidden);
      this.paused = false;
      this.hiddenTimer = null;
      this.onVisibility = this.onVisibility.bind(this);
    }

    start() {
      this.stopped = false;
      this.paused = false;
      if (this.pauseWhenHidden) document.addEventListener("visibilitychange", this.onVisibility);
      if (this.pauseWhenHidden && document.hidden) this.onVisibility();
      this.connect();
      return this;
    }

    halt() {
      this.stopped = true;
      clearTimeout(this.retryTimer);
      clearTimeout(this.watchdog);
      if (this.controller) this.controller.abort();
    }

    stop() {
      this.halt();
      clearTimeout(this.hiddenTimer);
      document.removeEventListener("visibilitychange", this.onVisibility);
    }

    /* A browser keeps at most 6 connections per host over HTTP/1.1, and every open tab's
       stream holds one: with a few tabs open, the next request of any of them waited for
       good. So a page's own stream (`pauseWhenHidden`) closes once its tab has been hidden
       for HIDDEN_PAUSE_MS, and reopens when the tab shows again, sending Last-Event-ID:
       the server replays what happened meanwhile (or sends a fresh snapshot, reset: true,
       when it cannot), so nothing is missed. A tab hidden only briefly keeps its stream. */
    onVisibility() {
      clearTimeout(this.hiddenTimer);
      if (document.hidden) {
        if (this.paused || this.stopped) return;
        this.hiddenTimer = setTimeout(() => {
          if (!document.hidden || this.stopped) return;
          this.halt();
          this.paused = true;
          this.onState("paused");
        }, Dash.HIDDEN_PAUSE_MS);
      } else if (this.paused) {
        this.paused = false;
        this.stopped = false;
        this.attempt = Math.max(this.attempt, 1); // shown as a reconnect, not a first open
        this.connect();
      }
    }

    signedOut() {
      this.stop();
      this.onState("signed-out");
      toSignIn();
    }

    kick() {
      clearTimeout(this.watchdog);
      this.watchdog = setTimeout(() => {
        if (this.controller) this.controller.abort();
      }, this.silenceMs);
    }

    async connect() {
      if (this.stopped) return;
      const controller = new AbortController();
      this.controller = controller;
      this.onState(this.attempt === 0 ? "connecting" : "reconnecting");
      const headers = { Accept: "text/event-stream", "X-CSRFToken": csrfToken() };
      if (this.method !== "GET") headers["Content-Type"] = "application/json";
      if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
      let retryAfter = null;
      try {
        const response = await fetch(this.url, {
          method: this.method,
          credentials: "same-origin",
          headers: headers,
          body: this.method === "GET" ? undefined : JSON.stringify(this.body),
          signal: controller.signal,
          cache: "no-store",
        });
        if (!response.ok) {
          retryAfter = Number(response.headers.get("Retry-After")) || null;
          const text = await response.text();
          let body = null;
          try {
            body = JSON.parse(text);
          } catch (error) {
            body = null;
          }
          if (sessionEnded(response.status, body)) {
            this.signedOut();
            return;
          }
          if (response.status === 400 || response.status === 403 || response.status === 404) {
            this.onState("failed", text, errorText(body, response.status));
            return;
          }
          throw new Error("HTTP " + response.status);
        }
        this.kick();
        await this.read(response.body.getReader());
      } catch (error) {
        if (this.stopped) return;
      } finally {
        clearTimeout(this.watchdog);
      }
      if (this.stopped || controller !== this.controller) return;
      this.scheduleReconnect(retryAfter);
    }

    scheduleReconnect(retryAfterSeconds) {
      this.attempt += 1;
      const base = Math.min(15000, 500 * Math.pow(2, this.attempt - 1));
      const delay = retryAfterSeconds ? retryAfterSeconds * 1000 : base / 2 + Math.random() * (base / 2);
      this.onState("reconnecting", Math.round(delay / 100) / 10);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    }

    async read(reader) {
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) return;
        this.kick();
        buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          this.dispatch(block);
        }
      }
    }

    dispatch(block) {
      let event = "message";
      let id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line[0] === ":") continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value[0] === " ") value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
        else if (field === "id") id = value;
      }
      if (!data.length) return;
      let payload;
      try {
        payload = JSON.parse(data.join("\n"));
      } catch (error) {
        payload = data.join("\n");
      }
      if (event === "connected" || event === "snapshot") {
        this.attempt = 0;
        this.onState("live");
      }
      if (id) this.lastEventId = id;
      if (event === "error" && payload && payload.code === "SESSION_ENDED") {
        this.signedOut();
        return;
      }
      if (event === "error") {
        // The server ends the stream after an error event; reconnect (with Last-Event-ID).
        this.onState("reconnecting");
      }
      this.onEvent(event, payload, id);
    }
  }

  const STATE_TEXT = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    failed: "Not connected",
    paused: "Paused while the tab is hidden",
    "signed-out": "Signed out",
  };

  function showConnection(state, detail) {
    const box = document.getElementById("conn");
    const text = document.getElementById("conn-text");
    if (!box || !text) return;
    box.dataset.state = state;
    let label = STATE_TEXT[state] || state;
    if (state === "reconnecting" && typeof detail === "number") label = "Reconnecting in " + detail + " s…";
    text.textContent = label;
  }

  function flash(element) {
    element.classList.remove("flash");
    void element.offsetWidth; // restart the animation
    element.classList.add("flash");
    setTimeout(function () { element.classList.remove("flash"); }, 2000);
  }

  function relativeTime(iso) {
    if (!iso) return "";
    const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 45) return "just now";
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return minutes + " min ago";
    const hours = Math.round(minutes / 60);
    if (hours < 24) return hours + " h ago";
    const days = Math.round(hours / 24);
    return days + " d ago";
  }

  function shortTime(iso, withSeconds) {
    if (!iso) return "";
    const d = new Date(iso);
    const pad = function (n) { return String(n).padStart(2, "0"); };
    const text = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
    return withSeconds ? text + ":" + pad(d.getSeconds()) : text;
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "href" || key === "title" || key === "datetime" || key === "type") node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children || []) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function label(value) {
    return value ? String(value).replace(/_/g, " ") : "–";
  }

  function config() {
    const node = document.getElementById("dashboard-config");
    return node ? JSON.parse(node.textContent) : {};
  }

  const Dash = {
    // How long a tab stays hidden before its page stream closes (FetchEventStream, pauseWhenHidden).
    HIDDEN_PAUSE_MS: 10000,
    api: api,
    errorText: errorText,
    toSignIn: toSignIn,
    csrfToken: csrfToken,
    FetchEventStream: FetchEventStream,
    showConnection: showConnection,
    flash: flash,
    relativeTime: relativeTime,
    shortTime: shortTime,
    el: el,
    label: label,
    config: config,
    listStreamUrl: function (view) {
      return "/api/v2/ticketing/ticket/sse/list/updates?type=" + encodeURIComponent(view) + "&module=ticketing";
    },
  };
  window.Dash = Dash;
})();
