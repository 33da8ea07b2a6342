// The Squall console: a page over the same /v1 API and bearer tokens as
// every other client. The token is kept in this tab's session storage only.
// Every value from the API is put in the page as text (never as HTML).
"use strict";

const TOKEN_KEY = "squall-token";
const main = () => document.getElementById("main");
let refresh = null; // the running page's poll timer

function h(tag, attrs, ...children) {
  const el = tag === "svg" || SVG_TAGS.has(tag)
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
// Replaces `el`'s children (arrays flattened, absent ones skipped).
function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false && c !== ""));
}

const SVG_TAGS = new Set(["g", "rect", "line", "path", "text", "title", "defs", "marker"]);

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Authorization: `Bearer ${token}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("The token was refused: log in again.");
    throw new ApiError(401, body);
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// ---- formatting

const time = (ms) => (ms ? new Date(ms).toLocaleString() : "–");
function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  return s < 120 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}
function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
const usd = (x) => (x === undefined || x === null ? "–" : x >= 1 ? `$${x.toFixed(2)}` : `$${x.toFixed(6)}`);
const jobTook = (j) => (j.started_at_ms ? duration((j.finished_at_ms || Date.now()) - j.started_at_ms) : "–");
const stateCell = (s) => h("span", { class: `state state-${s}` }, s);

// ---- pages

function showLogin(message) {
  stopRefresh();
  document.getElementById("nav").hidden = true;
  whoami = undefined;
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true, size: 32 });
  const form = h("form", { class: "card login", "aria-labelledby": "login-title", onsubmit: async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      await api("/v1/jobs?limit=1");
      document.getElementById("nav").hidden = false;
      if (!location.hash || location.hash === "#/login") location.hash = "#/jobs";
      else route();
    } catch (err) {
      if (err.status !== 401) error.textContent = err.message;
    }
  } },
    h("h1", { id: "login-title" }, "Log in to Squall"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "muted" }, "Your API token (a --token value, or a principal's). It is kept in this tab only."),
    h("button", { type: "submit", class: "primary", id: "login" }, "Log in"));
  const error = h("p", { class: "error", role: "alert", id: "login-error" }, message || "");
  form.append(error);
  fill(main(), form);
  input.focus();
}

function stopRefresh() {
  if (refresh) clearTimeout(refresh);
  refresh = null;
}

function every(ms, fn) {
  const tick = async () => {
    try { await fn(); } catch (err) { if (err.status === 401) return; }
    if (refresh !== null) refresh = setTimeout(tick, ms);
  };
  refresh = setTimeout(tick, ms);
}

async function jobsPage(params) {
  const state = params.get("state") || "";
  const label = params.get("label") || "";
  const after = params.get("after") || "";
  const stateSelect = h("select", { id: "filter-state" },
    ["", "queued", "running", "succeeded", "failed", "cancelled"].map((s) =>
      h("option", { value: s, selected: s === state }, s || "any state")));
  const labelInput = h("input", { id: "filter-label", placeholder: "team:data", value: label, size: 16 });
  const filters = h("form", { class: "row", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (stateSelect.value) q.set("state", stateSelect.value);
    if (labelInput.value.trim()) q.set("label", labelInput.value.trim());
    location.hash = `#/jobs?${q}`;
  } },
    h("div", {}, h("label", { for: "filter-state" }, "State"), stateSelect),
    h("div", {}, h("label", { for: "filter-label" }, "Label"), labelInput),
    h("button", { type: "submit" }, "Filter"));
  const holder = h("div", { class: "table-wrap" });
  const error = h("p", { class: "error", role: "alert" });
  fill(main(), h("h1", {}, "Jobs"), filters, error, holder);
  const load = async () => {
    const q = new URLSearchParams({ limit: "25", order: "newest" });
    if (state) q.set("state", state);
    if (label) q.set("label", label);
    if (after) q.set("after", after);
    let list;
    try {
      list = await api(`/v1/jobs?${q}`);
      error.textContent = "";
    } catch (err) {
      error.textContent = err.message;
      return;
    }
    const rows = list.jobs.map((j) => h("tr", { "data-job": j.id },
      h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.id)),
      h("td", {}, stateCell(j.state)),
      h("td", { class: "hide-narrow" }, time(j.submitted_at_ms)),
      h("td", {}, jobTook(j)),
      h("td", {}, j.rows ?? "–"),
      h("td", { class: "hide-narrow" }, bytes(j.cost ? j.cost.bytes_scanned : j.stages.reduce((a, s) => a + s.bytes_scanned, 0))),
      h("td", {}, usd(j.cost && j.cost.usd)),
      h("td", { class: "sql" }, j.sql.length > 120 ? `${j.sql.slice(0, 120)}…` : j.sql)));
    const table = h("table", { id: "jobs" },
      h("thead", {}, h("tr", {}, ["Job", "State", "Submitted", "Took", "Rows", "Scanned", "Cost", "SQL"].map((c, i) =>
        h("th", { scope: "col", class: i === 2 || i === 5 ? "hide-narrow" : null }, c)))),
      h("tbody", {}, rows));
    const more = list.next
      ? h("p", {}, h("a", { href: `#/jobs?${new URLSearchParams({ ...(state && { state }), ...(label && { label }), after: list.next })}` }, "Older jobs →"))
      : null;
    // The refresh replaces the links: keep the keyboard's place among them.
    const focused = holder.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
    fill(holder, rows.length ? table : h("p", { class: "muted" }, "No jobs."), more || "");
    if (focused) {
      const again = [...holder.querySelectorAll("a")].find((a) => a.getAttribute("href") === focused);
      if (again) again.focus();
    }
  };
  await load();
  every(2000, load);
}

