// LWS web client (protocol lws.v1, docs/serving.md). Plain JS, no build step, no network beyond this server.
"use strict";

const PROTOCOL = "lws.v1";
const TARGET_RATE = 16000;
const MAX_CELLS = 120;
const $ = (id) => document.getElementById(id);

// Live counters, also read by the browser test.
const lws = (window.lws = {
  status: "idle", units: 0, states: {}, written: "", said: "", audioFrames: 0, audioSamples: 0,
  played: 0, stopped: 0, bargeIns: 0, sentBytes: 0, errors: [], closeCode: null, unitS: null, lastComputeMs: null,
});

let ws = null, ctx = null, stream = null, node = null, ready = false;
let nextTime = 0;
let unitS = 1.0; // the server's unit length, from `ready`
const playing = new Set();

function setStatus(s, cls) {
  lws.status = s;
  const el = $("status");
  el.textContent = s;
  el.className = "pill " + (cls || "");
}

function showError(msg) {
  const el = $("error");
  el.textContent = msg;
  el.hidden = !msg;
}

async function start() {
  showError("");
  $("start").disabled = true;
  try {
    ctx = new AudioContext();
    await ctx.audioWorklet.addModule("/static/worklet.js");
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
    const src = ctx.createMediaStreamSource(stream);
    node = new AudioWorkletNode(ctx, "pcm16-capture", { processorOptions: { targetRate: TARGET_RATE } });
    const mute = ctx.createGain();
    mute.gain.value = 0; // keep the worklet pulled by the graph without echoing the mic
    src.connect(node).connect(mute).connect(ctx.destination);
    node.port.onmessage = (e) => {
      if (ready && ws && ws.readyState === WebSocket.OPEN) {
        ws.send(e.data);
        lws.sentBytes += e.data.byteLength;
        $("s-in").textContent = (lws.sentBytes / 2 / TARGET_RATE).toFixed(1) + " s";
      }
    };
    connect();
  } catch (err) {
    showError("microphone: " + err.message);
    stop();
  }
}

function connect() {
  const params = new URLSearchParams(location.search);
  const token = $("token").value || params.get("token") || undefined;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/ws`, PROTOCOL);
  ws.binaryType = "arraybuffer";
  setStatus("connecting");
  ws.onopen = () => ws.send(JSON.stringify({ type: "hello", version: PROTOCOL, sample_rate: TARGET_RATE, token }));
  ws.onmessage = (e) => (typeof e.data === "string" ? onEvent(JSON.parse(e.data)) : onAudio(e.data));
  ws.onclose = (e) => {
    lws.closeCode = e.code;
    ready = false;
    if (lws.status !== "stopped") setStatus(e.code === 1000 ? "closed" : `closed ${e.code}`, e.code === 1000 ? "" : "error");
    cleanup();
  };
}

function onEvent(ev) {
  switch (ev.type) {
    case "ready":
      ready = true;
      unitS = ev.unit_s > 0 ? ev.unit_s : 1.0;
      lws.unitS = unitS;
      setStatus("live", "ready");
      $("stop").disabled = $("reset").disabled = false;
      break;
    case "state":
      setState(ev.state);
      if (ev.barge_in) bargeIn();
      break;
    case "write":
      lws.written += ev.text;
      break;
    case "document": {
      const doc = $("document");
      const atBottom = doc.scrollHeight - doc.scrollTop - doc.clientHeight < 40;
      doc.innerHTML = ev.html; // rendered and escaped by the server (raw HTML off); CSP forbids inline script
      if (atBottom) doc.scrollTop = doc.scrollHeight;
      break;
    }
    case "say":
      if (ev.spoken) addSpeech(ev.text);
      break;
    case "unit":
      onUnit(ev);
      break;
    case "reset":
      clearView();
      break;
    case "error":
      lws.errors.push(ev.code);
      showError(`${ev.code}: ${ev.message}`);
      break;
    default:
      break; // pong, end
  }
}

function setState(s) {
  lws.states[s] = (lws.states[s] || 0) + 1;
  const el = $("state");
  el.textContent = s;
  el.className = "state " + s;
}

function onUnit(ev) {
  lws.units += 1;
  const cell = document.createElement("span");
  cell.className = "cell " + ev.state + (ev.barge_in ? " barge" : "");
  if (ev.timings && ev.timings.write_tokens > 0) cell.classList.add("write");
  cell.title = `#${ev.index} ${ev.state} · ${ev.latency_ms} ms`;
  const tl = $("timeline");
  tl.appendChild(cell);
  while (tl.childElementCount > MAX_CELLS) tl.firstElementChild.remove();
  $("s-units").textContent = String(lws.units);
  $("s-latency").textContent = `${Math.round(ev.latency_ms)} ms`;
  if (ev.timings) {
    lws.lastComputeMs = ev.timings.total_ms;
    $("s-rtf").textContent = rtfText(ev.timings.total_ms, unitS);
  }
}

