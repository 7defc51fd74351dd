// MAIE's web page: upload, follow the task's Server-Sent Events, show the result.
// Plain JavaScript, no build step. Every value from the server reaches the page through
// textContent, never innerHTML.
"use strict";

const KEY_STORAGE = "maie.apiKey";
// Downloads come from the API (result.json and the exports the task wrote); set to null to build
// them in the page from the result document instead.
const FILES_ROUTE = "/v1/tasks/{id}/files/{name}";
const STAGES = ["PENDING", "PREPROCESSING", "PROCESSING_ASR", "PROCESSING_LLM", "COMPLETE"];

const $ = (id) => document.getElementById(id);
const templates = new Map();

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  const headers = Object.assign({ "X-API-Key": apiKey() }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${body.detail || response.statusText} (${body.code || response.status})`;
  } catch (e) {
    return `HTTP ${response.status} ${response.statusText}`;
  }
}

// --- the key -------------------------------------------------------------------------------
function showKeyState() {
  const saved = apiKey();
  $("key-state").textContent = saved
    ? "A key is saved for this tab (session storage); it is sent as X-API-Key."
    : "No key yet: the upload needs one.";
  $("api-key").value = "";
  $("api-key").placeholder = saved ? "•••••• (saved)" : "paste the key from DATA_DIR/api-key";
}

async function loadTemplates() {
  const select = $("template");
  if (!apiKey()) return;
  const response = await api("/v1/templates");
  if (!response.ok) {
    showError(`Could not load templates: ${await errorText(response)}`);
    return;
  }
  const body = await response.json();
  templates.clear();
  select.replaceChildren();
  for (const t of body.templates) {
    templates.set(t.template_id, t);
    const option = document.createElement("option");
    option.value = t.template_id;
    option.textContent = `${t.name} (${t.template_id})`;
    select.append(option);
  }
  updateTemplateState();
}

function updateTemplateState() {
  const wanted = $("feature-summary").checked;
  $("template").disabled = !wanted || templates.size === 0;
  const t = templates.get($("template").value);
  $("template-description").textContent = wanted && t ? t.description : "";
}

// --- upload --------------------------------------------------------------------------------
function setFile(file) {
  const input = $("file-input");
  if (file && input.files[0] !== file) {
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
  }
  $("drop-text").textContent = file ? `${file.name} (${(file.size / 1024).toFixed(0)} KB)` : "Drop an audio file here, or choose one";
}

async function submit(event) {
  event.preventDefault();
  showError("");
  if (!apiKey()) return showError("Enter the API key first.");
  const file = $("file-input").files[0];
  if (!file) return showError("Choose a recording first.");
  const form = new FormData();
  form.append("file", file, file.name);
  for (const box of document.querySelectorAll("input[name=features]:checked")) form.append("features", box.value);
  if ($("feature-summary").checked) form.append("template_id", $("template").value);
  $("submit").disabled = true;
  try {
    const response = await api("/v1/process", { method: "POST", body: form });
    if (response.status !== 202) return showError(`Upload refused: ${await errorText(response)}`);
    const { task_id } = await response.json();
    startProgress(task_id);
    await follow(task_id);
  } catch (e) {
    showError(`Upload failed: ${e}`);
  } finally {
    $("submit").disabled = false;
  }
}

// --- progress (Server-Sent Events over fetch, so the key can go in a header) ------------------
function startProgress(taskId) {
  $("progress-section").hidden = false;
  $("result-section").hidden = true;
  $("task-id").textContent = taskId;
  showStage({ status: "PENDING", progress: 0 });
}

function showStage(state) {
  const index = STAGES.indexOf(state.status);
  for (const li of document.querySelectorAll("#stages li")) {
    const i = STAGES.indexOf(li.dataset.stage);
    li.className = state.status === "FAILED" ? (i === 0 ? "failed" : "") : i < index ? "done" : i === index ? "current" : "";
  }
  const percent = state.status === "COMPLETE" ? 100 : state.progress || 0;
  $("progress").value = percent;
  $("percent").textContent = `${percent.toFixed(1)} %`;
  $("stage").textContent = state.status;
}

function parseEvent(block) {
  const event = { event: "message", data: "", id: null };
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.event = value;
    else if (field === "data") event.data += (event.data ? "\n" : "") + value;
    else if (field === "id") event.id = value;
  }
  return event.data || event.event !== "message" ? event : null;
}

// Returns true when the stream is over for good (result or error).
function handle(event) {
  if (event.event === "stage" || event.event === "progress") {
    showStage(JSON.parse(event.data));
    return false;
  }
  if (event.event === "result") {
    const doc = JSON.parse(event.data);
    showStage(doc);
    if (doc.status === "FAILED") showError(`The task failed: ${doc.error} (${doc.error_code})`);
    showResult(doc);
    return true;
  }
  if (event.event === "error") {
    showError(JSON.parse(event.data).detail);
    return true;
  }
  return false;
}

async function follow(taskId) {
  let lastId = null;
  for (let attempt = 0; attempt < 30; attempt++) {
    const headers = { Accept: "text/event-stream" };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    let response;
    try {
      response = await api(`/v1/status/${taskId}/events`, { headers });
    } catch (e) {
      await new Promise((r) => setTimeout(r, 2000));
      continue;
    }
    if (response.status === 204) return;
    if (!response.ok) return showError(`Progress stream: ${await errorText(response)}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
          const event = parseEvent(block);
          if (!event) continue;
          if (event.id !== null) lastId = event.id;
          if (handle(event)) return;
        }
      }
    } catch (e) {
      // the connection dropped: reconnect below and resume after the last event seen
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  showError("Lost the progress stream; the task may still finish (GET /v1/status).");
}

