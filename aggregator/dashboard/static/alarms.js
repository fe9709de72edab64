/* Alarms page: active alarms and the history, optionally for one site; refreshed by polling. */
"use strict";
(() => {
  const { api, el, td, fmtTime } = SW;
  const siteInput = document.getElementById("alarm-site");
  siteInput.value = SW.params.get("site") || "";
  const PAGE = 100;
  let historyLimit = PAGE;

  function where(a) {
    return a.device ? `${a.device}${a.point ? `.${a.point}` : ""}` : "–";
  }
  function siteLink(a) {
    return el("a", { href: `${SW.UI}/sites/${encodeURIComponent(a.site)}` }, a.site);
  }
  function sev(a) {
    return el("span", { class: `sev sev-${a.severity}` }, a.severity);
  }

  let zones = new Map(); // site -> time zone, so each alarm shows in its site's local time
  const at = (a, ms) => fmtTime(ms, zones.get(a.site));

  async function refresh() {
    const site = siteInput.value.trim();
    zones = new Map((await api("/api/sites")).map((s) => [s.site, s.tz]));
    const q = (extra) => new URLSearchParams({ ...(site ? { site } : {}), ...extra });
    const [active, history] = await Promise.all([
      api(`/api/alarms?${q({ active: "true", limit: "1000" })}`),
      api(`/api/alarms?${q({ limit: String(historyLimit) })}`),
    ]);
    const activeBody = document.querySelector("#active-alarms tbody");
    activeBody.replaceChildren(...active.alarms.map((a) => el("tr", { dataset: { id: String(a.id), kind: a.kind, site: a.site } },
      td("Severity", sev(a)), td("Site", siteLink(a)), td("Kind", a.kind), td("Where", where(a)),
      td("Message", a.message, "wrap"), td("Raised", at(a, a.raised_ms)))));
    document.getElementById("active-count").textContent = active.count ? String(active.count) : "";
    document.getElementById("active-empty").classList.toggle("hidden", active.count > 0);
    const ht = document.querySelector("#alarm-history tbody");
    ht.replaceChildren(...history.alarms.map((a) => el("tr", { dataset: { id: String(a.id), kind: a.kind, site: a.site, active: String(a.active) } },
      td("Severity", sev(a)), td("Site", siteLink(a)), td("Kind", a.kind), td("Where", where(a)),
      td("Message", a.message, "wrap"), td("Raised", at(a, a.raised_ms)),
      td("Cleared", a.cleared_ms ? at(a, a.cleared_ms) : el("strong", {}, "active")))));
    document.getElementById("older").classList.toggle("hidden", history.next_offset === null);
  }

  const poller = SW.poll(refresh);
  let debounce = null;
  siteInput.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => poller.now(), 300);
  });
  document.getElementById("older").addEventListener("click", () => {
    historyLimit = Math.min(1000, historyLimit + PAGE);
    poller.now();
  });
})();
