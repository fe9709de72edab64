/* Fleet page: every site, sortable and filterable, with fleet totals; refreshed by polling. */
"use strict";
(() => {
  const { api, el, td, fmtW, fmtPct, fmtAgo, fmtTime } = SW;
  const table = document.getElementById("fleet");
  const tbody = table.querySelector("tbody");
  const filterText = document.getElementById("filter-text");
  const sort = { key: SW.params.get("sort") || "site", dir: SW.params.get("dir") || "asc" };
  let sites = [];
  let nowMs = Date.now();

  const value = {
    site: (s) => `${s.site} ${s.name}`.toLowerCase(),
    online: (s) => (s.online ? 1 : 0),
    load: (s) => s.key_points.load_w,
    grid: (s) => s.key_points.grid_import_w,
    soc: (s) => s.key_points.soc,
    mode: (s) => s.mode,
    alarms: (s) => s.active_alarms,
    last_seen: (s) => s.last_seen_ms,
  };

  function shown() {
    const q = filterText.value.trim().toLowerCase();
    const show = document.querySelector('input[name="show"]:checked').value;
    return sites.filter((s) => {
      if (show === "online" && !s.online) return false;
      if (show === "offline" && s.online) return false;
      if (show === "alarm" && !s.active_alarms) return false;
      if (!q) return true;
      const hay = [s.site, s.name, s.region, s.mode, s.online ? "online" : "offline", s.tariff]
        .join(" ").toLowerCase();
      return q.split(/\s+/).every((w) => hay.includes(w));
    });
  }

  function row(s) {
    const link = el("a", { href: `${SW.UI}/sites/${encodeURIComponent(s.site)}` }, s.site);
    const title = s.name && s.name !== s.site ? el("span", { class: "muted" }, ` ${s.name}`) : null;
    return el("tr", { dataset: { site: s.site, online: String(s.online), alarms: String(s.active_alarms) } },
      td("Site", el("span", {}, link, title)),
      td("State", el("span", { class: `badge ${s.online ? "online" : "offline"}` }, s.online ? "online" : "offline")),
      td("Load", fmtW(s.key_points.load_w), "num"),
      td("Grid import", fmtW(s.key_points.grid_import_w), "num"),
      td("SOC", fmtPct(s.key_points.soc), "num"),
      td("Mode", el("span", { class: `badge mode mode-${s.mode}` }, s.mode)),
      td("Alarms", s.active_alarms ? el("a", { class: "pill", href: `${SW.UI}/alarms?site=${encodeURIComponent(s.site)}` }, String(s.active_alarms)) : "0", "num"),
      td("Last seen", el("span", { title: fmtTime(s.last_seen_ms, s.tz) }, fmtAgo(s.last_seen_ms, nowMs))),
    );
  }

  function render() {
    const list = shown();
    const get = value[sort.key] || value.site;
    list.sort((a, b) => {
      const c = SW.compare(get(a), get(b));
      return (sort.dir === "asc" ? c : -c) || a.site.localeCompare(b.site);
    });
    tbody.replaceChildren(...list.map(row));
    document.getElementById("shown").textContent = `${list.length} of ${sites.length} sites`;
    document.getElementById("empty").classList.toggle("hidden", list.length > 0 || sites.length === 0);
  }

  function totals() {
    const online = sites.filter((s) => s.online);
    const sum = (f) => online.reduce((acc, s) => acc + (f(s) ?? 0), 0);
    document.getElementById("t-online").textContent = `${online.length} / ${sites.length}`;
    document.getElementById("t-load").textContent = fmtW(sum((s) => s.key_points.load_w));
    document.getElementById("t-grid").textContent = fmtW(sum((s) => s.key_points.grid_import_w));
    document.getElementById("t-alarms").textContent = String(sites.reduce((a, s) => a + s.active_alarms, 0));
  }

  async function refresh() {
    const [list, now] = await Promise.all([api("/api/sites"), SW.serverNow()]);
    sites = list;
    nowMs = now;
    totals();
    render();
    table.dataset.loaded = "true";
  }

  SW.sortableHeaders(table, sort, () => {
    sortSelect.value = `${sort.key}:${sort.dir}`;
    render();
  });
  // Narrow windows hide the header row: the same sort from a select.
  const sortSelect = document.getElementById("sort-select");
  sortSelect.value = `${sort.key}:${sort.dir}`;
  sortSelect.addEventListener("change", () => {
    [sort.key, sort.dir] = sortSelect.value.split(":");
    for (const th of table.querySelectorAll("th[data-key]")) {
      if (th.dataset.key === sort.key) th.setAttribute("aria-sort", sort.dir === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    render();
  });
  filterText.value = SW.params.get("q") || "";
  filterText.addEventListener("input", render);
  for (const r of document.querySelectorAll('input[name="show"]')) r.addEventListener("change", render);
  SW.poll(refresh);

  /* Savings so far: the report API's fleet total over the last 30 days (hidden if the aggregator
     has no report endpoint or no tariff to price it with). */
  const SAVINGS_DAYS = 30;
  async function savings() {
    const card = document.getElementById("savings-card");
    const now = await SW.serverNow();
    let rep;
    try {
      rep = await api(`/api/reports?from=${now - SAVINGS_DAYS * 86400e3}&to=${now}`);
    } catch (e) {
      card.classList.add("hidden");
      return;
    }
    const t = rep.total || {};
    if (t.savings_cost === undefined || t.savings_cost === null) {
      card.classList.add("hidden");
      return;
    }
    card.classList.remove("hidden");
    document.getElementById("t-savings").textContent = `${t.currency || ""} ${Number(t.savings_cost).toFixed(2)}`.trim();
    document.getElementById("t-savings-sub").textContent =
      `last ${SAVINGS_DAYS} days · ${Number(t.savings_kwh || 0).toFixed(1)} kWh · ${Number(t.savings_kgco2 || 0).toFixed(1)} kg CO₂`;
  }
  SW.poll(savings, Math.max(SW.POLL_MS, 60000));
})();