async function submitPage() {
  let tables = [];
  try { tables = (await api("/v1/tables?limit=1000")).tables; } catch (err) { /* shown below */ }
  const sql = h("textarea", { id: "sql", rows: 10, required: true, spellcheck: "false" });
  const tablesInput = h("textarea", { id: "tables", rows: 3, spellcheck: "false",
    placeholder: "one per line: a catalog NAME, or NAME=URL" });
  const labels = h("input", { id: "labels", placeholder: "team=data, owner=ana", size: 30 });
  const error = h("p", { class: "error", role: "alert", id: "submit-error" });
  // Catalog tables the SQL names go in the tables box unless given.
  sql.addEventListener("input", () => {
    const named = tables.filter((t) => new RegExp(`\\b${t.name}\\b`, "i").test(sql.value)).map((t) => t.name);
    const given = tablesInput.value.split("\n").map((l) => l.trim()).filter(Boolean);
    const merged = [...new Set([...given, ...named])];
    if (merged.length !== given.length) tablesInput.value = merged.join("\n");
  });
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const body = {
      sql: sql.value,
      tables: tablesInput.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
        const at = l.indexOf("=");
        return at < 0 ? { name: l } : { name: l.slice(0, at).trim(), url: l.slice(at + 1).trim() };
      }),
      labels: Object.fromEntries(labels.value.split(",").map((p) => p.trim()).filter(Boolean).map((p) => {
        const at = p.indexOf("=");
        return at < 0 ? [p, ""] : [p.slice(0, at).trim(), p.slice(at + 1).trim()];
      })),
    };
    try {
      const accepted = await api("/v1/jobs", { method: "POST", body });
      location.hash = `#/jobs/${encodeURIComponent(accepted.id)}`;
    } catch (err) {
      error.textContent = err.message;
    }
  } },
    h("label", { for: "sql" }, "SQL"), sql,
    h("label", { for: "tables" }, "Tables"), tablesInput,
    h("label", { for: "labels" }, "Labels"), labels,
    h("p", {}, h("button", { type: "submit", class: "primary", id: "submit" }, "Submit")), error);
  const catalog = h("div", { class: "card" }, h("h2", {}, "Catalog tables"),
    tables.length ? h("ul", {}, tables.map((t) => h("li", {}, h("strong", {}, t.name), " ",
      h("span", { class: "muted" }, t.columns.map((c) => `${c.name} ${c.data_type}`).join(", ")))))
      : h("p", { class: "muted" }, "None: give tables as NAME=URL."));
  fill(main(), h("h1", {}, "Submit a query"), form, catalog);
  sql.focus();
}

// Stage depth: 0 for stages that read no stage, else one more than its deepest input.
function layers(stages) {
  const depth = new Map();
  for (const s of stages) depth.set(s.stage, s.inputs.length ? 1 + Math.max(...s.inputs.map((i) => depth.get(i) ?? 0)) : 0);
  return depth;
}

