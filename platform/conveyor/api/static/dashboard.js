// The Conveyor dashboard: polls /dashboard/data and draws it; no library, no CDN.
"use strict";

const REFRESH_MS = 2000;
const RECENT_ROWS = 30;
const KEY = "conveyor-api-key";
const $ = (selector, root = document) => root.querySelector(selector);
const forms = new Map(); // function name -> its invoke form, kept across refreshes
const trainForms = new Map(); // function name -> its training form, kept across refreshes
let minutes = 15;

function apiKey() {
  return sessionStorage.getItem(KEY);
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  const response = await fetch(path, { ...options, headers });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  return { status: response.status, body };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function fmt(value, unit = "", digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return `${Number(value).toFixed(digits)}${unit}`;
}

function ms(seconds) {
  return seconds === null || seconds === undefined ? null : seconds * 1000;
}

function last(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
  return null;
}

// One line chart, as SVG: series are arrays of numbers (or null for no data).
function chart(title, series, colors, unit) {
  const width = 400, height = 70, pad = 4;
  const all = series.flat().filter((v) => v !== null);
  const top = Math.max(...all, 0) || 1;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  series.forEach((values, s) => {
    const step = (width - 2 * pad) / Math.max(values.length - 1, 1);
    let d = "";
    values.forEach((v, i) => {
      if (v === null) return;
      const x = pad + i * step, y = height - pad - (v / top) * (height - 2 * pad);
      const joined = i > 0 && values[i - 1] !== null;
      d += `${joined ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
      if (!joined && (i === values.length - 1 || values[i + 1] === null)) d += "h0.01"; // a lone point
    });
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", d);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", colors[s]);
    path.setAttribute("stroke-width", "2");
    path.setAttribute("stroke-linecap", "round");
    svg.append(path);
  });
  return el("figure", { class: "chart" }, svg,
    el("figcaption", { text: `${title}, last ${minutes} min (max ${fmt(top, unit, 2)})` }));
}

const FILE_MARK = "x-conveyor-file";

// A file field: a file picker, its accept list from the field's contentMediaType.
function filePicker(name, prop) {
  const attrs = { type: "file", name };
  if (prop.contentMediaType) attrs.accept = prop.contentMediaType;
  return el("input", attrs);
}

// Inputs for an object schema of simple fields (file fields as file pickers), or for a
// file input; a JSON text area for anything else. read(form) gives the input, and the
// files to send with it as parts of a multipart invoke.
function inputFields(schema) {
  if (schema[FILE_MARK]) {
    return { fields: [el("label", { text: "input (a file)" }, filePicker("file", schema))],
      read: (form) => ({ input: null, files: { "": form.file.files[0] } }) };
  }
  const props = schema.type === "object" && schema.properties ? schema.properties : null;
  const simple = (p) => p[FILE_MARK] || ["number", "integer", "string", "boolean"].includes(p.type);
  if (!props || !Object.values(props).every(simple)) {
    return { fields: [el("label", { text: "input (JSON)" }, el("textarea", { name: "json", rows: "3" }))], read: (form) => ({ input: JSON.parse(form.json.value || "null"), files: {} }) };
  }
  const fields = Object.entries(props).map(([name, prop]) =>
    el("label", { text: `${name}${prop.description ? ` (${prop.description})` : ""}` },
      prop[FILE_MARK] ? filePicker(name, prop) : el("input", { type: "text", name, placeholder: prop.type })));
  const read = (form) => {
    const input = {}, files = {};
    for (const [name, prop] of Object.entries(props)) {
      const raw = form[name].value;
      if (prop[FILE_MARK]) { if (form[name].files[0]) files[name] = form[name].files[0]; input[name] = null; }
      else if (prop.type === "number" || prop.type === "integer") input[name] = Number(raw);
      else if (prop.type === "boolean") input[name] = raw === "true";
      else if (raw !== "" || !("default" in prop)) input[name] = raw;
    }
    return { input, files };
  };
  return { fields, read };
}

// JSON, or multipart/form-data when there are files: the input as a part, a part per file.
async function send(name, input, files) {
  const path = `/functions/${name}/invoke`;
  if (!Object.keys(files).length) {
    return api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input }) });
  }
  const whole = files[""];
  if (whole) { // the input is itself a file: upload it, and send its url
    const made = await api(`/files?filename=${encodeURIComponent(whole.name)}`, {
      method: "POST", headers: { "content-type": whole.type || "application/octet-stream" }, body: whole });
    if (made.status >= 400) return made;
    return api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input: made.body.url }) });
  }
  const form = new FormData();
  form.append("input", JSON.stringify(input));
  for (const [field, file] of Object.entries(files)) form.append(field, file, file.name);
  return api(path, { method: "POST", body: form });
}

// An output's images as images and audio with a player (fetched with the key, shown from
// a blob: URL; other files as links).
async function showFiles(result, box) {
  box.replaceChildren();
  for (const file of result.files || []) {
    const response = await fetch(file.url, { headers: apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {} });
    if (!response.ok) continue;
    const url = URL.createObjectURL(await response.blob());
    const type = file.content_type || "";
    if (type.startsWith("image/")) box.append(el("img", { src: url, alt: file.filename || file.id }));
    else if (type.startsWith("audio/")) box.append(el("audio", { src: url, controls: "" }));
    else box.append(el("a", { href: url, download: file.filename || file.id, text: file.filename || file.id }));
  }
}

// A streaming invocation's events (Server-Sent Events read with fetch, which can send the
// key; EventSource cannot): onEvent(kind, data) for each; the result its done event carries.
async function follow(url, onEvent) {
  const response = await fetch(url, { headers: apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {} });
  if (!response.ok || !response.body) return null;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return null;
    pending += value;
    let end;
    while ((end = pending.indexOf("\n\n")) >= 0) {
      const block = pending.slice(0, end);
      pending = pending.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (!data.length) continue;
      const parsed = JSON.parse(data.join("\n"));
      if (kind === "done") { reader.cancel(); return parsed; }
      onEvent(kind, parsed);
    }
  }
}

// A pipeline's run: one item per step, its status as a badge (kept as it changes).
function drawRun(run, steps) {
  run.hidden = false;
  run.replaceChildren(...steps.map((step) => el("li", { "data-step": step.name },
    `${step.name} `, el("span", { class: `badge ${step.status}`, text: step.status }),
    el("span", { class: "muted", text: ` ${step.function}${step.for_each ? ` × ${step.invocations.length}` : ""}` }))));
}

function stepChanged(run, data) {
  const badge = run.querySelector(`li[data-step="${CSS.escape(data.step)}"] .badge`);
  if (badge) { badge.className = `badge ${data.status}`; badge.textContent = data.status; }
}

// Chunks as they come: text inline, anything else a JSON line; a run's steps as they change.
function streamed(output, bar, run) {
  output.textContent = "";
  return (kind, data) => {
    if (kind === "step") stepChanged(run, data);
    else if (kind === "output") {
      output.textContent += typeof data.output === "string" ? data.output : `${JSON.stringify(data.output)}\n`;
      output.dataset.chunks = String(Number(output.dataset.chunks || 0) + 1);
    } else if (kind === "progress") { bar.hidden = false; bar.value = data.fraction; }
  };
}

function invokeForm(fn) {
  if (forms.has(fn.name)) return forms.get(fn.name);
  const { fields, read } = inputFields(fn.input_schema || {});
  const output = el("pre", { class: "output", "aria-label": "result" });
  const shown = el("div", { class: "files", "aria-label": "output files" });
  const bar = el("progress", { max: "1", value: "0", hidden: "" });
  const run = el("ol", { class: "run", "aria-label": "steps", hidden: "" });
  const form = el("form", { class: "invoke", "data-function": fn.name }, ...fields,
    el("button", { type: "submit", text: `Invoke ${fn.name}` }), bar, run, output, shown);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    output.textContent = "…";
    let taken;
    try { taken = read(form); } catch (error) { output.textContent = `not JSON: ${error}`; return; }
    shown.replaceChildren();
    const sent = await send(fn.name, taken.input, taken.files);
    if (sent.status >= 400) { output.textContent = JSON.stringify(sent.body, null, 2); return; }
    let result = sent.body;
    delete output.dataset.status;
    delete output.dataset.chunks;
    if (result.steps) drawRun(run, result.steps);
    if (result.stream_url) result = (await follow(result.stream_url, streamed(output, bar, run))) || result;
    while (!["succeeded", "failed", "cancelled", "expired"].includes(result.status)) {
      if (result.progress) { bar.hidden = false; bar.value = result.progress.fraction; }
      output.textContent = `${result.status}${result.progress ? `: ${result.progress.message}` : ""}`;
      result = (await api(`${result.result_url || `/functions/${fn.name}/results/${result.id}`}?wait=1`)).body;
    }
    bar.hidden = true;
    if (result.steps) drawRun(run, result.steps);
    output.textContent = JSON.stringify(result.status === "succeeded" ? result.output : result.error, null, 2);
    output.dataset.status = result.status;
    if (result.status === "succeeded") await showFiles(result, shown);
  });
  const wrapper = el("details", {}, el("summary", { text: "Invoke" }), form);
  forms.set(fn.name, wrapper);
  return wrapper;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

// A function's schedules: each rule, its next tick and what its last runs came to.
function schedules(fn) {
  return el("div", { class: "schedules", "aria-label": "schedules" }, el("h4", { text: "Schedules" }),
    el("ul", {}, ...fn.schedules.map((s) => {
      const rule = s.cron ? `cron ${s.cron} (${s.timezone})` : `every ${s.every}`;
      const last = s.runs[0];
      return el("li", { "data-schedule": s.index },
        `${s.training ? "training " : ""}${rule}, next ${when(s.next_at)}`,
        last ? el("span", { class: "muted", text: ` · last ${when(last.at)}: ${last.outcome}` }) : null,
        last?.status ? el("span", { class: `badge ${last.status}`, text: last.status }) : null);
    })));
}

// A function's newest trainings, and a form that starts one.
function trainings(fn) {
  return el("div", { class: "trainings", "aria-label": "trainings" }, el("h4", { text: "Trainings" }),
    el("ul", {}, ...fn.trainings.map((t) => el("li", { "data-training": t.id },
      el("span", { class: `badge ${t.status}`, text: t.status }), ` ${when(t.created_at)} `,
      t.progress && t.status === "running" ? el("progress", { max: "1", value: String(t.progress.fraction) }) : null,
      t.output?.new_version ? el("span", { text: ` → ${t.output.new_version}${t.output.promoted ? " (serving)" : " (retained)"}` }) : null,
      t.error ? el("span", { class: "error-text", text: ` ${t.error.message}` }) : null))),
    trainForm(fn));
}

function trainForm(fn) {
  if (trainForms.has(fn.name)) return trainForms.get(fn.name);
  const input = el("textarea", { name: "training-input", rows: "3", "aria-label": "training input" });
  input.value = "{}";
  const promote = el("input", { type: "checkbox", name: "promote" });
  const answer = el("pre", { class: "output", "aria-label": "training answer" });
  const form = el("form", { class: "invoke train", "data-function": fn.name },
    el("label", {}, "input (JSON)", input), el("label", {}, promote, " serve the new version at once"),
    el("button", { type: "submit", text: `Train ${fn.name}` }), answer);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let value;
    try { value = JSON.parse(input.value); } catch (error) { answer.textContent = `not JSON: ${error}`; return; }
    const { body } = await api(`/functions/${fn.name}/trainings`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ input: value, promote: promote.checked }),
    });
    answer.textContent = body.id ? `started ${body.id}` : JSON.stringify(body, null, 2);
    refresh();
  });
  const wrapper = el("details", {}, el("summary", { text: "Train" }), form);
  trainForms.set(fn.name, wrapper);
  return wrapper;
}

function card(fn) {
  const w = fn.window || { rate: [], errors: [], p50: [], p95: [] };
  const rate = last(w.rate), errors = last(w.errors);
  const errorRate = rate ? (errors / rate) * 100 : null;
  const node = el("article", { class: "card", "data-function": fn.name },
    el("h3", {}, fn.name, el("span", { class: `badge ${fn.status}`, text: fn.status }),
      el("span", { class: "muted", text: fn.version || "" })),
    el("div", { class: "muted", text: fn.description || "" }),
    el("div", { class: "facts" },
      el("div", {}, el("b", { text: fn.queue || "–" }), el("span", { text: "queue" })),
      fn.environment ? el("div", { "data-environment": fn.environment, title: `its own Python environment ${fn.environment}` },
        el("b", { text: fn.environment.slice(0, 8) }), el("span", { text: "environment" })) : null,
      el("div", {}, el("b", { text: fn.workers ?? "–" }), el("span", { text: "workers" })),
      el("div", {}, el("b", { text: fn.depth ?? "–" }), el("span", { text: "waiting" })),
      el("div", {}, el("b", { text: fmt(rate, "/s") }), el("span", { text: "invocations" })),
      el("div", {}, el("b", { text: fmt(ms(last(w.p50)), " ms") }), el("span", { text: "p50 run time" })),
      el("div", {}, el("b", { text: fmt(ms(last(w.p95)), " ms") }), el("span", { text: "p95 run time" })),
      el("div", {}, el("b", { text: fmt(errorRate, " %") }), el("span", { text: "errors" })),
      fn.concurrency ? el("div", { "data-limit": "concurrency" }, el("b", { text: `${fn.running}/${fn.concurrency}` }),
        el("span", { text: "running/limit" })) : null,
      fn.max_queued ? el("div", { "data-limit": "max_queued" }, el("b", { text: `${fn.waiting}/${fn.max_queued}` }),
        el("span", { text: "waiting/limit" })) : null),
    el("div", { class: "charts" },
      chart("invocations/s, errors/s", [w.rate, w.errors], ["#3158c9", "#c0392b"], "/s"),
      chart("run time p50, p95", [w.p50.map(ms), w.p95.map(ms)], ["#1f8a4c", "#b7791f"], " ms")),
    fn.steps ? el("ol", { class: "pipeline", "aria-label": "pipeline steps" }, ...fn.steps.map((step) =>
      el("li", { text: `${step.name}: ${step.function}${step.for_each ? ` for each of ${step.for_each}` : ""}` }))) : null,
    fn.error ? el("div", { class: "error-text", text: fn.error }) : null,
    fn.warning ? el("div", { class: "muted", text: fn.warning }) : null,
    fn.status !== "error" || fn.version ? invokeForm(fn) : null,
    fn.schedules?.length ? schedules(fn) : null,
    fn.trainings ? trainings(fn) : null);
  return node;
}

function row(item) {
  const finished = item.finished_at ? new Date(item.finished_at * 1000).toLocaleTimeString() : "";
  return el("tr", { "data-id": item.id },
    el("td", { text: finished }),
    el("td", { text: item.function }),
    el("td", {}, el("span", { class: `badge ${item.status}`, text: item.status })),
    el("td", { text: fmt(item.duration_ms, " ms") }),
    el("td", { text: item.error_type || "" }),
    el("td", {}, link(item.result_url, "result"), " ", link(item.logs_url, "logs")));
}

// Results and logs need the key too: shown below the table rather than opened bare.
function link(url, text) {
  const a = el("a", { href: url, text });
  a.addEventListener("click", async (event) => {
    event.preventDefault();
    const { body } = await api(url);
    const detail = $("#detail");
    detail.hidden = false;
    detail.textContent = text === "logs" ? (body.logs || "(nothing was printed)") : JSON.stringify(body, null, 2);
  });
  return a;
}

async function refresh() {
  const problem = $("#problem");
  try {
    const { status, body } = await api("/dashboard/data");
    if (status !== 200) {
      problem.hidden = false;
      problem.textContent = status === 401 || status === 403
        ? "This API needs a key with read scopes: type it above."
        : `The API answered ${status}: ${body?.detail || ""}`;
      return;
    }
    problem.hidden = true;
    minutes = body.minutes;
    const open = new Set([...document.querySelectorAll(".card > details[open]")].map((d) => d.closest(".card")?.dataset.function));
    const training = new Set([...document.querySelectorAll(".trainings details[open]")].map((d) => d.closest(".card")?.dataset.function));
    $("#functions").replaceChildren(...body.functions.map(card));
    for (const name of open) forms.get(name)?.setAttribute("open", "");
    for (const name of training) trainForms.get(name)?.setAttribute("open", "");
    $("#recent tbody").replaceChildren(...body.recent.slice(0, RECENT_ROWS).map(row));
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    problem.hidden = false;
    problem.textContent = `Cannot reach the API: ${error}`;
  }
}

$("#api-key").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, event.target.key.value.trim());
  refresh();
});
refresh();
setInterval(refresh, REFRESH_MS);
