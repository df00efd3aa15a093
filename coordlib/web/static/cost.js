// The cost page: spend per model tier over time (stacked bars) and per issue, drawn here
// as SVG from /api/cost (no library, no external asset).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const NS = "http://www.w3.org/2000/svg";
  const KNOWN = { haiku: "#2da44e", sonnet: "#0969da", opus: "#8250df" };
  const OTHER = ["#bf8700", "#cf222e", "#1b7c83", "#bc4c00", "#6e7781"];

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function usd(x) {
    return x >= 0.01 || x === 0 ? "$" + x.toFixed(2) : "$" + x.toPrecision(2);
  }

  function colours(tiers) {
    const out = {};
    let i = 0;
    for (const t of tiers) out[t] = KNOWN[t] || OTHER[i++ % OTHER.length];
    return out;
  }

  function ticks(max) {
    if (max <= 0) return [0];
    const step = Math.pow(10, Math.floor(Math.log10(max / 4)));
    const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => max / s <= 5);
    const out = [];
    for (let v = 0; v <= max + 1e-12; v += nice) out.push(v);
    if (out[out.length - 1] < max) out.push(out[out.length - 1] + nice);
    return out;
  }

  function empty(box, what) {
    const svg = el("svg", { viewBox: "0 0 600 60", width: 600, height: 60, class: "empty-chart" });
    svg.appendChild(el("text", { x: 10, y: 35, class: "empty" }, "No " + what + " recorded yet."));
    box.replaceChildren(svg);
  }

  function legend(box, colour) {
    const div = document.createElement("div");
    div.className = "legend";
    for (const [tier, c] of Object.entries(colour)) {
      const span = document.createElement("span");
      const i = document.createElement("i");
      i.style.background = c;
      span.appendChild(i);
      span.appendChild(document.createTextNode(tier));
      div.appendChild(span);
    }
    box.appendChild(div);
  }

  // Every bucket from the first cost (or the last 12 hours, or 14 days) to now, empty ones
  // included, so the bars sit on a time axis.
  function filled(sparse, step) {
    const now = Date.now() / 1000;
    const last = now - (now % step);
    const first = Math.min(sparse[0].at, last - (step === 3600 ? 11 : 13) * step);
    const by = new Map(sparse.map((b) => [b.at, b]));
    const out = [];
    for (let at = first; at <= last; at += step) out.push(by.get(at) || { at, usd: 0, by_tier: {} });
    return out;
  }

  function overTime(box, data) {
    const span = data.points.length ? Date.now() / 1000 - data.points[0].at : 0;
    const hourly = span < 2 * 86400;
    const sparse = hourly ? data.hourly : data.daily;
    document.getElementById("bucket-note").textContent = hourly ? "(per hour)" : "(per day)";
    if (!sparse.length) return empty(box, "spend");
    const buckets = filled(sparse, hourly ? 3600 : 86400);
    const tiers = Object.keys(data.by_tier).sort();
    const colour = colours(tiers);
    const W = Math.max(box.clientWidth || 600, 70 + buckets.length * 6), H = 280, L = 64, B = 40, T = 12;
    const max = Math.max(...buckets.map((b) => b.usd));
    const scale = ticks(max);
    const top = scale[scale.length - 1] || 1;
    const y = (v) => H - B - (v / top) * (H - B - T);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, id: "svg-time" });
    for (const v of scale) {
      svg.appendChild(el("line", { x1: L, x2: W - 10, y1: y(v), y2: y(v), class: "grid" }));
      svg.appendChild(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, usd(v)));
    }
    svg.appendChild(el("line", { x1: L, x2: W - 10, y1: H - B, y2: H - B, class: "axis" }));
    const slot = (W - L - 10) / buckets.length;
    const bar = Math.min(28, slot * 0.7);
    buckets.forEach((b, i) => {
      const x = L + i * slot + (slot - bar) / 2;
      let base = 0;
      for (const tier of tiers) {
        const v = b.by_tier[tier] || 0;
        if (!v) continue;
        const r = el("rect", { x, y: y(base + v), width: bar, height: y(base) - y(base + v),
                               fill: colour[tier], class: "bar", "data-tier": tier });
        const when = new Date(b.at * 1000);
        r.appendChild(el("title", {}, `${tier}: ${usd(v)} (${when.toLocaleString()})`));
        svg.appendChild(r);
        base += v;
      }
      const when = new Date(b.at * 1000);
      const label = hourly ? when.toTimeString().slice(0, 5) : when.toISOString().slice(5, 10);
      if (buckets.length <= 16 || i % Math.ceil(buckets.length / 16) === 0) {
        svg.appendChild(el("text", { x: x + bar / 2, y: H - B + 16, "text-anchor": "middle" }, label));
      }
    });
    box.replaceChildren(svg);
    legend(box, colour);
  }

  function perIssue(box, data) {
    const rows = Object.entries(data.by_issue).sort((a, b) => b[1] - a[1]).slice(0, 20);
    if (!rows.length) return empty(box, "spend per issue");
    const W = Math.max(480, Math.min(box.clientWidth || 720, 1000)), row = 24, L = 150, R = 80;
    const H = rows.length * row + 10;
    const max = rows[0][1] || 1;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, id: "svg-issues" });
    rows.forEach(([key, v], i) => {
      const y = 5 + i * row;
      const w = Math.max(2, (v / max) * (W - L - R));
      svg.appendChild(el("text", { x: L - 8, y: y + 15, "text-anchor": "end", class: "bar-label" }, key));
      const r = el("rect", { x: L, y: y + 3, width: w, height: row - 8, fill: "#0969da", class: "bar" });
      r.appendChild(el("title", {}, `${key}: ${usd(v)}`));
      svg.appendChild(r);
      svg.appendChild(el("text", { x: L + w + 6, y: y + 15 }, usd(v)));
    });
    box.replaceChildren(svg);
  }

  async function draw() {
    const response = await fetch("/api/cost", { cache: "no-store" });
    if (!response.ok) return;
    const data = await response.json();
    overTime(document.getElementById("chart-time"), data);
    perIssue(document.getElementById("chart-issues"), data);
  }

  coord.refresh = draw;
  coord.onBoard(draw);
});