function dagSvg(plan, progress) {
  const depth = layers(plan.stages);
  const columns = new Map();
  for (const s of plan.stages) {
    const d = depth.get(s.stage);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(s);
  }
  const W = 250, H = 102, GX = 60, GY = 20;
  const pos = new Map();
  for (const [d, list] of columns) list.forEach((s, i) => pos.set(s.stage, { x: 10 + d * (W + GX), y: 10 + i * (H + GY) }));
  const width = 20 + columns.size * (W + GX) - GX;
  const height = 20 + Math.max(...[...columns.values()].map((l) => l.length)) * (H + GY) - GY;
  const edges = plan.stages.flatMap((s) => s.inputs.map((i) => {
    const a = pos.get(i), b = pos.get(s.stage);
    return h("path", { class: "edge", d: `M${a.x + W},${a.y + H / 2} C${a.x + W + GX / 2},${a.y + H / 2} ${b.x - GX / 2},${b.y + H / 2} ${b.x - 4},${b.y + H / 2}` });
  }));
  const nodes = plan.stages.map((s) => {
    const p = pos.get(s.stage);
    const live = progress.get(s.stage);
    // A stage fused into another ran no tasks: that stage's tasks ran its plan.
    const fused = live && live.fused_into;
    const tasks = fused ? `run by the tasks of stage ${fused}` : live ? `${live.done}/${live.tasks} tasks` : "not started";
    const io = live ? `${bytes(live.bytes_scanned)} scanned, ${bytes(live.bytes_written)} written` : "";
    const rows = live ? `${live.rows_in} rows in → ${live.rows_out} out` : "";
    // How it reads each shuffle input: direct, or two-level through a combine step.
    const exchanges = (s.exchanges || []).map((e) => `reads stage ${e.input} ${e.mode}` +
      (e.combine_stage ? ` via ${e.step} stage ${e.combine_stage} (${e.producers} files into ${e.combiners})` : "") +
      `: ~${e.requests_direct} GETs direct, ~${e.requests_two_level} two-level — ${e.reason}`);
    const twoLevel = (s.exchanges || []).filter((e) => e.mode === "two-level").length;
    // Where its tasks run (--backend auto decides per stage), and why.
    const placement = s.placement || (live && live.placement);
    const where = placement ? { local: "in-process", lambda: "on Lambda", split: "split" }[placement.place] || placement.place : "";
    const ran = live && (live.local_tasks || live.lambda_tasks) ? ` (${live.local_tasks} here, ${live.lambda_tasks} on Lambda)` : "";
    const placed = placement ? [`runs ${where}${ran}: ${placement.reason}`] : [];
    const kind = [s.kind, twoLevel ? `two-level ×${twoLevel}` : "", where].filter(Boolean).join(" · ");
    const width = ["combine", "merge"].includes(s.kind) ? `${s.partitions} combined file${s.partitions === 1 ? "" : "s"}` : `${s.partitions} partitions`;
    return h("g", { class: `node${live && (live.finished_at_ms || fused) ? " done" : ""}`, "data-stage": s.stage, "data-kind": s.kind,
      "data-place": placement ? placement.place : "", transform: `translate(${p.x},${p.y})` },
      h("title", {}, [`stage ${s.stage}: ${s.kind}, ${width}, writes ${s.output}`, ...placed, ...exchanges].join("\n")),
      h("rect", { width: W, height: H }),
      h("text", { x: 10, y: 20, "font-weight": 700 }, `Stage ${s.stage} · ${kind}`),
      h("text", { x: 10, y: 38 }, `${tasks} · ${width}`),
      h("text", { x: 10, y: 56 }, rows),
      h("text", { x: 10, y: 74 }, io),
      h("text", { x: 10, y: 92 }, `→ ${s.output}`));
  });
  return h("svg", { id: "dag", width, height, role: "img", "aria-label": `Stage graph of ${plan.stages.length} stages` },
    h("defs", {}, h("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
      h("path", { d: "M0,0 L10,5 L0,10 z", fill: "#57606a" }))),
    edges, nodes);
}

