// The demo page: connects microphone, speaker and the realtime session, and renders the UI.

import { Microphone, RATE, Speaker } from "./audio-io.js";
import {
  BENIGN_ERRORS,
  RealtimeConnection,
  bytesFromBase64,
  fetchJSON,
  sessionUpdate,
} from "./realtime.js";
import { loadSettings, saveSettings } from "./settings.js";

const $ = (id) => document.getElementById(id);

const STATES = {
  disconnected: ["Not connected", "Press Connect and allow the microphone."],
  connecting: ["Connecting…", "Opening the microphone and the session."],
  listening: ["Listening", "Go ahead, speak."],
  user: ["You are speaking", "Pause when you are done."],
  thinking: ["Thinking", "Step-Audio 2 is preparing its answer."],
  assistant: ["Speaking", "Interrupt at any time by speaking."],
};

const settings = loadSettings();
let conn = null;
let mic = null;
let speaker = null;
let state = "disconnected";
let info = {};
let defaultVoice = "";

// Read by tests through window.__demo (read-only getters below).
const stats = {
  bytesSent: 0,
  appendsSent: 0,
  bytesReceived: 0, // reply audio (pcm16 bytes) received
  bytesDiscarded: 0, // reply audio that arrived after the user interrupted it
  flushedSamples: 0, // queued reply audio dropped at barge-in
  truncates: [],
  latencies: [],
  errors: [],
  sessionVoice: null,
};

// The input timeline: [input ms at the end of a chunk, performance.now() when it was sent].
let inputMs = 0;
let sentTimeline = [];
let userSpeaking = false;
let pttHeld = false;
let muted = false; // muted: the microphone sends silence, so the server's turn timing goes on
let speechEndAt = null; // when the user's last turn ended (for the next reply's latency)
let activeResponse = null;
let currentItem = null; // the assistant item whose audio plays now
const items = new Map();
const userBubbles = new Map();
let pendingUserBubble = null;

// ---------------------------------------------------------------------------- state
function setState(next) {
  state = next;
  const [label, hint] = STATES[next];
  $("state-label").textContent = label;
  $("hint").textContent = next === "listening" && settings.turnMode === "ptt"
    ? "Hold the button or the space bar to talk." : hint;
  $("orb").dataset.state = next;
  const button = $("connect");
  button.textContent = next === "disconnected" ? "Connect" : "Disconnect";
  button.classList.toggle("primary", next === "disconnected");
  button.disabled = next === "connecting";
  $("mute").disabled = next === "disconnected" || next === "connecting";
}

function setMuted(on) {
  muted = on;
  const button = $("mute");
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? "Unmute" : "Mute";
}

function settle() {
  // Back to listening once nothing is said, generated or played.
  if (!conn || userSpeaking || pttHeld || activeResponse) return;
  if (speaker && speaker.queued > 0) return;
  setState("listening");
}

// ---------------------------------------------------------------------------- errors
function showError(message, detail = "") {
  stats.errors.push(message);
  const li = document.createElement("li");
  li.className = "error";
  const text = document.createElement("span");
  text.textContent = detail ? `${message} — ${detail}` : message;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "dismiss";
  close.setAttribute("aria-label", "Dismiss error");
  close.textContent = "×";
  close.onclick = () => li.remove();
  li.append(text, close);
  const list = $("errors");
  list.append(li);
  while (list.children.length > 4) list.firstElementChild.remove();
}

// ---------------------------------------------------------------------------- conversation
function addBubble(role, text) {
  $("empty-note")?.remove();
  const li = document.createElement("li");
  li.className = `msg ${role}`;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Step-Audio 2";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  const meta = document.createElement("div");
  meta.className = "meta";
  li.append(who, body, meta);
  $("conversation").append(li);
  li.scrollIntoView({ block: "end", behavior: "smooth" });
  return { li, body, meta };
}

function addTag(bubble, text, cls = "tag") {
  const tag = document.createElement("span");
  tag.className = cls;
  tag.textContent = text;
  bubble.meta.append(tag);
  return tag;
}

