/* SLA countdowns: every element with `data-sla-due` (an ISO time) and `data-sla-state`
   (ok, warning, breached, paused) shows the time left to that due time, ticking each
   second, from one timer for the whole page. The list and the ticket page create these
   elements with DashSla.badge(ticket) / DashSla.show(element, ticket); the values come
   from the ticket's `slaDueAt` / `slaState` as the API and the streams send them. */
(function () {
  "use strict";

  function span(ms) {
    let seconds = Math.floor(Math.abs(ms) / 1000);
    const days = Math.floor(seconds / 86400);
    seconds -= days * 86400;
    const hours = Math.floor(seconds / 3600);
    seconds -= hours * 3600;
    const minutes = Math.floor(seconds / 60);
    seconds -= minutes * 60;
    const two = function (n) { return String(n).padStart(2, "0"); };
    if (days) return days + "d " + hours + "h";
    if (hours) return hours + "h " + two(minutes) + "m";
    return minutes + "m " + two(seconds) + "s";
  }

  /* The text and the shown state of one countdown at `now` (ms). */
  function describe(due, state, now) {
    if (!due || !state) return { text: "–", shown: "none" };
    if (state === "paused") return { text: "Paused", shown: "paused" };
    const left = Date.parse(due) - now;
    // Past due before the monitor recorded the breach: already shown as breached.
    if (left <= 0) return { text: "Overdue " + span(left), shown: "breached" };
    return { text: span(left) + " left", shown: state };
  }

  function tick(element, now) {
    const view = describe(element.getAttribute("data-sla-due"), element.getAttribute("data-sla-state"), now);
    if (element.textContent !== view.text) element.textContent = view.text;
    if (element.getAttribute("data-sla-shown") !== view.shown) element.setAttribute("data-sla-shown", view.shown);
  }

  /* Point an element at a ticket's SLA and show it now. */
  function show(element, ticket) {
    element.classList.add("sla");
    element.setAttribute("data-sla-due", ticket.slaDueAt || "");
    element.setAttribute("data-sla-state", ticket.slaState || "");
    if (ticket.slaDueAt) element.setAttribute("title", "Due " + new Date(ticket.slaDueAt).toLocaleString());
    else element.removeAttribute("title");
    tick(element, Date.now());
    return element;
  }

  function badge(ticket) {
    return show(document.createElement("span"), ticket);
  }

  function tickAll() {
    const now = Date.now();
    for (const element of document.querySelectorAll("[data-sla-due]")) tick(element, now);
  }

  window.DashSla = { badge: badge, show: show, describe: describe };
  document.addEventListener("DOMContentLoaded", tickAll);
  window.setInterval(tickAll, 1000);
})();