// --- the result ----------------------------------------------------------------------------
function clock(seconds) {
  const s = Math.max(0, Math.round(seconds * 10) / 10);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = (s % 60).toFixed(1).padStart(4, "0");
  return (h ? `${h}:${String(m).padStart(2, "0")}` : String(m)) + `:${rest}`;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function humanize(key) {
  const words = key.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// The summary, laid out by the template's JSON Schema: objects as headed sections, arrays as lists.
function renderValue(schema, value, inList = false) {
  schema = schema || {};
  if (value === null || value === undefined) return el("span", "—", "muted");
  if (Array.isArray(value)) {
    const list = el("ul");
    for (const item of value) {
      const li = el("li");
      li.append(renderValue(schema.items, item, true));
      list.append(li);
    }
    if (!value.length) list.append(el("li", "(none)", "muted"));
    return list;
  }
  if (typeof value === "object") {
    const props = schema.properties || {};
    const keys = [...Object.keys(props).filter((k) => k in value), ...Object.keys(value).filter((k) => !(k in props))];
    const nested = keys.some((k) => typeof value[k] === "object" && value[k] !== null);
    if (inList && !nested) {
      const line = el("span", null, "item");
      for (const k of keys) line.append(el("span", value[k]));
      return line;
    }
    const dl = el("dl");
    for (const k of keys) {
      dl.append(el("dt", (props[k] && props[k].title) || humanize(k)));
      const dd = el("dd");
      dd.append(renderValue(props[k], value[k]));
      dl.append(dd);
    }
    return dl;
  }
  return el("span", value);
}

function srt(segments, vtt) {
  const stamp = (t) => {
    const ms = Math.max(0, Math.round(t * 1000));
    const p = (n, w) => String(n).padStart(w, "0");
    const sep = vtt ? "." : ",";
    return `${p(Math.floor(ms / 3600000), 2)}:${p(Math.floor(ms / 60000) % 60, 2)}:${p(Math.floor(ms / 1000) % 60, 2)}${sep}${p(ms % 1000, 3)}`;
  };
  const blocks = segments.filter((s) => s.text).map((s, i) => `${vtt ? "" : `${i + 1}\n`}${stamp(s.start)} --> ${stamp(s.end)}\n${s.text}\n`);
  return (vtt ? "WEBVTT\n\n" : "") + blocks.join("\n");
}

function localExports(doc) {
  const r = doc.results || {};
  const files = { "result.json": [JSON.stringify(doc, null, 2), "application/json"] };
  const text = r.clean_transcript || r.raw_transcript;
  if (text) files["transcript.txt"] = [text + "\n", "text/plain"];
  if (r.segments && r.segments.length) {
    files["transcript.srt"] = [srt(r.segments, false), "application/x-subrip"];
    files["transcript.vtt"] = [srt(r.segments, true), "text/vtt"];
  }
  return files;
}

async function download(doc, name, local) {
  let blob;
  if (FILES_ROUTE) {
    const response = await api(FILES_ROUTE.replace("{id}", doc.task_id).replace("{name}", name));
    if (response.ok) blob = await response.blob();
    else if (!local) return showError(`Download failed: ${await errorText(response)}`);
  }
  if (!blob) blob = new Blob([local[0]], { type: local[1] });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${doc.task_id}-${name}`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function showResult(doc) {
  const r = doc.results || {};
  $("result-section").hidden = false;
  const downloads = $("downloads");
  downloads.replaceChildren();
  const local = localExports(doc);
  const names = FILES_ROUTE ? [...new Set(["result.json", ...Object.keys(doc.exports || {})])] : Object.keys(local);
  for (const name of names) {
    const button = el("button", `⬇ ${name}`, "secondary");
    button.type = "button";
    button.dataset.export = name;
    button.addEventListener("click", () => download(doc, name, local[name]));
    downloads.append(button);
  }
  const facts = $("facts");
  facts.replaceChildren();
  const m = doc.metrics || {};
  const v = doc.versions || {};
  const rows = [
    ["status", doc.status],
    ["language", r.language],
    ["audio", m.input_duration_seconds != null ? `${m.input_duration_seconds.toFixed(1)} s` : null],
    ["processing", m.processing_time_seconds != null ? `${m.processing_time_seconds.toFixed(1)} s (RTF ${m.rtf != null ? m.rtf.toFixed(3) : "–"})` : null],
    ["ASR model", v.asr_backend ? `${v.asr_backend.name} ${v.asr_backend.model_variant}` : null],
    ["summary model", v.summarization_llm ? v.summarization_llm.name : null],
  ];
  for (const [k, value] of rows) {
    if (value === null || value === undefined) continue;
    facts.append(el("dt", k), el("dd", value));
  }
  const list = $("transcript");
  list.replaceChildren();
  if (r.segments && r.segments.length) {
    for (const s of r.segments) {
      const li = el("li");
      li.append(el("time", `${clock(s.start)} – ${clock(s.end)}`), el("span", s.text));
      list.append(li);
    }
  } else if (r.raw_transcript || r.clean_transcript) {
    const li = el("li");
    li.append(el("time", ""), el("span", r.raw_transcript || r.clean_transcript));
    list.append(li);
  }
  $("clean-block").hidden = !r.clean_transcript;
  $("clean-transcript").textContent = r.clean_transcript || "";
  $("summary-block").hidden = !r.summary;
  const summary = $("summary");
  summary.replaceChildren();
  if (r.summary) {
    const template = templates.get((doc.request || {}).template_id);
    summary.append(renderValue(template ? template.schema : {}, r.summary));
  }
}

// --- wiring --------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  showKeyState();
  loadTemplates();
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("api-key").value.trim();
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    showKeyState();
    showError("");
    loadTemplates();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    showKeyState();
  });
  $("feature-summary").addEventListener("change", updateTemplateState);
  $("template").addEventListener("change", updateTemplateState);
  $("file-input").addEventListener("change", () => setFile($("file-input").files[0]));
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) setFile(e.dataTransfer.files[0]);
  });
  $("upload-form").addEventListener("submit", submit);
});
