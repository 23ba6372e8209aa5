// Microphone capture and speaker playback through AudioWorklets (24 kHz pcm16 on the wire).

export const RATE = 24000;

/** Microphone: getUserMedia -> capture worklet -> onChunk(Int16Array, level) every 20 ms. */
export class Microphone {
  constructor(onChunk) {
    this.onChunk = onChunk;
    this.ctx = null;
    this.stream = null;
  }

  async start(processing) {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        channelCount: 1,
        echoCancellation: processing.echoCancellation,
        noiseSuppression: processing.noiseSuppression,
        autoGainControl: processing.autoGainControl,
      },
    });
    // The context runs at the device rate (Firefox refuses a mic source at another rate);
    // the worklet resamples to 24 kHz itself.
    this.ctx = new AudioContext();
    await this.ctx.audioWorklet.addModule(new URL("./worklets/capture-worklet.js", import.meta.url));
    const source = this.ctx.createMediaStreamSource(this.stream);
    const node = new AudioWorkletNode(this.ctx, "capture-processor", {
      processorOptions: { outRate: RATE, chunkMs: 20 },
    });
    node.port.onmessage = (e) => this.onChunk(new Int16Array(e.data.pcm), e.data.level);
    const mute = this.ctx.createGain(); // keeps the node pulled without playing the mic back
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(this.ctx.destination);
    await this.ctx.resume();
  }

  async applyProcessing(processing) {
    const track = this.stream && this.stream.getAudioTracks()[0];
    if (track) {
      await track.applyConstraints({
        echoCancellation: processing.echoCancellation,
        noiseSuppression: processing.noiseSuppression,
        autoGainControl: processing.autoGainControl,
      });
    }
  }

  async stop() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.ctx) await this.ctx.close();
    this.stream = null;
    this.ctx = null;
  }
}

/** Speaker: a gapless queue in a worklet; `played` is the sample clock of what was heard. */
export class Speaker {
  constructor({ onClock, onDrained }) {
    this.onClock = onClock;
    this.onDrained = onDrained;
    this.ctx = null;
    this.node = null;
    this.pushed = 0; // samples handed to the worklet (position of the next chunk)
    this.played = 0; // samples played, as last reported by the worklet
    this.flushes = new Map();
    this.flushIds = 0;
  }

  async start() {
    this.ctx = new AudioContext({ sampleRate: RATE });
    await this.ctx.audioWorklet.addModule(new URL("./worklets/playback-worklet.js", import.meta.url));
    this.node = new AudioWorkletNode(this.ctx, "playback-processor", {
      numberOfInputs: 0,
      outputChannelCount: [1],
    });
    this.node.port.onmessage = (e) => this.onMessage(e.data);
    this.node.connect(this.ctx.destination);
    await this.ctx.resume();
  }

  onMessage(msg) {
    this.played = msg.played;
    if (msg.type === "flushed") {
      this.pushed = msg.played; // dropped samples will never play
      const resolve = this.flushes.get(msg.id);
      this.flushes.delete(msg.id);
      if (resolve) resolve(msg);
    } else if (msg.type === "drained") {
      this.onDrained(msg.played);
    } else {
      this.onClock(msg.played, msg.queued);
    }
  }

  /** Queue float samples (their buffer is transferred); returns the position of the first. */
  push(samples) {
    const at = this.pushed;
    this.pushed += samples.length;
    this.node.port.postMessage({ type: "push", samples: samples.buffer }, [samples.buffer]);
    return at;
  }

  /** Stop at once: drop everything queued; resolves to {played, dropped}. */
  flush() {
    const id = ++this.flushIds;
    return new Promise((resolve) => {
      this.flushes.set(id, resolve);
      this.node.port.postMessage({ type: "flush", id });
    });
  }

  get queued() {
    return Math.max(0, this.pushed - this.played);
  }

  async stop() {
    if (this.ctx) await this.ctx.close();
    this.ctx = null;
    this.node = null;
    for (const resolve of this.flushes.values()) resolve({ played: this.played, dropped: 0 });
    this.flushes.clear();
  }
}
