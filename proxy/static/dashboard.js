// BehaviorGate monitoring dashboard: polls the admin API and draws the four panels.
//
// Every value shown here may come from an attacker (paths, user ids, notes, explanations), so
// the DOM is built with createElement + textContent only; markup is never parsed from data.
// The admin token lives in sessionStorage: this tab only, gone when it closes.
(function () {
  "use strict";

  const API = document.querySelector('meta[name="bg-api"]').getAttribute("content");
  const TOKEN_KEY = "behaviorgate.adminToken";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const DECISIONS = ["ALLOW", "MONITOR", "CHALLENGE", "REQUIRE_2FA", "BLOCK", "LEARNING", "ERROR"];
  const ALERTS = new Set(["CHALLENGE", "REQUIRE_2FA", "BLOCK"]);
  const RANGES = { 1: { name: "hour", bucket: 60 }, 24: { name: "day", bucket: 900 },
    168: { name: "week", bucket: 3600 } };
  // The default ladder; drawn as guides on score charts (per-path overrides may differ).
  const LADDER = [[0.65, "MONITOR"], [0.7, "CHALLENGE"], [0.8, "REQUIRE_2FA"], [0.9, "BLOCK"]];
  const REFRESH_MS = refreshMs();

  const state = { hours: 24, user: null, detailId: null, timer: null, confirming: null };

  // ---------------------------------------------------------------- DOM helpers

  const ATTRS = new Set(["class", "type", "title", "role", "tabindex", "for", "id", "colspan",
    "aria-label", "aria-pressed", "scope"]);

  /** An element with allow-listed attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k.startsWith("data-")) node.setAttribute(k, String(v));
      else if (ATTRS.has(k)) node.setAttribute(k, String(v));
      else throw new Error("attribute not allowed: " + k);
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = String(v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) if (c) node.appendChild(c);
    return node;
  }

  function fill(id, ...children) {
    const node = document.getElementById(id);
    node.replaceChildren();
    return append(node, children);
  }

  const $ = (id) => document.getElementById(id);

  /** A table that scrolls sideways inside its panel instead of spilling over its neighbours. */
  function table(attrs, ...children) {
    return el("div", { class: "scroll" }, el("table", attrs, ...children));
  }

  // ---------------------------------------------------------------- formatting

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const pct = (v, digits = 1) => (isNum(v) ? (v * 100).toFixed(digits) + "%" : "—");
  const num = (v, digits = 3) => (isNum(v) ? String(+v.toFixed(digits)) : "—");
  const ms = (v) => (isNum(v) ? (+v.toFixed(2)) + " ms" : "—");

  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  }

  /** Short time for axes and tables: the date is added unless ``timeOnly``. */
  function short(t, timeOnly = false) {
    const opts = { hour: "2-digit", minute: "2-digit" };
    if (!timeOnly) Object.assign(opts, { month: "short", day: "numeric" });
    const d = new Date(t);
    return Number.isNaN(d.getTime()) ? "—" : d.toLocaleString([], opts);
  }

  /** Axis labels carry the date once a chart spans more than a few hours. */
  const axisTime = (t, span) => short(t, span < 6 * 3600 * 1000);

  function chip(decision) {
    const d = DECISIONS.includes(decision) ? decision : "OTHER";
    return el("span", { class: "chip d-" + d, text: decision || "?" });
  }

  function empty(text) {
    return el("p", { class: "empty", text });
  }

  function kv(rows) {
    return el("dl", { class: "kv" }, rows.map(([k, v]) => [el("dt", { text: k }),
      el("dd", {}, v instanceof Node ? v : String(v))]));
  }

  // ---------------------------------------------------------------- API access

  class AuthError extends Error {}

  class ApiError extends Error {
    constructor(status, doc) {
      const e = (doc && doc.error) || {};
      super((e.message || "request failed") + " (" + status + (e.code ? " " + e.code : "") + ")");
      this.status = status;
      this.code = e.code || null;
      this.doc = doc;
    }
  }

  async function api(path, { method = "GET", body = null } = {}) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) throw new AuthError("no token");
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    if (body !== null) headers["Content-Type"] = "application/json";
    const res = await fetch(API + path, {
      method, headers, body: body === null ? null : JSON.stringify(body),
      cache: "no-store", credentials: "omit", redirect: "error",
    });
    let doc = null;
    try { doc = await res.json(); } catch (_) { doc = null; }
    if (res.status === 401 || res.status === 403) {
      // A late answer to a token already replaced or dropped must not sign the tab out again.
      if (sessionStorage.getItem(TOKEN_KEY) !== token) throw new AuthError("stale");
      signOut(res.status === 401 ? "The token was not accepted." : "This token is not an administrator's.");
      throw new AuthError("refused");
    }
    if (!res.ok || !doc || doc.success !== true) throw new ApiError(res.status, doc);
    return doc;
  }

  const q = (params) => "?" + new URLSearchParams(params).toString();

  /** Fire-and-forget a guarded load (an AuthError has already sent the page to sign-in). */
  const quiet = (promise) => promise.catch(() => {});

  /** Run a panel loader; a failure shows in that panel only. */
  async function guarded(target, loader) {
    try {
      await loader();
    } catch (err) {
      if (err instanceof AuthError) throw err;
      fill(target, el("p", { class: "error", text: "Could not load: " + err.message }));
    }
  }

  // ---------------------------------------------------------------- charts (SVG)

  /** Charts are drawn at their container's pixel width so text is never scaled down. */
  const widthOf = (id) => Math.max(280, Math.min(1400, $(id).clientWidth || 600));

  /** Line over time; null values leave gaps. ``guides`` draw labelled horizontal lines. */
  function lineChart(points, { yMax = 1, guides = [], label, dots = false, height = 150, W = 600 } = {}) {
    const H = height, pad = { l: 40, r: 8, t: 8, b: 20 };
    const xs = points.length ? points.map((p) => p.x) : [Date.now()];
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (W - pad.l - pad.r);
    const Y = (y) => pad.t + (1 - Math.min(y, yMax) / yMax) * (H - pad.t - pad.b);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "svgchart", role: "img",
      "aria-label": label });
    root.appendChild(svg("title", { text: label }));
    for (const t of [0, yMax / 2, yMax]) {
      root.appendChild(svg("line", { x1: pad.l, x2: W - pad.r, y1: Y(t), y2: Y(t), class: "grid" }));
      root.appendChild(svg("text", { x: pad.l - 4, y: Y(t) + 4, class: "tick end",
        text: yMax === 1 ? Math.round(t * 100) + "%" : num(t, 2) }));
    }
    for (const g of guides) {
      root.appendChild(svg("line", { x1: pad.l, x2: W - pad.r, y1: Y(g.y), y2: Y(g.y),
        class: "guide g-" + g.decision }));
    }
    let d = "", pen = false;
    for (const p of points) {
      if (!isNum(p.y)) { pen = false; continue; }
      d += (pen ? "L" : "M") + X(p.x).toFixed(1) + " " + Y(p.y).toFixed(1) + " ";
      pen = true;
    }
    if (d) root.appendChild(svg("path", { d, class: "line" }));
    if (dots) {
      for (const p of points) {
        if (!isNum(p.y)) continue;
        root.appendChild(svg("circle", { cx: X(p.x), cy: Y(p.y), r: 4, class: "dot d-" + p.decision },
          svg("title", { text: p.title || num(p.y) })));
      }
    }
    root.appendChild(svg("text", { x: pad.l, y: H - 4, class: "tick", text: axisTime(x0, x1 - x0) }));
    root.appendChild(svg("text", { x: W - pad.r, y: H - 4, class: "tick end", text: axisTime(x1, x1 - x0) }));
    return root;
  }

  /** Stacked bars of decision counts per time bucket. */
  function stackedBars(buckets, label, W = 600) {
    const H = 150, pad = { l: 40, r: 8, t: 8, b: 20 };
    const max = Math.max(1, ...buckets.map((b) => b.total));
    const bw = (W - pad.l - pad.r) / Math.max(1, buckets.length);
    const times = buckets.map((b) => Date.parse(b.start));
    const span = times.length ? times[times.length - 1] - times[0] : 0;
    const Y = (v) => (v / max) * (H - pad.t - pad.b);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "svgchart", role: "img",
      "aria-label": label });
    root.appendChild(svg("title", { text: label }));
    root.appendChild(svg("text", { x: pad.l - 4, y: pad.t + 8, class: "tick end", text: max }));
    root.appendChild(svg("text", { x: pad.l - 4, y: H - pad.b, class: "tick end", text: 0 }));
    buckets.forEach((b, i) => {
      let base = H - pad.b;
      for (const d of DECISIONS) {
        const n = b.counts[d] || 0;
        if (!n) continue;
        const h = Y(n);
        base -= h;
        root.appendChild(svg("rect", { x: pad.l + i * bw, y: base, width: Math.max(bw - 1, 0.5),
          height: h, class: "bar d-" + d },
          svg("title", { text: `${short(times[i])} ${d}: ${n}` })));
      }
    });
    if (buckets.length) {
      root.appendChild(svg("text", { x: pad.l, y: H - 4, class: "tick",
        text: axisTime(times[0], span) }));
      root.appendChild(svg("text", { x: W - pad.r, y: H - 4, class: "tick end",
        text: axisTime(times[times.length - 1], span) }));
    }
    return root;
  }

  function legend(decisions) {
    return el("ul", { class: "legend" }, decisions.map((d) => el("li", {}, chip(d))));
  }

  /** A horizontal bar (0..1) drawn with a sized element (CSSOM, allowed under the CSP). */
  function bar(fraction, cls) {
    const inner = el("span", { class: "fill " + (cls || "") });
    inner.style.width = Math.max(0, Math.min(1, fraction)) * 100 + "%";
    return el("span", { class: "bar" }, inner);
  }

  // ---------------------------------------------------------------- panel: anomaly rate

  const perfCache = {};

  async function loadRate() {
    const hours = [1, 24, 168];
    const perfs = await Promise.all(hours.map((h) => api("/performance" + q({ hours: h }))));
    hours.forEach((h, i) => { perfCache[h] = perfs[i]; });
    const now = await api("/stats" + q({ hours: 1, bucket: 60 }));
    const tiles = hours.map((h, i) => {
      const p = perfs[i].performance;
      return el("div", { class: "tile", "data-hours": h },
        el("span", { class: "label", text: "Last " + RANGES[h].name }),
        el("strong", { class: "value", text: p.totalPredictions ? pct(p.anomalyRate) : "—" }),
        el("span", { class: "sub", text: `${p.anomalyCount} of ${p.totalPredictions} scored` }));
    });
    tiles.push(el("div", { class: "tile", "data-hours": "rps" },
      el("span", { class: "label", text: "Requests/s (5 min)" }),
      el("strong", { class: "value", text: num(requestsPerSecond(now.buckets), 2) }),
      el("span", { class: "sub", text: "scored, all replicas" })));
    fill("rate-tiles", tiles);
    await loadTrend();
  }

  function requestsPerSecond(buckets) {
    const now = Date.now(), since = now - 5 * 60 * 1000;
    let n = 0, first = now;
    for (const b of buckets) {
      const start = Date.parse(b.start);
      if (start + 60_000 <= since) continue;
      first = Math.min(first, Math.max(start, since));
      n += b.total;
    }
    return n / Math.max(60, (now - first) / 1000);
  }

  async function loadTrend() {
    const r = RANGES[state.hours];
    const stats = await api("/stats" + q({ hours: state.hours, bucket: r.bucket }));
    const total = Object.values(stats.totals).reduce((a, b) => a + b, 0);
    if (!total) {
      fill("rate-trend", empty(`No scored requests in the last ${r.name}. Requests through the `
        + "gateway show here within seconds; exempt paths are never scored."));
      fill("rate-mix");
      return;
    }
    const points = stats.buckets.map((b) => ({
      x: Date.parse(b.start),
      y: b.total ? anomalous(b.counts) / b.total : null,
    }));
    fill("rate-trend", el("h3", { text: `Anomaly rate per ${bucketName(r.bucket)}, last ${r.name}` }),
      lineChart(points, { label: "Anomaly rate over time", W: widthOf("rate-trend") }));
    const seen = DECISIONS.filter((d) => stats.totals[d]);
    fill("rate-mix", el("h3", { text: "Decision mix over time" }),
      stackedBars(stats.buckets, "Decisions per time bucket", widthOf("rate-mix")), legend(seen));
  }

  const anomalous = (counts) =>
    ["MONITOR", "CHALLENGE", "REQUIRE_2FA", "BLOCK"].reduce((a, d) => a + (counts[d] || 0), 0);
  const bucketName = (s) => (s === 60 ? "minute" : s === 900 ? "15 minutes" : "hour");

  // ---------------------------------------------------------------- panel: model health

  let lastStatus = null;

  async function loadModel() {
    const status = await api("/status");
    lastStatus = status;
    renderMode(status);
    renderState(status);
    await Promise.all([
      guarded("model-drift", loadDrift),
      guarded("model-versions", loadVersions),
    ]);
  }

  function learningText(status) {
    const s = status.samples;
    if (s && isNum(s.have) && isNum(s.need)) {
      return `learning: ${s.have} of ${s.need} samples`;
    }
    return "learning: no model yet";
  }

  function renderMode(status) {
    const node = $("mode");
    node.textContent = status.mode === "learning" ? learningText(status) : status.mode;
    node.className = "badge m-" + (status.mode || "unknown");
  }

  function renderState(status) {
    const retrain = el("button", { type: "button", class: "small", text: "Retrain now" });
    retrain.addEventListener("click", () => startRetrain(retrain));
    const rows = [
      ["Mode", status.mode],
      ["Active version", status.modelVersion === null ? "none" : "v" + status.modelVersion],
      ["Retraining", status.isRetraining ? "running now" : "idle"],
      ["Last retraining job", status.lastRetrainingTime ? when(status.lastRetrainingTime) : "none on this replica"],
    ];
    const parts = [kv(rows)];
    if (status.mode === "learning") {
      const s = status.samples || {};
      parts.push(empty(`${learningText(status)[0].toUpperCase()}${learningText(status).slice(1)}. `
        + "The gateway forwards everything and records history; the first model trains "
        + `automatically once it has ${isNum(s.need) ? s.need : "enough"} samples.`));
    }
    parts.push(el("p", { class: "actions" }, retrain, el("span", { id: "retrain-msg", class: "muted" })));
    fill("model-state", parts);
  }

  async function startRetrain(button) {
    button.disabled = true;
    const msg = $("retrain-msg");
    try {
      const doc = await api("/retrain", { method: "POST", body: {} });
      msg.textContent = " Training job " + (doc.jobId || "") + " started.";
    } catch (err) {
      if (!(err instanceof AuthError)) msg.textContent = " " + err.message;
    } finally {
      button.disabled = false;
    }
  }

  async function loadDrift() {
    let doc;
    try {
      doc = await api("/drift/status");
    } catch (err) {
      if (err instanceof ApiError && err.code === "lifecycle_unavailable") {
        fill("model-drift", empty("Drift checks do not run on this gateway (no model lifecycle)."));
        return;
      }
      throw err;
    }
    const d = doc.drift || {};
    const latest = d.latest;
    if (!latest) {
      fill("model-drift", el("h3", { text: "Drift" }), empty("No drift check yet: checks run "
        + "hourly once a model is active."));
      return;
    }
    const threshold = isNum(d.threshold) ? d.threshold : 0.15;
    const history = (d.checks || []).slice().reverse()
      .map((c) => ({ x: Date.parse(c.checkedAt), y: c.driftScore }));
    const yMax = Math.max(threshold * 2, ...history.map((p) => (isNum(p.y) ? p.y : 0)));
    const features = (latest.features || []).filter((f) => isNum(f.psi))
      .sort((a, b) => b.psi - a.psi).slice(0, 5);
    const maxPsi = Math.max(0.25, ...features.map((f) => f.psi));
    fill("model-drift",
      el("h3", { text: "Drift" }),
      kv([
        ["Latest score", pct(latest.driftScore) + " (threshold " + pct(threshold, 0) + ")"],
        ["State", (latest.isDrifting ? "drifting" : "stable") + ", trend " + (d.trend || "stable")],
        ["Checked", when(latest.checkedAt) + " on " + num(latest.sampleSize, 0) + " samples"],
      ]),
      history.length > 1 ? lineChart(history, { yMax, guides: [{ y: threshold, decision: "BLOCK" }],
        W: widthOf("model-drift"),
        label: "Drift score history", dots: true, height: 110 }) : null,
      el("h3", { text: "Most drifting features (PSI)" }),
      features.length ? table({ class: "data" },
        el("thead", {}, el("tr", {}, ["Feature", "PSI", "KS", ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, features.map((f) => el("tr", { class: f.drifting ? "hot" : null },
          el("td", { text: f.feature }), el("td", { class: "num", text: num(f.psi) }),
          el("td", { class: "num", text: num(f.ks) }),
          el("td", { class: "barcell" }, bar(f.psi / maxPsi, f.drifting ? "warn" : "")))))) :
        empty("No per-feature statistics in the latest check."));
  }

  async function loadVersions() {
    const doc = await api("/models");
    const versions = doc.versions || [];
    const active = doc.activeVersion;
    if (!versions.length) {
      const hint = lastStatus && lastStatus.mode === "learning"
        ? learningText(lastStatus) + ". " : "";
      fill("model-versions", el("h3", { text: "Versions" }), empty(hint + "No model version yet: "
        + "one is trained automatically from enough traffic, or POST /initialize."));
      return;
    }
    const current = versions.find((v) => v.version === active) || null;
    const parts = [el("h3", { text: "Last training" })];
    if (current) {
      parts.push(kv([
        ["Version", "v" + current.version + " (active)"],
        ["Trained", when(current.createdAt)],
        ["Samples", current.sampleCount],
        ...metricRows(current.trainingMetrics),
      ]));
    } else {
      parts.push(empty("No version is active: activate one below."));
    }
    parts.push(el("h3", { text: "Version history" }), versionTable(versions, active),
      el("p", { id: "activate-msg", class: "muted", role: "status" }));
    fill("model-versions", parts);
  }

  function metricRows(metrics, prefix = "") {
    const rows = [];
    for (const [k, v] of Object.entries(metrics || {})) {
      if (rows.length >= 12) break;
      if (v && typeof v === "object" && !Array.isArray(v)) rows.push(...metricRows(v, prefix + k + "."));
      else rows.push([prefix + k, isNum(v) ? num(v, 4) : Array.isArray(v) ? `[${v.length} values]` : String(v)]);
    }
    return rows.slice(0, 12);
  }

  function versionTable(versions, active) {
    return table({ class: "data", id: "versions" },
      el("thead", {}, el("tr", {}, ["Version", "Trained", "Status", "Samples", ""]
        .map((h) => el("th", { text: h })))),
      el("tbody", {}, versions.map((v) => el("tr", { "data-version": v.version, class: v.isActive ? "active" : null },
        el("td", { text: "v" + v.version }), el("td", { text: short(v.createdAt), title: when(v.createdAt) }),
        el("td", { text: v.status + (v.activatedBy ? " · by " + v.activatedBy : "") }),
        el("td", { class: "num", text: v.sampleCount }),
        el("td", {}, v.isActive ? null : activateButton(v, active))))));
  }

  /** Two clicks: the first asks, the second (within 6 s) activates. */
  function activateButton(v, active) {
    const verb = active !== null && v.version < active ? "Roll back" : "Activate";
    const button = el("button", { type: "button", class: "small", "data-action": "activate",
      "data-version": v.version, text: `${verb} to v${v.version}` });
    const ask = () => {
      button.textContent = `Confirm: ${verb.toLowerCase()} to v${v.version}?`;
      button.classList.add("confirm");
    };
    if (state.confirming === v.version) ask(); // a refresh redrew the table mid-confirmation
    button.addEventListener("click", async () => {
      if (state.confirming !== v.version) {
        state.confirming = v.version;
        ask();
        setTimeout(() => {
          if (state.confirming !== v.version) return;
          state.confirming = null;
          button.textContent = `${verb} to v${v.version}`;
          button.classList.remove("confirm");
        }, 6000);
        return;
      }
      state.confirming = null;
      button.disabled = true;
      try {
        const doc = await api(`/models/${encodeURIComponent(v.version)}/activate`, { method: "POST" });
        await guarded("model-state", loadModel); // status, drift and the version table
        const msg = $("activate-msg");
        if (msg) msg.textContent = `v${doc.activeVersion} is now active.`;
      } catch (err) {
        if (err instanceof AuthError) return;
        button.disabled = false;
        const msg = $("activate-msg");
        if (msg) msg.textContent = err.message;
      }
    });
    return button;
  }

  // ---------------------------------------------------------------- panel: detection quality

  async function loadQuality() {
    const doc = perfCache[state.hours] || await api("/performance" + q({ hours: state.hours }));
    const p = doc.performance;
    const r = RANGES[state.hours];
    const steps = doc.stepUps || {};
    const t = p.processingTimeMs || {};
    const fps = await api("/false-positives" + q({ limit: 10 }));
    const lat = [["p50", t.p50], ["p95", t.p95], ["p99", t.p99]];
    const latMax = Math.max(1e-9, ...lat.map(([, v]) => (isNum(v) ? v : 0)));
    fill("quality",
      p.totalPredictions ? null : empty(`No scored requests in the last ${r.name}: these figures `
        + "fill in as traffic is scored and users send feedback."),
      kv([
        ["False-positive rate", pct(p.falsePositiveRate)
          + ` (${p.falsePositiveCount} reported of ${p.anomalyCount} anomalies, last ${r.name})`],
        ["Feedback received", `${p.feedbackCount} on anomalies`],
        ["Model agreement", num(p.modelAgreement)],
        ["Average confidence", num(p.averageConfidence)],
        ["Average score", num(p.averageAnomalyScore)],
        ["Challenge solve rate", isNum(doc.challengeSolveRate)
          ? `${pct(doc.challengeSolveRate)} (${steps.completed} of ${steps.issued}, ${steps.scope})`
          : "no step-up issued yet"],
      ]),
      el("h3", { text: "Scoring latency" }),
      table({ class: "data latency" }, el("tbody", {}, lat.map(([k, v]) => el("tr", { "data-p": k },
        el("th", { scope: "row", text: k }), el("td", { class: "num", text: ms(v) }),
        el("td", { class: "barcell" }, bar(isNum(v) ? v / latMax : 0)))))),
      el("h3", { text: "Recent false-positive reports" }),
      falsePositiveList(fps.falsePositives || []));
  }

  function falsePositiveList(items) {
    if (!items.length) return empty("No false-positive reports. Users report them with "
      + "POST /predictions/{id}/feedback.");
    return el("ul", { class: "reports", id: "fp-list" }, items.map((it) => {
      const p = it.prediction || {};
      return el("li", {}, el("span", { class: "muted", text: short(it.feedback.createdAt) + " " }),
        p.decision ? chip(p.decision) : null, " ",
        el("code", { text: (p.method || "") + " " + (p.route || "") }), " by ",
        el("span", { class: "user", text: it.feedback.userId }),
        it.feedback.notes ? el("q", { text: it.feedback.notes }) : null);
    }));
  }

  // ---------------------------------------------------------------- panel: user profile

  async function loadUser() {
    if (state.user === null) {
      fill("user-result", empty("Search a user id to see their recent predictions, score trend "
        + "and alerts; click a prediction for its explanation."));
      return;
    }
    const user = state.user;
    const doc = await api("/predictions" + q({ userId: user, hours: 168, limit: 200 }));
    const preds = doc.predictions || [];
    if (!preds.length) {
      fill("user-result", empty(`No predictions for “${user}” in the last week.`));
      return;
    }
    const alerts = preds.filter((p) => ALERTS.has(p.decision));
    const points = preds.slice().reverse().map((p) => ({
      x: Date.parse(p.timestamp), y: p.anomalyScore, decision: p.decision,
      title: `${when(p.timestamp)} ${p.decision} ${num(p.anomalyScore)}`,
    }));
    fill("user-result",
      el("h3", {}, "Predictions for ", el("span", { class: "user", id: "profile-user", text: user }),
        el("span", { class: "muted", text: ` · ${preds.length} in the last week, ${alerts.length} alerts` })),
      lineChart(points, { label: "Anomaly score trend", dots: true, W: widthOf("user-result"),
        guides: LADDER.map(([y, d]) => ({ y, decision: d })) }),
      el("h3", { text: "Alerts" }),
      alerts.length ? el("ul", { class: "reports", id: "alerts" }, alerts.slice(0, 10).map((p) =>
        el("li", {}, chip(p.decision), " ", el("span", { class: "muted", text: short(p.timestamp) + " " }),
          el("code", { text: p.method + " " + p.route })))) : empty("No challenge, 2FA or block in the last week."),
      el("h3", { text: "Recent predictions" }),
      predictionTable(preds));
  }

  function predictionTable(preds) {
    return el("div", { class: "scroll" }, el("table", { class: "data clickable", id: "predictions" },
      el("thead", {}, el("tr", {}, ["Time", "Request", "Decision", "Score", "Rule"]
        .map((h) => el("th", { text: h })))),
      el("tbody", {}, preds.map((p) => {
        const row = el("tr", { "data-id": p.id, tabindex: 0, class: p.id === state.detailId ? "sel" : null },
          el("td", { text: short(p.timestamp), title: when(p.timestamp) }),
          el("td", {}, el("code", { text: p.method + " " + p.route })),
          el("td", {}, chip(p.decision)), el("td", { class: "num", text: num(p.anomalyScore) }),
          el("td", { text: p.rule || "—" }));
        const open = () => { state.detailId = p.id; markSelected(); quiet(showDetail(p.id)); };
        row.addEventListener("click", open);
        row.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
        return row;
      }))));
  }

  function markSelected() {
    for (const row of document.querySelectorAll("#predictions tbody tr")) {
      row.classList.toggle("sel", row.getAttribute("data-id") === state.detailId);
    }
  }

  async function showDetail(id) {
    fill("detail", el("p", { class: "muted", text: "Loading…" }));
    await guarded("detail", async () => {
      const [doc, fps] = await Promise.all([
        api("/predictions/" + encodeURIComponent(id)),
        api("/false-positives" + q({ limit: 500 })),
      ]);
      if (state.detailId !== id) return;
      renderDetail(doc.prediction, (fps.falsePositives || []).filter((r) => r.feedback.predictionId === id));
    });
  }

  function renderDetail(p, reports) {
    const top = p.topFeatures || [];
    const maxC = Math.max(1e-9, ...top.map((f) => Math.abs(f.contribution)));
    const close = el("button", { type: "button", class: "link", text: "Close" });
    close.addEventListener("click", () => { state.detailId = null; markSelected(); fill("detail"); });
    fill("detail", el("div", { class: "detail", id: "explanation" },
      el("div", { class: "detail-head" }, el("h3", { text: "Explanation" }), close),
      el("p", {}, chip(p.decision), " ", el("code", { text: p.method + " " + p.route })),
      el("p", { class: "sentence", id: "sentence", text: p.explanation || "No explanation available for this prediction." }),
      kv([
        ["Prediction", p.id], ["Time", when(p.timestamp)], ["User", p.userId || "—"],
        ["Session", p.sessionId || "—"], ["Client IP", p.clientIp || "—"],
        ["Score", num(p.anomalyScore)],
        ["Isolation forest / autoencoder", num(p.scores.isolationForest) + " / " + num(p.scores.autoencoder)],
        ["Model agreement", num(p.modelAgreement)], ["Confidence", num(p.confidence)],
        ["Model", p.modelVersion === null ? "—" : "v" + p.modelVersion],
        ["Explanation source", p.explanationSource],
        ...(p.note ? [["Note", p.note]] : []), ...(p.enforced ? [["Enforced", p.enforced]] : []),
      ]),
      el("h3", { text: "Top features" }),
      top.length ? table({ class: "data", id: "top-features" },
        el("thead", {}, el("tr", {}, ["Feature", "Contribution", "", "Value", "Normal"].map((h) => el("th", { text: h })))),
        el("tbody", {}, top.map((f) => el("tr", {},
          el("td", { text: f.feature }), el("td", { class: "num", text: num(f.contribution) }),
          el("td", { class: "barcell" }, bar(Math.abs(f.contribution) / maxC, f.contribution < 0 ? "neg" : "")),
          el("td", { class: "num", text: num(f.value) }), el("td", { text: f.normalizedValue }))))) :
        empty("No feature contributions: there is no compatible active model to compute them."),
      el("h3", { text: "Feedback" }),
      reports.length ? el("ul", { class: "reports", id: "feedback" }, reports.map((r) =>
        el("li", {}, "Reported as a false positive by ", el("span", { class: "user", text: r.feedback.userId }),
          " on " + when(r.feedback.createdAt), r.feedback.notes ? el("q", { text: r.feedback.notes }) : null)))
        : empty("No false-positive report for this prediction.")));
  }

  // ---------------------------------------------------------------- refresh, auth, wiring

  async function refresh() {
    for (const k of Object.keys(perfCache)) delete perfCache[k];
    try {
      await Promise.all([
        guarded("rate-tiles", loadRate),
        guarded("model-state", loadModel),
        guarded("user-result", loadUser),
      ]);
      await guarded("quality", loadQuality); // reuses the performance fetched by loadRate
      fill("error");
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      document.body.setAttribute("data-refreshed", String(Date.now()));
    } catch (err) {
      if (!(err instanceof AuthError)) fill("error", String(err.message || err));
    }
  }

  function schedule() {
    clearInterval(state.timer);
    state.timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  }

  function signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    $("main").hidden = false;
    $("signout").hidden = false;
    refresh();
    schedule();
  }

  function signOut(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearInterval(state.timer);
    $("main").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = reason || "";
    $("token").value = "";
    $("token").focus();
  }

  function refreshMs() {
    const raw = Number(new URLSearchParams(location.search).get("refresh"));
    return Number.isFinite(raw) && raw >= 1 ? raw * 1000 : 10_000;
  }

  function setRange(hours) {
    state.hours = hours;
    for (const b of document.querySelectorAll("#range button")) {
      const on = Number(b.getAttribute("data-hours")) === hours;
      b.classList.toggle("on", on);
      b.setAttribute("aria-pressed", String(on));
    }
    quiet(guarded("rate-trend", loadTrend));
    quiet(guarded("quality", loadQuality));
  }

  function wire() {
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("signout").addEventListener("click", () => signOut("Signed out."));
    for (const b of document.querySelectorAll("#range button")) {
      b.addEventListener("click", () => setRange(Number(b.getAttribute("data-hours"))));
    }
    $("user-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const user = $("user-id").value.trim();
      state.user = user || null;
      state.detailId = null;
      fill("detail");
      quiet(guarded("user-result", loadUser));
    });
    let resized = null; // charts are drawn at their pixel width: redraw after a resize settles
    window.addEventListener("resize", () => {
      clearTimeout(resized);
      resized = setTimeout(() => { if (sessionStorage.getItem(TOKEN_KEY)) refresh(); }, 400);
    });
    if (sessionStorage.getItem(TOKEN_KEY)) signIn(sessionStorage.getItem(TOKEN_KEY));
    else signOut("");
  }

  wire();
})();