// Grey out the part of a reply's transcript that was never heard (cut in proportion, at a word).
function markUnheard(body, heardFraction) {
  const text = body.textContent;
  let cut = Math.round(text.length * Math.min(1, heardFraction));
  const space = text.lastIndexOf(" ", cut);
  if (space > 0 && cut < text.length) cut = space;
  if (cut >= text.length) return;
  const unheard = document.createElement("span");
  unheard.className = "unheard";
  unheard.textContent = text.slice(cut);
  body.replaceChildren(document.createTextNode(text.slice(0, cut)), unheard);
}

function userBubbleFor(itemId) {
  let bubble = itemId && userBubbles.get(itemId);
  if (!bubble && pendingUserBubble) {
    bubble = pendingUserBubble;
    pendingUserBubble = null;
    if (itemId) userBubbles.set(itemId, bubble);
  }
  if (!bubble) {
    bubble = addBubble("user", "…");
    if (itemId) userBubbles.set(itemId, bubble);
  }
  return bubble;
}

// ---------------------------------------------------------------------------- audio in
function onMicChunk(pcm, level) {
  if (muted) {
    pcm.fill(0);
    level = 0;
  }
  const db = 20 * Math.log10(level + 1e-6);
  const pct = Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
  $("level-bar").style.transform = `scaleX(${pct / 100})`;
  $("level-meter").setAttribute("aria-valuenow", String(Math.round(pct)));
  if (!conn || !conn.isOpen) return;
  if (settings.turnMode === "ptt" && !pttHeld) return;
  conn.appendAudio(pcm);
  stats.appendsSent += 1;
  stats.bytesSent += pcm.byteLength;
  inputMs += (pcm.length * 1000) / RATE;
  sentTimeline.push([inputMs, performance.now()]);
  if (sentTimeline.length > 6000) sentTimeline = sentTimeline.slice(-3000);
}

function wallAtInputMs(ms) {
  for (const [end, at] of sentTimeline) {
    if (end >= ms) return at - (end - ms);
  }
  return performance.now();
}

// ---------------------------------------------------------------------------- audio out
function onClock(played) {
  const item = currentItem;
  if (item && item.heardAt === null && item.startAt !== null && played > item.startAt) {
    item.heardAt = performance.now() - ((played - item.startAt) * 1000) / RATE;
    if (item.speechEndAt !== null) {
      const latency = Math.max(0, Math.round(item.heardAt - item.speechEndAt));
      stats.latencies.push(latency);
      $("latency").textContent = `${latency} ms`;
      addTag(item.bubble, `latency ${latency} ms`, "latency-tag").title =
        "From the end of your speech to the first audio heard";
    }
    if (!userSpeaking) setState("assistant");
  }
}

async function interruptPlayback() {
  const item = currentItem;
  if (!item || item.interrupted || item.startAt === null || !speaker) return false;
  if (speaker.played >= item.startAt + item.samples && activeResponse !== item.responseId) {
    return false; // already heard in full
  }
  item.interrupted = true;
  const { played, dropped } = await speaker.flush();
  stats.flushedSamples += dropped;
  const heard = Math.max(0, Math.min(item.samples, played - item.startAt));
  const audioEndMs = Math.floor((heard * 1000) / RATE);
  conn?.send({
    type: "conversation.item.truncate",
    item_id: item.id,
    content_index: 0,
    audio_end_ms: audioEndMs,
  });
  stats.truncates.push({
    item_id: item.id,
    audio_end_ms: audioEndMs,
    received_ms: Math.round((item.samples * 1000) / RATE),
  });
  item.bubble.li.classList.add("interrupted");
  markUnheard(item.bubble.body, heard / Math.max(1, item.samples));
  addTag(item.bubble, `interrupted at ${(audioEndMs / 1000).toFixed(1)} s`);
  return true;
}

