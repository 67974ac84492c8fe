// gpuguard web page: the models table, the indexing jobs and the server log.
"use strict";

// --- models -----------------------------------------------------------------------------
const models = {
  list: [],
  backendOk: true,
  pending: new Map(), // model -> {action: "loading" | "unloading" | "prewarming", since}
};

const MODEL_BUSY = { load: "loading", unload: "unloading", prewarm: "prewarming" };
const MODEL_DONE = new Set(["loaded", "unloaded", "ready", "failed"]);

async function refreshModels() {
  try {
    const [list, status] = await Promise.all([api("/v1/models"), api("/admin/status")]);
    const backend = status.backend;
    models.backendOk = Boolean(backend.ok);
    $("backend-status").textContent = `${backend.backend}${backend.ok ? "" : " (down)"} \u00b7 model ${status.model || "none"}${status.prewarming ? " \u00b7 prewarming" : ""}`;
    models.list = list.data;
    const select = $("chat-model");
    const chosen = select.value;
    select.replaceChildren(...list.data.map((m) => el("option", { value: m.id }, m.id)));
    const current = list.data.find((m) => m.gpuguard && m.gpuguard.current);
    select.value = chosen || (current ? current.id : list.data.length ? list.data[0].id : "");
    drawModels();
  } catch (error) {
    $("backend-status").textContent = `unavailable: ${error.message}`;
  }
}

function drawModels() {
  $("models-table").tBodies[0].replaceChildren(...models.list.map(modelRow));
}

function modelRow(model) {
  const info = model.gpuguard || {};
  const pending = models.pending.get(model.id);
  let stateText = info.loaded ? "loaded" : "not loaded";
  let badge = info.loaded ? "loaded" : "";
  if (pending) {
    stateText = `${pending.action}\u2026 ${seconds(Math.max(0, serverNow() - pending.since))}`;
    badge = "loading";
  }
  const busy = Boolean(pending) || !models.backendOk;
  const action = (label, verb, applies, why) => el("button", {
    class: "small", type: "button", "data-action": verb, disabled: busy || !applies, title: applies ? null : why,
    onclick: () => modelAction(model.id, verb),
  }, label);
  return el("tr", { "data-model": model.id },
    el("td", { class: "model-name" }, model.id,
      info.vram_bytes ? el("span", { class: "muted vram" }, ` ${bytes(info.vram_bytes)} VRAM`) : ""),
    el("td", { class: "model-state" },
      el("span", { class: `badge ${badge}` }, stateText),
      info.current ? el("span", { class: "badge current" }, "current") : ""),
    el("td", { class: "actions" },
      action("Load", "load", !info.loaded, "already loaded"),
      action("Unload", "unload", Boolean(info.loaded), "not loaded"),
      action("Prewarm", "prewarm", true, "")));
}

async function modelAction(model, verb) {
  $("models-error").textContent = "";
  models.pending.set(model, { action: MODEL_BUSY[verb], since: serverNow() });
  drawModels();
  try {
    await api(`/admin/models/${verb}`, { json: { model } });
  } catch (error) {
    $("models-error").textContent = `${verb} ${model}: ${error.message}`;
  }
  models.pending.delete(model);
  await refreshModels();
}

/** A model event from any client: show the operation and its elapsed time while it runs. */
function onModelEvent(event) {
  const pending = models.pending.get(event.model);
  if (Object.values(MODEL_BUSY).includes(event.status)) {
    if (!pending) models.pending.set(event.model, { action: event.status, since: event.timestamp });
  } else if (MODEL_DONE.has(event.status)) {
    // A prewarm loads first: its "loaded" is halfway, its "ready" the end.
    const halfway = pending && pending.action === "prewarming" && event.status === "loaded";
    if (!halfway) models.pending.delete(event.model);
  }
  drawModels();
  refreshModels();
}

function tickModels() {
  if (models.pending.size) drawModels();
}

// --- indexing ---------------------------------------------------------------------------
const FINISHED = ["completed", "failed", "cancelled"];

function jobId(job) { return job.id || job.job_id; }

/** The word a user reads: a job between its start and its end is "running". */
function displayStatus(status) {
  return ["started", "progress"].includes(status) ? "running" : status;
}

function renderJob(job) {
  const id = jobId(job);
  const previous = state.jobs.get(id) || { issues: [] };
  const merged = { ...previous, ...job, status: displayStatus(job.status) };
  if (FINISHED.includes(previous.status) && !FINISHED.includes(merged.status)) {
    // A stale view (the start request's answer, or a job list) arriving after the job's
    // final event: the final state wins.
    Object.assign(merged, { status: previous.status, detail: previous.detail });
  }
  const issues = new Set([...(previous.issues || []), ...(job.issues || [])]);
  if (job.issue) issues.add(job.issue);
  merged.issues = [...issues];
  merged.done = Math.max(previous.done || 0, job.done || 0);
  merged.started_at ??= job.timestamp;  // an event before the job's own view: first seen
  if (merged.status === "running" && !merged.ran) {
    // Its pace counts from when it began to run, not from when it was queued.
    merged.ran = (previous.status === "queued" && job.timestamp) || merged.started_at;
  }
  state.jobs.set(id, merged);
  onJobForTimeline(merged, displayStatus(job.status));
  drawJob(id, merged);
  if (FINISHED.includes(merged.status) && !previous.final && job.kind === "job") {
    // The final event is short; the job's own view has the result, error and every issue.
    merged.final = true;
    api(`/admin/jobs/${encodeURIComponent(id)}`).then(renderJob).catch(() => {});
  }
}