// How an attempt is coloured: backup, retried (failed, and the task went on),
// failed (the task's last), cancelled (superseded), running, succeeded.
function attemptClass(a, attempts) {
  if (a.outcome === "running") return "running";
  if (a.outcome === "superseded") return "cancelled";
  if (a.backup && a.outcome === "succeeded") return "backup";
  if (a.outcome === "failed") {
    const later = attempts.some((b) => b.stage === a.stage && b.task === a.task && b.attempt > a.attempt);
    return later ? "retried" : "failed";
  }
  return "succeeded";
}

function timelineSvg(attempts, view) {
  const started = attempts.filter((a) => a.started_at_ms);
  if (!started.length) return h("p", { class: "muted" }, "No attempts yet.");
  const t0 = Math.min(view.started_at_ms || Infinity, ...started.map((a) => a.started_at_ms));
  const t1 = Math.max(...started.map((a) => a.ended_at_ms || Date.now()), view.finished_at_ms || 0);
  const tasks = [...new Set(started.map((a) => `${a.stage}/${a.task}`))]
    .sort((x, y) => { const [a, b] = x.split("/").map(Number), [c, d] = y.split("/").map(Number); return a - c || b - d; });
  const row = new Map(tasks.map((k, i) => [k, i]));
  const LEFT = 110, ROW = 18, width = 900, span = Math.max(1, t1 - t0);
  const x = (t) => LEFT + ((t - t0) / span) * (width - LEFT - 10);
  const labels = tasks.map((k) => { const [s, t] = k.split("/"); return h("text", { x: 4, y: 30 + row.get(k) * ROW + 12 }, `stage ${s} task ${t}`); });
  const bars = started.map((a) => {
    const cls = attemptClass(a, attempts);
    const end = a.ended_at_ms || Date.now();
    const y = 30 + row.get(`${a.stage}/${a.task}`) * ROW + 2;
    const where = a.place === "lambda" ? " on Lambda" : a.place === "local" ? " in-process" : "";
    const what = `stage ${a.stage} task ${a.task} attempt ${a.attempt}: ${cls}${a.backup ? " (backup copy)" : ""}${where}, ${duration(a.elapsed_ms)}${a.message ? ` — ${a.message}` : ""}`;
    return h("rect", { class: `bar bar-${cls}${a.place === "lambda" ? " lambda" : ""}`, "data-outcome": cls, "data-attempt": `${a.stage}/${a.task}/${a.attempt}`,
      "data-place": a.place || "",
      x: x(a.started_at_ms), y, width: Math.max(2, x(end) - x(a.started_at_ms)), height: ROW - 5, tabindex: 0, "aria-label": what },
      h("title", {}, what));
  });
  const axis = [0, 0.25, 0.5, 0.75, 1].map((f) => h("text", { x: x(t0 + f * span), y: 16,
    "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle" }, duration(Math.round(f * span))));
  return h("svg", { id: "timeline", width, height: 40 + tasks.length * ROW, role: "img", "aria-label": `Timeline of ${started.length} attempts` },
    axis, labels, bars);
}