// ---------------------------------------------------------------------------- server events
function onEvent(event) {
  switch (event.type) {
    case "session.created":
    case "session.updated": {
      const s = event.session || {};
      const voice = s.audio?.output?.voice ?? s.voice;
      if (voice) stats.sessionVoice = voice;
      renderChips();
      break;
    }
    case "input_audio_buffer.speech_started":
      userSpeaking = true;
      setState("user");
      userBubbleFor(event.item_id);
      interruptPlayback();
      break;
    case "input_audio_buffer.speech_stopped": {
      userSpeaking = false;
      const bubble = userBubbleFor(event.item_id);
      if (typeof event.audio_end_ms === "number") {
        speechEndAt = wallAtInputMs(event.audio_end_ms);
        if (typeof event.audio_start_ms === "number" && bubble.body.textContent === "…") {
          const secs = (event.audio_end_ms - event.audio_start_ms) / 1000;
          bubble.body.textContent = `Voice message, ${secs.toFixed(1)} s`;
        }
      } else {
        speechEndAt = performance.now();
      }
      setState("thinking");
      break;
    }
    case "input_audio_buffer.committed":
      userBubbleFor(event.item_id);
      break;
    case "conversation.item.input_audio_transcription.delta": {
      const bubble = userBubbleFor(event.item_id);
      if (!bubble.transcribing) bubble.body.textContent = "";
      bubble.transcribing = true;
      bubble.body.textContent += event.delta || "";
      break;
    }
    case "conversation.item.input_audio_transcription.completed":
      userBubbleFor(event.item_id).body.textContent = event.transcript || "(no words recognised)";
      break;
    case "conversation.item.input_audio_transcription.failed":
      addTag(userBubbleFor(event.item_id), "transcription failed");
      break;
    case "response.created":
      activeResponse = event.response?.id ?? "response";
      if (!userSpeaking) setState("thinking");
      break;
    case "response.output_item.added": {
      const item = event.item || {};
      if (item.type && item.type !== "message") break;
      startItem(item.id, event.response_id);
      break;
    }
    case "response.output_audio.delta":
      onAudioDelta(event);
      break;
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta": {
      const item = items.get(event.item_id) || startItem(event.item_id, event.response_id);
      if (!item.interrupted) item.bubble.body.textContent += event.delta || "";
      break;
    }
    case "response.done": {
      const r = event.response || {};
      if (!r.id || r.id === activeResponse) activeResponse = null;
      if (r.status === "failed") {
        const err = r.status_details?.error;
        showError("The reply failed", err?.message || err?.code || "");
      } else if (r.status === "incomplete") {
        const item = items.get(currentItem?.id);
        const reason = r.status_details?.reason;
        if (item) {
          addTag(item.bubble, reason === "max_output_tokens" ? "reached the length limit"
            : reason || "incomplete");
        }
      }
      settle();
      break;
    }
    case "conversation.item.truncated": {
      const sent = stats.truncates.find((t) => t.item_id === event.item_id);
      if (sent) sent.confirmed_ms = event.audio_end_ms;
      break;
    }
    case "error": {
      const e = event.error || {};
      if (BENIGN_ERRORS.has(e.code)) {
        console.info("benign realtime error", e);
      } else {
        showError(`Server error${e.code ? ` (${e.code})` : ""}`, e.message || "");
      }
      break;
    }
    default:
      break;
  }
}

function startItem(id, responseId) {
  const key = id || `item-${items.size + 1}`;
  if (items.has(key)) return items.get(key);
  const item = {
    id: key,
    responseId,
    startAt: null,
    samples: 0,
    heardAt: null,
    interrupted: false,
    speechEndAt,
    bubble: addBubble("assistant", ""),
  };
  speechEndAt = null;
  items.set(key, item);
  currentItem = item;
  return item;
}

function onAudioDelta(event) {
  const bytes = bytesFromBase64(event.delta || "");
  stats.bytesReceived += bytes.length;
  const item = items.get(event.item_id) || currentItem || startItem(event.item_id, event.response_id);
  if (item.interrupted || !speaker) {
    stats.bytesDiscarded += bytes.length;
    return;
  }
  const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const samples = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
  item.samples += samples.length; // before push(): it transfers (detaches) the buffer
  const at = speaker.push(samples);
  if (item.startAt === null) item.startAt = at;
}

