// Demo settings: defaults, and persistence in localStorage so they survive a reload.

const KEY = "stepaudio2-demo-settings";

export const DEFAULTS = Object.freeze({
  voice: "",
  instructions: "",
  vadThreshold: 0.5,
  silenceMs: 500,
  turnMode: "vad", // "vad" (server detects turns) or "ptt" (push to talk: manual commit)
  transcribe: true,
  echoCancellation: true,
  noiseSuppression: true,
  autoGainControl: true,
  apiKey: "",
});

export function loadSettings() {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) || "{}");
    const merged = { ...DEFAULTS };
    for (const [k, v] of Object.entries(saved)) {
      if (k in DEFAULTS && typeof v === typeof DEFAULTS[k]) merged[k] = v;
    }
    return merged;
  } catch {
    return { ...DEFAULTS };
  }
}

export function saveSettings(settings) {
  try {
    localStorage.setItem(KEY, JSON.stringify(settings));
  } catch {
    // Storage can be full or disabled (private mode): the settings still apply to this visit.
  }
}
