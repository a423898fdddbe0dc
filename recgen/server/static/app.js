// recgen web chat: keeps the conversation in the page and sends all of it each turn (the server is stateless).
// All text from the server is inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log");
const state = { messages: [], model: "recgen", busy: false };

// Kept in sessionStorage (not persistent storage): the API key is gone when the tab closes and is not shared with other tabs.
const saved = (key) => sessionStorage.getItem("recgen." + key) || "";
$("api-key").value = saved("apiKey");
$("user-id").value = saved("userId");
$("api-key").addEventListener("change", (e) => { sessionStorage.setItem("recgen.apiKey", e.target.value); loadStatus(); });
$("user-id").addEventListener("change", (e) => sessionStorage.setItem("recgen.userId", e.target.value));

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function loadStatus() {
  const status = $("status");
  try {
    // behind an API key, /healthz shows its details only to requests that send the key
    const health = await (await fetch("/healthz", { headers: headers() })).json();
    state.model = health.model || "recgen";
    status.textContent = health.items === undefined ? "server ok (enter the API key for details)"
      : `${health.model} · ${health.items} items` + (health.dataset ? ` · ${health.dataset}` : "");
    status.className = "status ok";
  } catch (err) {
    status.textContent = "server unreachable";
    status.className = "status bad";
  }
}

function scrollDown() { log.scrollTop = log.scrollHeight; }

function addUser(text) {
  const hint = $("hint");
  if (hint) hint.remove();
  log.appendChild(el("div", "msg user", text));
  scrollDown();
}

// Draws a reply into `box` (a new one when none is given): first with the ranked items alone while their
// reasons are still being written (`pending`), then again, in the same place, with the reasons.
function renderAssistant(data, box, pending) {
  if (!box) {
    box = el("div", "msg assistant");
    log.appendChild(box);
  }
  box.replaceChildren();
  const extra = data.recgen || {};
  for (const note of extra.notes || []) box.appendChild(el("p", "note", note));
  if (extra.reasons_missing) box.appendChild(el("p", "note", "The reasons were not ready in time; the items are shown without them."));
  const recs = data.recommendations || [];
  const filters = extra.filters || [];
  if (filters.length) {
    const chips = el("div", "chips");
    for (const f of filters) chips.appendChild(el("span", "chip", f));
    box.appendChild(chips);
  }
  if (recs.length) {
    box.appendChild(el("div", "header-line", `${recs.length} pick${recs.length === 1 ? "" : "s"} from the catalog`));
    const list = el("ol", "recs");
    for (const r of recs) {
      const li = el("li", "rec");
      li.dataset.itemId = r.item_id;
      li.appendChild(el("div", "rank", String(r.rank)));
      const body = el("div", "rec-body");
      const title = el("div", "rec-title", r.title);
      title.appendChild(el("span", "rec-id", "item " + r.item_id));
      body.appendChild(title);
      if (r.reason) body.appendChild(el("div", "reason", r.reason));
      else if (pending) body.appendChild(el("div", "reason writing", "writing the reason…"));
      const meta = el("div", "meta", `score ${Number(r.score).toFixed(3)}`);
      if (r.reason_source) {
        meta.appendChild(document.createTextNode(" · reason: "));
        meta.appendChild(el("span", "src-" + r.reason_source, r.reason_source === "model" ? "model, fact-checked" : "fallback"));
      }
      body.appendChild(meta);
      li.appendChild(body);
      list.appendChild(li);
    }
    box.appendChild(list);
  } else {
    const text = (data.choices && data.choices[0] && data.choices[0].message.content) || "No items.";
    box.appendChild(el("div", "reason", text));
  }
  scrollDown();
  return box;
}

// Reads the chat completion stream (server-sent events): the items arrive on a chunk of their own as soon as
// they are ranked, the reply text and the items with their reasons on the last chunk.
async function readStream(response, pending) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", content = "", box = null, final = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const chunk = JSON.parse(line.slice(6));
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = (chunk.choices || [])[0];
      if (choice && choice.delta && choice.delta.content) content += choice.delta.content;
      if (chunk.recommendations && !(choice && choice.finish_reason)) {
        pending.remove();
        box = renderAssistant({ recommendations: chunk.recommendations, recgen: chunk.recgen }, box, true);
      } else if (choice && choice.finish_reason) {
        final = { recommendations: chunk.recommendations, recgen: chunk.recgen,
                  choices: [{ message: { content: content } }] };
      }
    }
  }
  if (!final) throw new Error("the reply ended early");
  pending.remove();
  renderAssistant(final, box, false);
  return content;
}

function addError(message) {
  log.appendChild(el("div", "msg error", message));
  scrollDown();
}

async function send(text) {
  if (state.busy || !text.trim()) return;
  state.busy = true;
  $("send").disabled = true;
  addUser(text);
  state.messages.push({ role: "user", content: text });
  const pending = el("div", "msg pending", "ranking catalog items…");
  log.appendChild(pending);
  scrollDown();
  const body = {
    model: state.model,
    messages: state.messages,
    recgen: { k: Number($("k").value), mode: $("mode").value, reasons: true },
    stream: true,
  };
  const user = $("user-id").value.trim();
  if (user) body.recgen.user_id = user;
  try {
    const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      pending.remove();
      state.messages.pop();  // keep the conversation valid so the user can try again
      const message = (data.error && data.error.message) || `HTTP ${response.status}`;
      addError(`${response.status}: ${message}`);
      return;
    }
    const content = await readStream(response, pending);
    state.messages.push({ role: "assistant", content: content });
  } catch (err) {
    pending.remove();
    state.messages.pop();
    addError("request failed: " + err);
  } finally {
    state.busy = false;
    $("send").disabled = false;
    $("message").focus();
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value;
  $("message").value = "";
  send(text);
});

for (const button of document.querySelectorAll("button.example")) {
  button.addEventListener("click", () => send(button.textContent));
}

$("reset").addEventListener("click", () => {
  state.messages = [];
  log.replaceChildren();
  const hint = el("div", "hint", "New conversation. What are you looking for?");
  hint.id = "hint";
  log.appendChild(hint);
});

loadStatus();