async function jobPage(id) {
  const title = h("h1", {}, `Job ${id}`);
  const facts = h("dl", { class: "facts" });
  const actions = h("p");
  const dag = h("div", { class: "scroll" });
  const timeline = h("div", { class: "scroll" });
  const result = h("div");
  const plan = h("pre", { id: "plan-text" });
  const error = h("p", { class: "error", role: "alert" });
  const legend = h("div", { class: "legend" }, ["succeeded", "retried", "failed", "backup", "cancelled", "running"].map((c) => h("span", { class: c }, c)));
  fill(main(), title, error, facts, actions, h("h2", {}, "Stages"), dag,
    h("h2", {}, "Task attempts"), legend, timeline, h("h2", {}, "Result"), result, h("h2", {}, "Plan"), plan);
  let planView = null, planFinal = false, resultShown = false;
  const load = async () => {
    const view = await api(`/v1/jobs/${encodeURIComponent(id)}`);
    error.textContent = "";
    fill(facts, 
      h("dt", {}, "State"), h("dd", { id: "job-state" }, stateCell(view.state)),
      h("dt", {}, "Submitted"), h("dd", {}, time(view.submitted_at_ms)),
      h("dt", {}, "Took"), h("dd", {}, jobTook(view)),
      h("dt", {}, "Rows"), h("dd", {}, view.rows ?? "–"),
      h("dt", {}, "Cost"), h("dd", {}, view.cost ? `${usd(view.cost.usd)} · ${view.cost.requests.get} GET, ${view.cost.requests.put} PUT · ${view.cost.cpu_seconds.toFixed(1)} CPU-s · ${bytes(view.cost.bytes_scanned)} scanned` : "–"),
      Object.keys(view.labels || {}).length ? [h("dt", {}, "Labels"), h("dd", {}, Object.entries(view.labels).map(([k, v]) => `${k}=${v}`).join(", "))] : [],
      view.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, view.error)] : [],
      view.trace_id ? [h("dt", {}, "Trace"), h("dd", { id: "job-trace" }, view.trace_url
        ? h("a", { href: view.trace_url, target: "_blank", rel: "noopener" }, view.trace_id)
        : h("code", {}, view.trace_id))] : [],
      h("dt", {}, "SQL"), h("dd", {}, h("code", {}, view.sql)));
    fill(actions, ["queued", "running"].includes(view.state)
      ? h("button", { type: "button", class: "danger", id: "cancel", onclick: async () => {
          try { await api(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" }); await load(); } catch (err) { error.textContent = err.message; }
        } }, "Cancel job") : "");
    // While the job runs its plan grows: combine steps are added as the
    // exchanges are chosen. Read once more when it has ended.
    if (!planFinal && view.state !== "queued") {
      const answer = await api(`/v1/jobs/${encodeURIComponent(id)}/plan`);
      if (answer.planned) planView = answer;
      planFinal = ["succeeded", "failed", "cancelled"].includes(view.state);
    }
    if (planView) {
      fill(dag, dagSvg(planView, new Map(view.stages.map((s) => [s.stage, s]))));
      plan.textContent = planView.text;
    } else {
      fill(dag, h("p", { class: "muted" }, "Planned when the job starts."));
    }
    const attempts = (await api(`/v1/jobs/${encodeURIComponent(id)}/attempts`)).attempts;
    fill(timeline, timelineSvg(attempts, view));
    if (view.state === "succeeded" && !resultShown) {
      resultShown = true;
      const page = await api(`/v1/jobs/${encodeURIComponent(id)}/result?limit=20`);
      fill(result, 
        h("div", { class: "table-wrap" }, h("table", { id: "result" },
          h("thead", {}, h("tr", {}, page.columns.map((c) => h("th", { scope: "col" }, c.name)))),
          h("tbody", {}, page.rows.map((r) => h("tr", {}, page.columns.map((c) => h("td", {}, r[c.name] === null ? "NULL" : String(r[c.name])))))))),
        h("p", { class: "muted" }, `${page.rows.length} of ${page.total} rows. `,
          h("button", { type: "button", id: "download-csv", onclick: () => download(id, "csv") }, "Download CSV"), " ",
          h("button", { type: "button", id: "download-json", onclick: () => download(id, "json") }, "Download JSON")),
        h("details", {}, h("summary", {}, `Parquet files (${page.files.length}) and manifest`),
          h("p", {}, "Manifest: ", h("code", {}, page.manifest_url)),
          h("ul", {}, page.files.map((f, i) => h("li", {},
            h("button", { type: "button", class: "parquet", onclick: () => downloadFile(id, i) }, `Download part ${i}`), " ",
            h("code", {}, f))))));
    } else if (view.state !== "succeeded") {
      fill(result, h("p", { class: "muted" }, view.state === "failed" || view.state === "cancelled" ? "No result." : "Once the job succeeds."));
    }
    if (["succeeded", "failed", "cancelled"].includes(view.state)) stopRefresh();
  };
  try { await load(); } catch (err) { error.textContent = err.message; return; }
  if (refresh === null) return;
  every(1000, load);
}

