// gpuguard web page: the chat, a conversation streamed from /v1/chat/completions.
"use strict";

const chat = {
  history: [], // {role, content} turns sent with every request: the model sees them all
  busy: false,
};

function addMessage(role, text) {
  const message = el("div", { class: `msg ${role}` }, text);
  $("chat-log").append(message);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return message;
}

function showWaiting(text) {
  let notice = $("gpu-waiting");
  if (!notice) {
    notice = el("div", { class: "gpu-wait", id: "gpu-waiting" }, el("span", { class: "spinner" }), el("span", { class: "text" }));
    $("chat-log").append(notice);
  }
  notice.querySelector(".text").textContent = text;
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
}

function hideWaiting() {
  const notice = $("gpu-waiting");
  if (notice) notice.remove();
}

function newChat() {
  if (chat.busy) return;
  chat.history = [];
  $("chat-log").replaceChildren($("chat-hint") || "");
  $("chat-input").focus();
}

async function sendChat(event) {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text || chat.busy) return;
  chat.busy = true;
  $("chat-input").value = "";
  $("chat-send").disabled = true;
  $("chat-new").disabled = true;
  const hint = $("chat-hint");
  if (hint) hint.remove();
  addMessage("user", text);
  const turns = [...chat.history, { role: "user", content: text }];
  let answer = null;
  let content = "";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({
        model: $("chat-model").value,
        messages: turns,
        stream: true,
        retrieval: $("chat-retrieval").checked,
      }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || response.statusText);
    }
    for await (const payload of sseData(response)) {
      if (payload.error) throw new Error(payload.error.message);
      if (payload.gpuguard && payload.gpuguard.status === "waiting") {
        showWaiting(payload.gpuguard.message);
        continue;
      }
      if (payload.gpuguard && payload.gpuguard.status === "granted") {
        hideWaiting();  // the chat holds the GPU now, before its first token
        continue;
      }
      const delta = (payload.choices && payload.choices[0] && payload.choices[0].delta) || {};
      if (delta.content) {
        hideWaiting();
        if (!answer) answer = addMessage("assistant", "");
        content += delta.content;
        answer.textContent = content;
        $("chat-log").scrollTop = $("chat-log").scrollHeight;
      }
    }
    hideWaiting();
    if (!answer) addMessage("assistant", "(empty answer)");
    // Only a turn that got its answer joins the conversation.
    chat.history = [...turns, { role: "assistant", content }];
  } catch (error) {
    hideWaiting();
    addMessage("error", `Error: ${error.message}`);
  } finally {
    chat.busy = false;
    $("chat-send").disabled = false;
    $("chat-new").disabled = false;
  }
}
