// Gapless playback of 24 kHz reply audio: a queue of chunks, a sample clock, flush on barge-in.

const CLOCK_EVERY = 4; // render quanta between clock reports (~21 ms at 24 kHz)

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // Float32Array chunks waiting to be played
    this.offset = 0; // samples of queue[0] already played
    this.queued = 0; // samples waiting
    this.played = 0; // samples played since the start: the playback clock
    this.quanta = 0;
    this.port.onmessage = (e) => {
      const msg = e.data;
      if (msg.type === "push") {
        const samples = new Float32Array(msg.samples);
        this.queue.push(samples);
        this.queued += samples.length;
      } else if (msg.type === "flush") {
        const dropped = this.queued;
        this.queue = [];
        this.offset = 0;
        this.queued = 0;
        this.port.postMessage({ type: "flushed", id: msg.id, played: this.played, dropped });
      }
    };
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const ch = out[0];
    let i = 0;
    const hadAudio = this.queued > 0;
    while (i < ch.length && this.queue.length > 0) {
      const head = this.queue[0];
      const n = Math.min(ch.length - i, head.length - this.offset);
      ch.set(head.subarray(this.offset, this.offset + n), i);
      i += n;
      this.offset += n;
      if (this.offset === head.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    ch.fill(0, i);
    this.played += i;
    this.queued -= i;
    for (let c = 1; c < out.length; c++) out[c].set(ch);
    this.quanta += 1;
    if (hadAudio && this.queued === 0) {
      this.port.postMessage({ type: "drained", played: this.played });
    } else if (this.quanta % CLOCK_EVERY === 0 && hadAudio) {
      this.port.postMessage({ type: "clock", played: this.played, queued: this.queued });
    }
    return true;
  }
}

registerProcessor("playback-processor", PlaybackProcessor);
