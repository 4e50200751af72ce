// Parley's agent console: the handoff queue and one conversation, both live, over the
// API alone (no build step, no CDN). Server text is only ever set as textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const session = {
  get: () => JSON.parse(sessionStorage.getItem("parley-agent") || "null"),
  set: (value) => sessionStorage.setItem("parley-agent", JSON.stringify(value)),
  clear: () => sessionStorage.removeItem("parley-agent"),
};
const state = { me: null, open: null, conversation: null, streams: {}, refreshing: null };

function headers(extra = {}) {
  const who = session.get() || {};
  const sent = { ...extra };
  if (who.key) sent.Authorization = `Bearer ${who.key}`;
  else if (who.name) sent["X-Parley-Agent"] = who.name; // development mode only
  return sent;
}

function say(text) {
  $("status").textContent = text;
}

async function api(method, path, body) {
  const options = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) options.body = JSON.stringify(body);
  const response = await fetch(path, options);
  const answer = response.status === 204 ? null : await response.json();
  if (!response.ok) {
    const error = new Error(answer?.error?.message || `HTTP ${response.status}`);
    error.code = answer?.error?.code;
    error.status = response.status;
    throw error;
  }
  return answer;
}

// An SSE stream read with fetch (EventSource cannot send the key), resumed after a drop
// from the last event's id. Resolves once the server has answered (the stream is open).
function follow(path, onEvent, name) {
  const controller = new AbortController();
  let lastId = null;
  let opened;
  const ready = new Promise((resolve) => (opened = resolve));
  async function run() {
    while (!controller.signal.aborted) {
      try {
        const sent = headers({ Accept: "text/event-stream" });
        if (lastId !== null) sent["Last-Event-ID"] = lastId;
        const response = await fetch(path, { headers: sent, signal: controller.signal });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        opened();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const event = { name: "message", data: "", id: null };
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) event.name = line.slice(6).trim();
              else if (line.startsWith("data:")) event.data += line.slice(5).trim();
              else if (line.startsWith("id:")) event.id = line.slice(3).trim();
            }
            if (event.id !== null) lastId = event.id;
            if (event.data && event.name !== "error") onEvent(event.name, JSON.parse(event.data));
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        say(`${name}: reconnecting`);
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  run();
  return { ready, close: () => controller.abort() };
}

function item(conversation) {
  const li = document.createElement("li");
  li.className = "item" + (conversation.id === state.open ? " open" : "");
  li.dataset.id = conversation.id;
  const handoff = conversation.handoff;
  li.textContent = `${conversation.goal_id} - ${handoff.reason}`;
  const small = document.createElement("small");
  const waited = Math.round(conversation.wait_seconds);
  small.textContent = handoff.agent ? `with ${handoff.agent}` : `waiting ${waited} s`;
  li.append(small);
  li.addEventListener("click", () => open(conversation.id));
  return li;
}

async function refreshQueue() {
  const [waiting, mine] = await Promise.all([
    api("GET", "/v1/handoffs/?state=waiting&limit=50"),
    api("GET", `/v1/handoffs/?state=assigned&limit=50&agent=${encodeURIComponent(state.me.name || "")}`),
  ]);
  $("waiting").replaceChildren(...waiting.items.map(item));
  $("waiting-count").textContent = `(${waiting.items.length})`;
  $("mine").replaceChildren(...mine.items.map(item));
}

function queueChanged() {
  // Many events at once (a burst of escalations): one refresh.
  clearTimeout(state.refreshing);
  state.refreshing = setTimeout(() => refreshQueue().catch((e) => say(e.message)), 100);
}

function addMessage(message) {
  if (document.querySelector(`#transcript li[data-id="${message.id}"]`)) return; // seen
  const li = document.createElement("li");
  li.dataset.id = message.id;
  li.dataset.role = message.role;
  li.textContent = message.content;
  const small = document.createElement("small");
  small.textContent = message.role === "agent" ? `agent ${message.author}` : message.role;
  li.prepend(small);
  $("transcript").append(li);
}

function showState(conversation) {
  state.conversation = conversation;
  const handoff = conversation.handoff;
  const mine = handoff && handoff.state === "assigned" && handoff.agent === state.me.name;
  const admin = state.me.role === "admin";
  $("conversation").dataset.state = handoff ? handoff.state : conversation.status;
  $("state").textContent = handoff
    ? `${handoff.state}${handoff.agent ? ` (${handoff.agent})` : ""}, ${conversation.status}`
    : conversation.status;
  $("claim").disabled = !(handoff && handoff.state === "waiting");
  for (const id of ["unassign", "return", "complete"]) $(id).disabled = !(mine || (admin && handoff?.state === "assigned"));
  $("reply").querySelector("button").disabled = !mine;
}

async function open(id) {
  state.open = id;
  state.streams.conversation?.close();
  $("empty").hidden = true;
  $("conversation").hidden = false;
  $("title").textContent = id;
  $("transcript").replaceChildren();
  // Subscribed first, then read: what happens in between arrives on the stream.
  const stream = follow(`/v1/conversations/${id}/events`, (name, event) => {
    if (state.open !== id) return;
    if (event.message) addMessage(event.message);
    if (event.handoff) showState({ ...state.conversation, status: event.status, handoff: event.handoff });
  }, "conversation");
  state.streams.conversation = stream;
  await stream.ready;
  const conversation = await api("GET", `/v1/conversations/${id}?messages_limit=200`);
  if (state.open !== id) return;
  conversation.messages.forEach(addMessage);
  showState(conversation);
  document.querySelectorAll("li.item").forEach((li) => li.classList.toggle("open", li.dataset.id === id));
}

async function act(path, body, done) {
  try {
    const conversation = await api("POST", `/v1/conversations/${state.open}/${path}`, body);
    showState(conversation);
    say(done);
    queueChanged();
  } catch (error) {
    say(error.code === "already_assigned" ? "another agent took it first" : error.message);
  }
}

async function start() {
  try {
    state.me = await api("GET", "/v1/me");
  } catch (error) {
    session.clear();
    $("login").hidden = false;
    say(error.message);
    return;
  }
  if (state.me.role === "client") {
    session.clear();
    $("login").hidden = false;
    say("this key is a client's, not an agent's");
    return;
  }
  $("who").textContent = `${state.me.name || "development"} (${state.me.role})`;
  $("login").hidden = true;
  $("console").hidden = false;
  state.streams.queue = follow("/v1/handoffs/events", queueChanged, "queue");
  await state.streams.queue.ready;
  await refreshQueue();
  say("live");
  document.body.dataset.ready = "true";
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const key = form.get("key").trim();
  const name = form.get("name").trim();
  session.set(key ? { key } : { name });
  start();
});
$("sign-out").addEventListener("click", () => {
  session.clear();
  location.reload();
});
$("claim").addEventListener("click", () => act("assign", undefined, "claimed"));
$("unassign").addEventListener("click", () => act("unassign", undefined, "back in the queue"));
$("return").addEventListener("click", () => act("resolve", { return_to_bot: true }, "back to the bot"));
$("complete").addEventListener("click", () => act("resolve", { return_to_bot: false }, "resolved"));
$("reply").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = event.target.elements.content;
  try {
    const sent = await api("POST", `/v1/conversations/${state.open}/messages`, { content: box.value });
    addMessage(sent.message);
    showState(sent.conversation);
    box.value = "";
  } catch (error) {
    say(error.message);
  }
});

if (session.get()) start();
else $("login").hidden = false;