/** "2.5/s, about 40 s left" for a running job with progress; "" before there is any. */
function pace(job) {
  if (job.status !== "running" || !job.done || !job.ran) return "";
  const elapsed = serverNow() - job.ran;
  if (elapsed <= 0) return "";
  const rate = job.done / elapsed;
  const shown = rate >= 10 ? Math.round(rate) : rate.toFixed(1);
  if (!job.total || job.done >= job.total) return `${shown}/s`;
  return `${shown}/s, about ${seconds((job.total - job.done) / rate)} left`;
}

/** Redraw the running jobs, so that their pace and time left move. */
function tickJobs() {
  for (const [id, job] of state.jobs) if (job.status === "running") drawJob(id, job);
}

/** Where a job stands in the list: running ones first, then queued, then finished; newest first in each. */
function jobRank(job) {
  const group = job.status === "running" ? 0 : job.status === "queued" ? 1 : 2;
  return [group, -(job.started_at || 0)];
}

/** Put the list in jobRank order, whatever order the jobs were first seen in. */
function orderJobs() {
  const list = $("jobs");
  const rank = (item) => jobRank(state.jobs.get(item.dataset.job) || {});
  const items = [...list.children].sort((a, b) => {
    const [ga, ta] = rank(a);
    const [gb, tb] = rank(b);
    return ga - gb || ta - tb;
  });
  if (items.some((item, i) => list.children[i] !== item)) list.replaceChildren(...items);
}

function drawJob(id, job) {
  let item = document.querySelector(`#jobs li[data-job="${CSS.escape(id)}"]`);
  if (!item) {
    item = el("li", { "data-job": id });
    $("jobs").prepend(item);
  }
  const total = job.total || 0;
  const done = job.done || 0;
  const finished = FINISHED.includes(job.status);
  const percent = finished ? 100 : total ? Math.min(100, Math.round((100 * done) / total)) : 0;
  const bar = el("div", { class: `bar ${job.status}`, role: "progressbar", "aria-valuenow": percent, "aria-valuemin": 0, "aria-valuemax": 100 }, el("span"));
  bar.firstChild.style.width = `${percent}%`;
  const cancel = finished ? "" :
    el("button", { class: "small", type: "button", onclick: () => api(`/admin/jobs/${id}/cancel`, { method: "POST" }).catch((e) => { $("docs-error").textContent = e.message; }) }, "Cancel");
  const count = [total ? `${done} / ${total}` : done ? String(done) : "", pace(job)].filter(Boolean).join(" \u00b7 ");
  const detail = job.status === "failed" && job.error ? job.error : job.detail || "";
  const issues = job.issues || [];
  item.className = `job st-${job.status}`;
  item.replaceChildren(
    el("div", { class: "job-head" },
      el("span", { class: "job-name" }, job.job || "job", " ", el("span", { class: `badge ${job.status}` }, job.status)),
      el("span", { class: "job-count" }, count, " ", cancel)),
    job.source ? el("div", { class: "job-source", title: job.source }, job.source) : "",
    bar,
    el("div", { class: `job-detail${job.status === "failed" ? " bad" : ""}` }, detail),
    issues.length ? el("ul", { class: "job-issues" }, ...issues.map((issue) => el("li", {}, issue))) : "");
  orderJobs();
}

async function startJob(event, path, json, errorId, clearOnStart = null) {
  event.preventDefault();
  $(errorId).textContent = "";
  try {
    renderJob(await api(path, { json }));
    // A database URL may carry a password: once the job runs, it leaves the screen.
    if (clearOnStart) clearOnStart.value = "";
  } catch (error) {
    $(errorId).textContent = error.message;
  }
}

async function refreshJobs() {
  try {
    const body = await api("/admin/jobs");
    for (const job of [...body.jobs].reverse()) renderJob(job);
  } catch (error) {
    // No job manager on this server: the indexing forms say so on use.
  }
}

// --- the server log ---------------------------------------------------------------------
const logs = { lines: [], after: 0, keep: 1000, levels: ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], pending: null, inflight: null };

/** Something happened (an event arrived): its log lines follow shortly. */
function scheduleLogRefresh() {
  if (logs.pending) return;
  logs.pending = setTimeout(() => {
    logs.pending = null;
    refreshLogs();
  }, 300);
}

/** Fetch the lines after the last one kept; one fetch at a time, each line kept once (by seq). */
function refreshLogs() {
  logs.inflight ??= fetchLogs().finally(() => { logs.inflight = null; });
  return logs.inflight;
}

async function fetchLogs() {
  try {
    const body = await api(`/admin/logs?after=${logs.after}&limit=500`);
    const fresh = body.lines.filter((line) => line.seq > logs.after);
    if (!fresh.length) return;
    logs.after = fresh[fresh.length - 1].seq;
    logs.lines.push(...fresh);
    logs.lines.splice(0, Math.max(0, logs.lines.length - logs.keep));
    drawLogs();
  } catch (error) {
    console.warn("logs", error);
  }
}

function drawLogs() {
  const minimum = logs.levels.indexOf($("logs-level").value);
  const needle = $("logs-filter").value.trim().toLowerCase();
  const shown = logs.lines.filter((line) =>
    logs.levels.indexOf(line.level) >= minimum &&
    (!needle || `${line.logger} ${line.message}`.toLowerCase().includes(needle)));
  const list = $("log-lines");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.replaceChildren(...shown.slice(-300).map((line) => el("li", { class: `lvl-${line.level.toLowerCase()}` },
    el("span", { class: "time" }, clockTime(line.timestamp)),
    el("span", { class: "level" }, line.level),
    el("span", { class: "logger" }, line.logger),
    el("span", { class: "message" }, line.message))));
  if (!shown.length) list.append(el("li", { class: "empty muted" }, logs.lines.length ? "no line matches the filter" : "no log lines yet"));
  if (atBottom) list.scrollTop = list.scrollHeight;
}
