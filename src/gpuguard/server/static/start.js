// gpuguard web page: live events (SSE) and start-up.
"use strict";

function connectEvents() {
  const query = state.token ? `?history=true&token=${encodeURIComponent(state.token)}` : "?history=true";
  const source = new EventSource(`/events${query}`);
  source.addEventListener("ready", () => {
    $("conn").classList.add("live");
    $("conn-label").textContent = "live";
    clearTimeline();
  });
  source.addEventListener("gpu", (message) => {
    onGpuEvent(JSON.parse(message.data));
    scheduleLaneRefresh();
    scheduleLogRefresh();
  });
  source.addEventListener("model", (message) => {
    const event = JSON.parse(message.data);
    onModelForTimeline(event);
    onModelEvent(event);
    scheduleLogRefresh();
  });
  source.addEventListener("job", (message) => {
    renderJob(JSON.parse(message.data));
    scheduleLogRefresh();
  });
  source.onerror = () => {
    $("conn").classList.remove("live");
    $("conn-label").textContent = state.tokenRefused ? "token needed (click)" : "reconnecting";
  };
}

function init() {
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) sendChat(event);
  });
  $("chat-new").addEventListener("click", newChat);
  $("conn").addEventListener("click", retryToken);
  $("models-refresh").addEventListener("click", refreshModels);
  $("db-form").addEventListener("submit", (e) => startJob(e, "/admin/jobs/schema-refresh", { database_url: $("db-url").value }, "db-error", $("db-url")));
  $("docs-form").addEventListener("submit", (e) => startJob(e, "/admin/jobs/rag", { path: $("docs-path").value }, "docs-error"));
  $("timeline-filter").addEventListener("change", refilterTimeline);
  $("logs-level").addEventListener("change", drawLogs);
  $("logs-filter").addEventListener("input", drawLogs);
  refreshLane();
  refreshModels();
  refreshJobs();
  drawLogs();
  refreshLogs();
  connectEvents();
  swimlane.start();
  setInterval(refreshLane, 1000);
  setInterval(refreshLogs, 2000);
  setInterval(() => {
    tickTimeline();
    tickModels();
    tickJobs();
  }, 1000);
}

document.addEventListener("DOMContentLoaded", () => redeemLoginLink().finally(init));
