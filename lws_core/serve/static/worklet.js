// Microphone capture on the audio thread: any context rate -> 16 kHz mono PCM16, posted in 20 ms frames.
// Decimation averages the input samples that fall in each output period (a box low-pass),
// which is enough to keep speech intelligible and alias-free at 44.1/48 kHz.
class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const target = (options.processorOptions && options.processorOptions.targetRate) || 16000;
    this.ratio = sampleRate / target;
    this.frame = Math.round(target / 50); // 20 ms
    this.out = new Int16Array(this.frame);
    this.n = 0;
    this.acc = 0;
    this.cnt = 0;
    this.t = 0;
    this.next = this.ratio;
    this.port.onmessage = (e) => { if (e.data === "flush") this.flush(); };
  }

  emit(v) {
    const s = Math.max(-1, Math.min(1, v));
    this.out[this.n++] = s < 0 ? s * 32768 : s * 32767;
    if (this.n === this.frame) this.flush();
  }

  flush() {
    if (!this.n) return;
    const buf = this.out.slice(0, this.n).buffer;
    this.port.postMessage(buf, [buf]);
    this.n = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || !input.length) return true;
    const ch = input[0];
    for (let i = 0; i < ch.length; i++) {
      this.acc += ch[i];
      this.cnt++;
      this.t += 1;
      if (this.t >= this.next) {
        this.emit(this.acc / this.cnt);
        this.acc = 0;
        this.cnt = 0;
        this.next += this.ratio;
      }
    }
    if (this.t > 1e6) { this.t -= 1e6; this.next -= 1e6; }
    return true;
  }
}
registerProcessor("pcm16-capture", Pcm16Capture);