// ---------------------------------------------------------------------------- connection
async function connect() {
  setState("connecting");
  try {
    speaker = new Speaker({ onClock, onDrained: settle });
    await speaker.start();
    mic = new Microphone(onMicChunk);
    await mic.start(settings);
    conn = new RealtimeConnection({ apiKey: settings.apiKey, onEvent, onClose });
    await conn.open();
    conn.send(sessionUpdate(settings));
    setState("listening");
  } catch (err) {
    const message = err?.name === "NotAllowedError"
      ? "Microphone access was refused" : "Could not connect";
    showError(message, err?.message || String(err));
    await teardown();
  }
}

function onClose({ code, reason, clean }) {
  if (!clean) showError("The connection closed", `code ${code}${reason ? `: ${reason}` : ""}`);
  conn = null;
  teardown();
}

async function teardown() {
  const c = conn;
  conn = null;
  c?.close();
  await mic?.stop().catch(() => {});
  await speaker?.stop().catch(() => {});
  mic = null;
  speaker = null;
  userSpeaking = false;
  pttHeld = false;
  setMuted(false);
  activeResponse = null;
  currentItem = null;
  $("level-bar").style.transform = "scaleX(0)";
  setState("disconnected");
}

// ---------------------------------------------------------------------------- push to talk
function pttDown() {
  if (!conn || pttHeld || settings.turnMode !== "ptt") return;
  pttHeld = true;
  $("ptt").classList.add("held");
  interruptPlayback();
  if (activeResponse) conn.send({ type: "response.cancel" });
  pendingUserBubble = addBubble("user", "…");
  setState("user");
}

function pttUp() {
  if (!pttHeld) return;
  pttHeld = false;
  $("ptt").classList.remove("held");
  if (!conn) return;
  conn.send({ type: "input_audio_buffer.commit" });
  conn.send({ type: "response.create" });
  speechEndAt = performance.now();
  setState("thinking");
}

// ---------------------------------------------------------------------------- server info
async function loadInfo() {
  try {
    info = (await fetchJSON("/v1/info", settings.apiKey)) || {};
  } catch (err) {
    showError("Could not read the server's info", err.message);
    info = {};
  }
  $("random-banner").hidden = !info.test_checkpoint;
  defaultVoice = info.default_voice || defaultVoice;
  renderChips();
}

async function loadVoices(select) {
  let body;
  try {
    body = await fetchJSON("/v1/voices", settings.apiKey);
  } catch (err) {
    showError("Could not list the voices", err.message);
    return;
  }
  // GET /v1/voices: {object: "list", data: [{id}], default}
  const names = (body?.data || []).map((v) => v.id);
  defaultVoice = body?.default || defaultVoice;
  const el = $("voice");
  el.replaceChildren();
  const first = document.createElement("option");
  first.value = "";
  first.textContent = defaultVoice ? `Server default (${defaultVoice})` : "Server default";
  el.append(first);
  for (const name of names) {
    const opt = document.createElement("option");
    opt.value = name;
    opt.textContent = name;
    el.append(opt);
  }
  const wanted = select ?? settings.voice;
  el.value = names.includes(wanted) ? wanted : "";
  if (el.value !== settings.voice) updateSetting("voice", el.value);
  renderChips();
}

async function uploadVoice() {
  const file = $("voice-file").files[0];
  const name = $("voice-new-name").value.trim();
  const status = $("upload-status");
  if (!file || !name) {
    status.textContent = "Choose a WAV file and a name first.";
    return;
  }
  const form = new FormData();
  form.append("name", name);
  form.append("file", file);
  status.textContent = "Uploading…";
  try {
    await fetchJSON("/v1/voices", settings.apiKey, { method: "POST", body: form });
    await loadVoices(name);
    status.textContent = `Voice “${name}” added.`;
  } catch (err) {
    status.textContent = "";
    showError("The voice was not added", err.message);
  }
}

function renderChips() {
  $("model-name").textContent = info.model || "step-audio-2-mini";
  $("voice-name").textContent =
    stats.sessionVoice || settings.voice || defaultVoice || "default";
}

// ---------------------------------------------------------------------------- settings
const SESSION_KEYS = new Set([
  "voice", "instructions", "vadThreshold", "silenceMs", "turnMode", "transcribe",
]);
const MIC_KEYS = new Set(["echoCancellation", "noiseSuppression", "autoGainControl"]);
let sessionTimer = null;
let restTimer = null;

