// The realtime websocket: OpenAI Realtime protocol (GA names; beta names mapped on receipt).

const BETA_TO_GA = {
  "response.audio.delta": "response.output_audio.delta",
  "response.audio.done": "response.output_audio.done",
  "response.audio_transcript.delta": "response.output_audio_transcript.delta",
  "response.audio_transcript.done": "response.output_audio_transcript.done",
  "response.text.delta": "response.output_text.delta",
  "response.text.done": "response.output_text.done",
  "conversation.item.created": "conversation.item.added",
};

// Races of a normal conversation that are not failures (PROTOCOL.md "Strictness").
export const BENIGN_ERRORS = new Set([
  "response_cancel_not_active",
  "conversation_already_has_active_response",
  "item_retrieve_invalid_item_id",
  "input_audio_buffer_commit_empty",
]);

export const MODEL = "step-audio-2-mini";

/** The session.update for the current settings (GA session shape, pcm16 at 24 kHz). */
export function sessionUpdate(settings) {
  const pcm = { type: "audio/pcm", rate: 24000 };
  const turnDetection =
    settings.turnMode === "ptt"
      ? null
      : {
          type: "server_vad",
          threshold: settings.vadThreshold,
          silence_duration_ms: settings.silenceMs,
          create_response: true,
          interrupt_response: true,
        };
  const session = {
    type: "realtime",
    output_modalities: ["audio"],
    audio: {
      input: {
        format: pcm,
        turn_detection: turnDetection,
        transcription: settings.transcribe ? { model: MODEL } : null,
      },
      output: { format: pcm },
    },
  };
  if (settings.voice) session.audio.output.voice = settings.voice;
  if (settings.instructions.trim()) session.instructions = settings.instructions.trim();
  return { type: "session.update", session };
}

export function base64FromBytes(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function bytesFromBase64(text) {
  const s = atob(text);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}

/** One websocket session. Callbacks: onEvent(event), onClose({code, reason, clean}). */
export class RealtimeConnection {
  constructor({ apiKey, onEvent, onClose }) {
    this.apiKey = apiKey;
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.ws = null;
    this.nextId = 1;
    this.bytesSent = 0;
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/v1/realtime?model=${MODEL}`;
    // Browsers cannot set headers: the key travels as a subprotocol (PROTOCOL.md "Dialects").
    const protocols = ["realtime"];
    if (this.apiKey) protocols.push(`openai-insecure-api-key.${this.apiKey}`);
    return new Promise((resolve, reject) => {
      let opened = false;
      this.ws = new WebSocket(url, protocols);
      this.ws.onopen = () => {
        opened = true;
        resolve();
      };
      this.ws.onmessage = (e) => {
        let event;
        try {
          event = JSON.parse(e.data);
        } catch {
          console.warn("ignoring a frame that is not JSON", e.data);
          return;
        }
        if (event && BETA_TO_GA[event.type]) event.type = BETA_TO_GA[event.type];
        this.onEvent(event);
      };
      this.ws.onclose = (e) => {
        if (!opened) {
          reject(new Error(`the server refused the connection (close code ${e.code})`));
        } else {
          this.onClose({ code: e.code, reason: e.reason, clean: e.code === 1000 });
        }
        this.ws = null;
      };
    });
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(event) {
    if (!this.isOpen) return null;
    const eventId = `evt_web_${this.nextId++}`;
    const text = JSON.stringify({ event_id: eventId, ...event });
    this.bytesSent += text.length;
    this.ws.send(text);
    return eventId;
  }

  appendAudio(pcm16) {
    return this.send({
      type: "input_audio_buffer.append",
      audio: base64FromBytes(new Uint8Array(pcm16.buffer, pcm16.byteOffset, pcm16.byteLength)),
    });
  }

  close() {
    if (this.ws) this.ws.close(1000, "bye");
  }
}

/** Fetch JSON from the server's REST API (with the API key, when one is set). */
export async function fetchJSON(path, apiKey, init = {}) {
  const headers = { ...(init.headers || {}) };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const res = await fetch(path, { ...init, headers });
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    const detail = body && (body.error?.message || body.detail || JSON.stringify(body));
    throw new Error(`${path}: HTTP ${res.status}${detail ? ` (${detail})` : ""}`);
  }
  return body;
}