// RTF = compute time / audio time of the unit: units are ready.unit_s long (0.25 s, 0.5 s ...), not always 1 s.
function rtfText(totalMs, unit) {
  return (totalMs / 1000 / unit).toFixed(2);
}
window.lwsRtf = rtfText; // read by the browser test

function addSpeech(text) {
  lws.said += text;
  const span = document.createElement("span");
  span.textContent = text;
  span.className = "utt";
  $("speech").appendChild(span);
  $("speech").scrollTop = $("speech").scrollHeight;
}

// Speech: each binary frame is "LWSA" + u32 unit index + u32 sample rate + u32 samples, then PCM16 LE.
function onAudio(buf) {
  const dv = new DataView(buf);
  if (buf.byteLength < 16 || dv.getUint32(0, false) !== 0x4c575341) return;
  const rate = dv.getUint32(8, true);
  const n = dv.getUint32(12, true);
  const pcm = new Int16Array(buf, 16, n);
  lws.audioFrames += 1;
  lws.audioSamples += n;
  $("s-out").textContent = (lws.audioSamples / rate).toFixed(1) + " s";
  if (!ctx) return;
  const ab = ctx.createBuffer(1, n, rate);
  const ch = ab.getChannelData(0);
  for (let i = 0; i < n; i++) ch[i] = pcm[i] / 32768;
  const src = ctx.createBufferSource();
  src.buffer = ab;
  src.connect(ctx.destination);
  const t = Math.max(ctx.currentTime + 0.03, nextTime); // gapless: each unit's speech right after the last
  src.start(t);
  nextTime = t + ab.duration;
  playing.add(src);
  src.onended = () => {
    if (playing.delete(src)) lws.played += 1;
  };
}

// The model yielded while it still had speech queued: silence now, drop what is scheduled.
function bargeIn() {
  lws.bargeIns += 1;
  stopPlayback();
  const last = $("speech").lastElementChild;
  if (last) last.classList.add("cut");
}

function stopPlayback() {
  for (const src of playing) {
    try { src.stop(); } catch (_) { /* not started yet */ }
    lws.stopped += 1;
  }
  playing.clear();
  nextTime = 0;
}

function clearView() {
  $("document").innerHTML = "";
  $("speech").innerHTML = "";
  $("timeline").innerHTML = "";
  lws.written = lws.said = "";
  stopPlayback();
}

function stop() {
  setStatus("stopped");
  if (ws && ws.readyState === WebSocket.OPEN) {
    if (node) node.port.postMessage("flush");
    ws.send(JSON.stringify({ type: "end" }));
  }
  cleanup();
}

function cleanup() {
  ready = false;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (node) node.disconnect();
  stream = node = null;
  $("start").disabled = false;
  $("stop").disabled = $("reset").disabled = true;
}

function reset() {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "reset" }));
}

async function init() {
  $("start").onclick = start;
  $("stop").onclick = stop;
  $("reset").onclick = reset;
  try {
    const h = await (await fetch("/healthz")).json();
    if (h.auth && !new URLSearchParams(location.search).get("token")) $("token").hidden = false;
  } catch (_) { /* server down: Start will show the close code */ }
}

init();