// Saves `blob` as `name` through a temporary link.
function save(blob, name) {
  const link = h("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// One of the result's Parquet files, fetched with the token.
async function downloadFile(id, index) {
  const response = await fetch(`/v1/jobs/${encodeURIComponent(id)}/files/${index}`, {
    headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` },
  });
  if (response.ok) save(await response.blob(), `${id}-${index}.parquet`);
}

// The whole result, paged through the API, as a file the browser saves.
async function download(id, format) {
  const rows = [];
  let offset = 0, columns = [];
  for (;;) {
    const page = await api(`/v1/jobs/${encodeURIComponent(id)}/result?offset=${offset}&limit=10000`);
    columns = page.columns.map((c) => c.name);
    rows.push(...page.rows);
    if (page.next_offset === null || page.next_offset === undefined) break;
    offset = page.next_offset;
  }
  const quote = (v) => (v === null ? "" : /[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
  const text = format === "csv"
    ? [columns.join(","), ...rows.map((r) => columns.map((c) => quote(r[c])).join(","))].join("\n") + "\n"
    : rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
  save(new Blob([text], { type: format === "csv" ? "text/csv" : "application/x-ndjson" }), `${id}.${format}`);
}

async function schedulesPage() {
  const list = (await api("/v1/schedules?limit=1000")).schedules;
  const error = h("p", { class: "error", role: "alert" });
  const rows = await Promise.all(list.map(async (s) => {
    const runs = (await api(`/v1/schedules/${encodeURIComponent(s.id)}/runs?limit=5&order=newest`)).jobs;
    const next = s.next_run_at_ms
      ? new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "long", timeZone: s.time_zone }).format(new Date(s.next_run_at_ms))
      : "–";
    const toggle = h("button", { type: "button", onclick: async () => {
      try { await api(`/v1/schedules/${encodeURIComponent(s.id)}`, { method: "PATCH", body: { enabled: !s.enabled } }); schedulesPage(); } catch (err) { error.textContent = err.message; }
    } }, s.enabled ? "Disable" : "Enable");
    return h("tr", {},
      h("td", {}, s.name || s.id), h("td", {}, `${s.cron} (${s.time_zone})`), h("td", {}, s.description),
      h("td", {}, s.enabled ? "yes" : "no"), h("td", {}, next),
      h("td", {}, runs.length ? runs.map((j) => h("a", { href: `#/jobs/${encodeURIComponent(j.id)}`, class: `state state-${j.state}`, title: time(j.submitted_at_ms) }, `${j.state} `)) : "–"),
      h("td", {}, toggle));
  }));
  fill(main(), h("h1", {}, "Schedules"), error,
    rows.length ? h("div", { class: "table-wrap" }, h("table", { id: "schedules" },
      h("thead", {}, h("tr", {}, ["Schedule", "Cron", "When", "Enabled", "Next run (its time zone)", "Recent runs", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows))) : h("p", { class: "muted" }, "No schedules."));
}

async function catalogPage() {
  const tables = (await api("/v1/tables?limit=1000")).tables;
  fill(main(), h("h1", {}, "Catalog"),
    tables.length ? tables.map((t) => h("section", { class: "card" },
      h("h2", {}, t.name), h("p", { class: "muted" }, `${t.url}${t.format ? ` (${t.format})` : ""}`),
      h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Column", "Type", "Nullable"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, t.columns.map((c) => h("tr", {}, h("td", {}, c.name), h("td", {}, c.data_type), h("td", {}, c.nullable ? "yes" : "no"))))))))
      : h("p", { class: "muted" }, "No catalog tables."));
}

// Who the token belongs to, shown beside the navigation (fetched once per login).
let whoami;
async function showWho() {
  if (!whoami) whoami = await api("/v1/whoami");
  const who = document.getElementById("who");
  who.textContent = `${whoami.name} (${whoami.role})`;
  who.title = whoami.role === "admin" ? "Sees every job and schedule" : "Sees its own jobs and schedules";
}

async function route() {
  stopRefresh();
  refresh = undefined; // a page may start polling
  if (!sessionStorage.getItem(TOKEN_KEY)) return showLogin();
  document.getElementById("nav").hidden = false;
  try { await showWho(); } catch (err) { if (err.status === 401) return; }
  const [path, query] = (location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href").slice(1) === `/${path.split("/")[1]}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    if (path.startsWith("/jobs/")) await jobPage(decodeURIComponent(path.slice(6)));
    else if (path === "/submit") await submitPage();
    else if (path === "/schedules") await schedulesPage();
    else if (path === "/catalog") await catalogPage();
    else await jobsPage(params);
  } catch (err) {
    if (err.status !== 401) fill(main(), h("p", { class: "error", role: "alert" }, err.message));
  }
  main().focus({ preventScroll: true });
}

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  whoami = undefined;
  showLogin();
});
window.addEventListener("hashchange", route);
route();
