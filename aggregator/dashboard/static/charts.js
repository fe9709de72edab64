/* Time-series charts on uPlot with shaded bands (tariff periods, dormant windows).

   Every chart's plotted data is published as window.sitewattCharts[name] =
   {points: [[t_ms, value], …], bands, from_ms, to_ms, draws} so tests (and curious users in the
   console) can check what is drawn against the API. */
"use strict";

const SWCharts = (() => {
  window.sitewattCharts = window.sitewattCharts || {};
  const charts = new Map();
  const css = getComputedStyle(document.documentElement);
  const fmtTime = uPlot.fmtDate("{HH}:{mm}");
  const fmtDayTime = uPlot.fmtDate("{MM}-{DD} {HH}:{mm}");
  const fmtDay = uPlot.fmtDate("{YYYY}-{MM}-{DD}");
  const bandColor = (kind) => css.getPropertyValue(`--${kind}`).trim() || "rgba(0,0,0,.05)";

  function tzDate(tz) {
    if (!tz) return undefined;
    try {
      Intl.DateTimeFormat("en", { timeZone: tz });
      return (ts) => uPlot.tzDate(new Date(ts * 1e3), tz);
    } catch (_) {
      return undefined;
    }
  }

  /* Paint the bands under the series, clipped to the plotting area. */
  function bandHook(state) {
    return (u) => {
      const { ctx } = u;
      const { left, top, width, height } = u.bbox;
      ctx.save();
      ctx.beginPath();
      ctx.rect(left, top, width, height);
      ctx.clip();
      for (const layer of [state.tariff, state.dormant]) {
        for (const b of layer) {
          const x0 = u.valToPos(b.start_ms / 1000, "x", true);
          const x1 = u.valToPos(b.end_ms / 1000, "x", true);
          if (x1 <= left || x0 >= left + width) continue;
          ctx.fillStyle = bandColor(b.kind);
          ctx.fillRect(x0, top, x1 - x0, height);
        }
      }
      ctx.restore();
    };
  }

  /* Tick labels: watts in k with as many decimals as the tick step needs (no "5.2k, 5.2k"). */
  function axisValues(vals, unit) {
    if (unit !== "W" || !vals.some((v) => Math.abs(v) >= 1000)) return vals.map((v) => `${v}`);
    const stepW = vals.length > 1 ? Math.abs(vals[1] - vals[0]) : 1000;
    if (stepW < 10) return vals.map((v) => `${v}`); // a flat line: whole watts say more
    const step = stepW / 1000;
    let digits = 0;
    while (digits < 3 && Math.abs(step * 10 ** digits - Math.round(step * 10 ** digits)) > 1e-6) digits += 1;
    return vals.map((v) => `${(v / 1000).toFixed(digits)}k`);
  }

  function widthOf(container) {
    return Math.max(200, Math.floor(container.clientWidth || container.parentElement.clientWidth || 600));
  }

  /* Draw (or redraw) chart `name` in `figure` (a <figure> with a .plot div).
     opts: {points, label, color, unit, tz, from_ms, to_ms, tariff: [bands], dormant: [bands],
            extra: [{label, color, points}]} */
  function draw(name, figure, opts) {
    const plotDiv = figure.querySelector(".plot");
    const nodata = figure.querySelector(".nodata");
    const points = opts.points || [];
    const extra = opts.extra || [];
    let c = charts.get(name);
    const state = c ? c.state : { tariff: [], dormant: [], from: 0, to: 0 };
    state.tariff = opts.tariff || [];
    state.dormant = opts.dormant || [];
    state.from = opts.from_ms / 1000;
    state.to = opts.to_ms / 1000;

    // One x axis for all series: the union of their times.
    const allSeries = [points, ...extra.map((e) => e.points)];
    const xsMs = [...new Set(allSeries.flatMap((s) => s.map((p) => p[0])))].sort((a, b) => a - b);
    const ys = allSeries.map((s) => {
      const m = new Map(s.map((p) => [p[0], p[1]]));
      return xsMs.map((t) => (m.has(t) ? m.get(t) : null));
    });
    const data = [xsMs.map((t) => t / 1000), ...ys];

    if (!c || c.nSeries !== allSeries.length) {
      if (c) c.plot.destroy();
      // Readings are held until the next one (report by exception): stepped lines. Daily totals
      // are points joined by straight lines.
      const look = (color) => (opts.daily
        ? { stroke: color, width: 2, paths: uPlot.paths.linear(), points: { show: true, size: 9, fill: color } }
        : { stroke: color, width: 1.5, spanGaps: true, paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } });
      const series = [
        {},
        { label: opts.label, ...look(opts.color || "#0b5cad") },
        ...extra.map((e) => ({ label: e.label, ...look(e.color) })),
      ];
      const toDate = tzDate(opts.tz) || ((ts) => new Date(ts * 1e3));
      const yScale = opts.yRange ? { range: opts.yRange } : opts.daily ? { range: (u, lo, hi) => [0, hi > 0 ? hi * 1.1 : 1] } : {};
      const plot = new uPlot({
        width: widthOf(plotDiv),
        height: 220,
        tzDate: toDate,
        scales: { x: { time: true, range: () => [state.from, state.to] }, y: yScale },
        series,
        axes: [{ space: 60, splits: opts.daily ? (u) => Array.from(u.data[0]) : undefined, values: (u, splits) => {
          const span = state.to - state.from;
          const f = opts.daily || span > 3 * 86400 ? fmtDay : span > 86400 ? fmtDayTime : fmtTime;
          return splits.map((s) => f(toDate(s)));
        } }, { size: 60, values: (u, vals) => axisValues(vals, opts.unit) }],
        legend: { show: extra.length > 0 },
        cursor: { drag: { x: false, y: false } },
        hooks: { drawClear: [bandHook(state)] },
      }, data, plotDiv);
      c = { plot, state, nSeries: allSeries.length, draws: 0 };
      charts.set(name, c);
    } else {
      c.plot.setData(data, true);
    }
    c.draws += 1;
    nodata.classList.toggle("hidden", points.length > 0);
    figure.dataset.points = String(points.length);
    window.sitewattCharts[name] = {
      points,
      extra: extra.map((e) => ({ label: e.label, points: e.points })),
      tariff: state.tariff,
      dormant: state.dormant,
      from_ms: opts.from_ms,
      to_ms: opts.to_ms,
      draws: c.draws,
    };
  }

  function resizeAll() {
    for (const [, c] of charts) {
      const div = c.plot.root.parentElement;
      c.plot.setSize({ width: widthOf(div), height: 220 });
    }
  }
  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(resizeAll, 100);
  });

  /* Step-hold combination of several series: at every time any of them changes, f(values) of
     the latest value of each (skipped until all have one). Used for V × I products and sums. */
  function combine(seriesList, f) {
    const times = [...new Set(seriesList.flatMap((s) => s.map((p) => p[0])))].sort((a, b) => a - b);
    const idx = seriesList.map(() => 0);
    const last = seriesList.map(() => null);
    const out = [];
    for (const t of times) {
      seriesList.forEach((s, i) => {
        while (idx[i] < s.length && s[idx[i]][0] <= t) {
          last[i] = s[idx[i]][1];
          idx[i] += 1;
        }
      });
      if (last.every((v) => v !== null && v !== undefined)) out.push([t, f(last)]);
    }
    return out;
  }

  return { draw, combine, resizeAll };
})();
window.SWCharts = SWCharts;