function updateSetting(key, value) {
  settings[key] = value;
  saveSettings(settings);
  renderSettings();
  if (SESSION_KEYS.has(key) && conn) {
    clearTimeout(sessionTimer); // typing in a field sends one update, not one per key
    sessionTimer = setTimeout(() => conn?.send(sessionUpdate(settings)), 300);
  }
  if (key === "apiKey") {
    clearTimeout(restTimer); // the REST API may need the key too: read info and voices again
    restTimer = setTimeout(() => {
      loadInfo();
      loadVoices();
    }, 500);
  }
  if (MIC_KEYS.has(key) && mic) {
    mic.applyProcessing(settings).catch((err) => showError("Microphone setting", err.message));
  }
}

function renderSettings() {
  $("vad-threshold-value").textContent = settings.vadThreshold.toFixed(2);
  const ptt = settings.turnMode === "ptt";
  $("ptt-row").hidden = !ptt;
  $("vad-threshold").disabled = ptt;
  $("silence-ms").disabled = ptt;
  renderChips();
}

function bindSettings() {
  for (const el of document.querySelectorAll("[data-setting]")) {
    const key = el.dataset.setting;
    if (el.type === "checkbox") el.checked = settings[key];
    else if (el.type === "radio") el.checked = el.value === settings[key];
    else el.value = settings[key];
    el.addEventListener("change", () => {
      let value;
      if (el.type === "checkbox") value = el.checked;
      else if (el.type === "range" || el.type === "number") {
        value = Number(el.value);
        if (!Number.isFinite(value)) return;
      } else value = el.value;
      updateSetting(key, value);
    });
    if (el.tagName === "TEXTAREA" || el.type === "range") {
      el.addEventListener("input", () => {
        updateSetting(key, el.type === "range" ? Number(el.value) : el.value);
      });
    }
  }
  renderSettings();
}

// ---------------------------------------------------------------------------- wiring
function init() {
  bindSettings();
  $("connect").addEventListener("click", () => (conn || mic ? teardown() : connect()));
  $("voice-upload").addEventListener("click", uploadVoice);
  $("mute").addEventListener("click", () => setMuted(!muted));
  const ptt = $("ptt");
  ptt.addEventListener("pointerdown", pttDown);
  for (const ev of ["pointerup", "pointerleave", "pointercancel"]) ptt.addEventListener(ev, pttUp);
  const typing = (t) => t.closest("input, textarea, select");
  document.addEventListener("keydown", (e) => {
    if (e.code === "Space" && !e.repeat && !typing(e.target) && settings.turnMode === "ptt") {
      e.preventDefault();
      pttDown();
    }
  });
  document.addEventListener("keyup", (e) => {
    if (e.code === "Space" && pttHeld) {
      e.preventDefault();
      pttUp();
    }
  });
  setState("disconnected");
  loadInfo();
  loadVoices();
}

Object.defineProperty(window, "__demo", {
  value: Object.freeze({
    get state() { return state; },
    get muted() { return muted; },
    get connected() { return conn !== null && conn.isOpen; },
    get playbackClockMs() { return speaker ? (speaker.played * 1000) / RATE : 0; },
    get queuedMs() { return speaker ? (speaker.queued * 1000) / RATE : 0; },
    get bytesReceived() { return stats.bytesReceived; },
    get audioReceivedMs() { return stats.bytesReceived / 2 / (RATE / 1000); },
    get audioDiscardedMs() { return stats.bytesDiscarded / 2 / (RATE / 1000); },
    get flushedMs() { return (stats.flushedSamples * 1000) / RATE; },
    get bytesSent() { return stats.bytesSent; },
    get appendsSent() { return stats.appendsSent; },
    get truncatesSent() { return stats.truncates.map((t) => ({ ...t })); },
    get lastLatencyMs() { return stats.latencies.at(-1) ?? null; },
    get latencies() { return [...stats.latencies]; },
    get errors() { return [...stats.errors]; },
    get model() { return $("model-name").textContent; },
    get voice() { return $("voice-name").textContent; },
    get randomCheckpoint() { return !$("random-banner").hidden; },
  }),
});

init();
