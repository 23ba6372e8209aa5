// Microphone capture: low-pass, resample the context rate to 24 kHz, post 20 ms pcm16 chunks.

// Windowed-sinc low-pass taps with cutoff `fc` (cycles per input sample).
function lowpass(fc, n) {
  const taps = new Float32Array(n);
  const mid = (n - 1) / 2;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
    const hann = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1));
    taps[i] = sinc * hann;
    sum += taps[i];
  }
  for (let i = 0; i < n; i++) taps[i] /= sum;
  return taps;
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    const outRate = opts.outRate || 24000;
    this.step = sampleRate / outRate; // input samples per output sample
    this.chunkLength = Math.round((outRate * (opts.chunkMs || 20)) / 1000);
    this.chunk = new Int16Array(this.chunkLength);
    this.fill = 0;
    this.energy = 0;
    // Only downsampling needs the anti-alias filter; upsampling (16 kHz mics) interpolates.
    this.taps = this.step > 1.01 ? lowpass(0.45 / this.step, 33) : null;
    this.ring = new Float32Array(this.taps ? this.taps.length : 1);
    this.ringPos = 0;
    this.n = 0; // index of the current input sample
    this.t = 0; // position (in input samples) of the next output sample
    this.prev = 0;
  }

  filter(x) {
    if (!this.taps) return x;
    const ring = this.ring;
    const len = ring.length;
    ring[this.ringPos] = x;
    let acc = 0;
    let j = this.ringPos;
    for (let i = 0; i < len; i++) {
      acc += this.taps[i] * ring[j];
      j = j === 0 ? len - 1 : j - 1;
    }
    this.ringPos = (this.ringPos + 1) % len;
    return acc;
  }

  emit(sample) {
    const s = Math.max(-1, Math.min(1, sample));
    this.chunk[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    this.energy += s * s;
    if (this.fill === this.chunkLength) {
      const level = Math.sqrt(this.energy / this.fill);
      // The buffer is transferred (detached here), so the next chunk gets a new one.
      this.port.postMessage({ pcm: this.chunk.buffer, level }, [this.chunk.buffer]);
      this.chunk = new Int16Array(this.chunkLength);
      this.fill = 0;
      this.energy = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const ch = input[0];
    for (let i = 0; i < ch.length; i++) {
      const y = this.filter(ch[i]);
      // Output samples whose position falls between the previous input sample and this one.
      while (this.t <= this.n) {
        const frac = this.t - (this.n - 1);
        this.emit(this.prev + (y - this.prev) * frac);
        this.t += this.step;
      }
      this.prev = y;
      this.n += 1;
    }
    return true;
  }
}

registerProcessor("capture-processor", CaptureProcessor);
