// Chromium as a WHIP publisher and a WHEP viewer for the interop matrix, as a module and a CLI.
//
//   node tests/interop/chromium.mjs publish --url http://127.0.0.1:18080/whip --token KEY \
//       --codec vp8|h264 [--simulcast] [--no-audio] --duration 10
//   node tests/interop/chromium.mjs view --url http://127.0.0.1:18080/whep/demo --duration 5 \
//       [--min-video-frames N] [--expect-audio yes|no|auto] [--token T] [--offline-retry SECS]
//
// The CLI follows the peers' shared contract: stdout has only JSON lines (the publisher's
// `{"event":"live"}` once connected, then one result line), logs go to stderr, exit 0 iff the
// result is ok, hard time limit duration + 60 s.
//
// As a module (the context is a playwright BrowserContext, e.g. startChromium().context):
//   const pub = publish(context, { whipUrl, key, codec: 'vp8', simulcast: false, audio: true });
//   await pub.live;                 // rejects if not connected within connectTimeoutMs
//   const r = await pub.stop();     // DELETE; { ok, connected_ms, error, frames_encoded, ... }
//   const v = await view(context, { whepUrl, durationMs: 5000, expectAudio: 'auto', minVideoFrames: 30 });
//
// Every peer runs in its own page, opened at the server's origin (its /healthz) so that the
// WHIP/WHEP fetches are same-origin; the page is kept small and closed at the end. Chromium is
// started by tests/browser/lib.mjs (Debian's /usr/bin/chromium, fake camera and microphone).
import { pathToFileURL } from 'node:url';

import { startChromium, sleep } from '../browser/lib.mjs';

const CONNECT_TIMEOUT_MS = 10000;
const HTTP_TIMEOUT_MS = 5000;
const FAST_POLL_MS = 50;    // stats polling until the first video and audio frames are seen
const SLOW_POLL_MS = 500;   // ... and afterwards

// A page of the server's origin, small (a viewer's video is composited: keep it cheap).
async function openPage(context, url) {
  const page = await context.newPage();
  try {
    await page.setViewportSize({ width: 320, height: 180 });
    await page.goto(new URL('/healthz', url).href, { timeout: 10000 });
    return page;
  } catch (e) {
    await page.close().catch(() => {});
    throw e;
  }
}

// An error's first line, without playwright's "page.evaluate: Error: " prefix.
const errText = (e) => String((e && e.message) || e).split('\n')[0].replace(/^(page\.\w+: )?(Error: )?/, '');

// ---- publisher ------------------------------------------------------------------------------

// In the page: capture, offer with one codec, WHIP POST, answer; resolves once connected.
// Keeps its state in window.__pub for pagePublishStop.
async function pagePublishStart(o) {
  const P = { pc: null, stream: null, location: null, postAt: 0, t0: 0, connectedMs: null, error: null, stopped: false };
  window.__pub = P;
  const fail = (msg) => { if (!P.error) P.error = msg; throw new Error(msg); };
  P.stream = await navigator.mediaDevices.getUserMedia({
    video: { width: o.width, height: o.height, frameRate: 30 }, audio: o.audio,
  });
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  P.pc = pc;
  const vt = P.stream.getVideoTracks()[0];
  const tr = pc.addTransceiver(vt, {
    direction: 'sendonly',
    streams: [P.stream],
    sendEncodings: o.simulcast ? [
      { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
      { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
      { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1500000 },
    ] : undefined,
  });
  // Only the requested codec (and its retransmission format): VP8, or H.264 constrained
  // baseline 42e01f with packetization-mode 1.
  const wanted = (c) => (o.codec === 'h264'
    ? c.mimeType === 'video/H264' && /packetization-mode=1/.test(c.sdpFmtpLine || '')
      && /profile-level-id=42e01f/i.test(c.sdpFmtpLine || '')
    : c.mimeType === 'video/VP8');
  const caps = RTCRtpSender.getCapabilities('video').codecs;
  const chosen = caps.filter(wanted);
  if (!chosen.length) fail(`this Chromium cannot send ${o.codec}`);
  tr.setCodecPreferences(chosen.concat(caps.filter((c) => c.mimeType === 'video/rtx')));
  if (o.simulcast) {
    // Keep each layer's size: on a small machine CPU adaptation would otherwise shrink them.
    const p = tr.sender.getParameters();
    p.degradationPreference = 'maintain-resolution';
    await tr.sender.setParameters(p).catch(() => {});
  }
  const at = P.stream.getAudioTracks()[0];
  if (at) pc.addTransceiver(at, { direction: 'sendonly', streams: [P.stream] });

  const connected = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not connected within ${o.connectTimeoutMs} ms (state ${pc.connectionState})`)), o.connectTimeoutMs);
    const check = () => {
      if (pc.connectionState === 'connected') { clearTimeout(timer); resolve(); }
      else if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
        clearTimeout(timer); reject(new Error('connection ' + pc.connectionState));
      }
    };
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'failed' && P.connectedMs != null && !P.stopped) P.error = P.error || 'connection failed after connecting';
      check();
    });
    P.stopCheck = () => { clearTimeout(timer); reject(new Error('stopped before connecting')); };
  });
  connected.catch(() => {}); // rejections are reported below, or not at all once stopped

  await pc.setLocalDescription(await pc.createOffer());
  // What the video section offers, e.g. "H264/90000 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".
  const vsec = pc.localDescription.sdp.split(/\r?\n(?=m=)/).find((sec) => sec.startsWith('m=video')) || '';
  const fmtp = (pt) => (vsec.match(new RegExp('^a=fmtp:' + pt + ' (.*)$', 'm')) || [])[1];
  P.offered = [...vsec.matchAll(/^a=rtpmap:(\d+) (\S+)/gm)].filter((m) => !/^rtx\//i.test(m[2]))
    .map((m) => (fmtp(m[1]) ? m[2] + ' ' + fmtp(m[1]) : m[2]));
  P.t0 = performance.now();
  P.postAt = Date.now();
  let resp;
  try {
    resp = await fetch(o.whipUrl, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', Authorization: 'Bearer ' + o.key },
      body: pc.localDescription.sdp,
      signal: AbortSignal.timeout(o.httpTimeoutMs),
    });
  } catch (e) { fail('WHIP POST failed: ' + e.message); }
  const body = await resp.text();
  if (resp.status !== 201) fail(`WHIP POST answered ${resp.status}: ${body.slice(0, 300)}`);
  const loc = resp.headers.get('Location');
  P.location = loc ? new URL(loc, resp.url).href : null;
  try {
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
  } catch (e) { fail('setRemoteDescription: ' + e.message); }
  try { await connected; } catch (e) { fail(e.message); }
  P.connectedMs = Math.round(performance.now() - P.t0);
  return { connected_ms: P.connectedMs, post_at: P.postAt };
}

// In the page: what was sent, then DELETE and close.
async function pagePublishStop(httpTimeoutMs) {
  const P = window.__pub;
  if (!P) return { error: 'the publisher never started' };
  P.stopped = true;
  if (P.stopCheck) P.stopCheck();
  const out = { connection_state: P.pc ? P.pc.connectionState : 'new', layers: {}, frames_encoded: 0, bytes_sent: 0, audio_bytes_sent: 0 };
  if (P.pc) {
    const rep = await P.pc.getStats().catch(() => null);
    if (rep) {
      rep.forEach((s) => {
        if (s.type !== 'outbound-rtp') return;
        if (s.kind === 'audio') { out.audio_bytes_sent += s.bytesSent || 0; return; }
        out.frames_encoded += s.framesEncoded || 0;
        out.bytes_sent += s.bytesSent || 0;
        if (s.codecId && rep.get(s.codecId)) out.video_codec = rep.get(s.codecId).mimeType;
        out.layers[s.rid || '-'] = { width: s.frameWidth || 0, height: s.frameHeight || 0, frames: s.framesEncoded || 0,
          fps: s.framesPerSecond || 0, limitation: s.qualityLimitationReason || '' };
      });
    }
  }
  if (P.location) {
    try {
      out.delete_status = (await fetch(P.location, { method: 'DELETE', signal: AbortSignal.timeout(httpTimeoutMs) })).status;
    } catch (e) { out.delete_status = 'error: ' + e.message; }
  }
  if (P.pc) P.pc.close();
  if (P.stream) P.stream.getTracks().forEach((t) => t.stop());
  out.connected_ms = P.connectedMs;
  out.offered_video = P.offered || null;
  out.error = P.error;
  out.duration_s = P.t0 ? Math.round((performance.now() - P.t0) / 10) / 100 : 0;
  return out;
}

// Publish the fake camera (and microphone unless audio=false) over WHIP. Returns
// { live: Promise<{connected_ms, post_at}>, stop(): Promise<result> }; stop() may be called at
// any time, also before `live` settled, and closes the page.
export function publish(context, opts) {
  const o = {
    whipUrl: opts.whipUrl,
    key: opts.key || '',
    codec: (opts.codec || 'vp8').toLowerCase(),
    simulcast: !!opts.simulcast,
    audio: opts.audio !== false,
    width: opts.width || (opts.simulcast ? 960 : 640),
    height: opts.height || (opts.simulcast ? 540 : 360),
    connectTimeoutMs: opts.connectTimeoutMs || CONNECT_TIMEOUT_MS,
    httpTimeoutMs: HTTP_TIMEOUT_MS,
  };
  const pageP = openPage(context, o.whipUrl);
  let liveError = null;
  const live = pageP.then((page) => page.evaluate(pagePublishStart, o)).catch((e) => {
    liveError = errText(e);
    throw new Error(liveError);
  });
  live.catch(() => {}); // the caller may only look at stop()'s result
  let stopping = null;
  const stop = () => {
    stopping = stopping || (async () => {
      const result = { role: 'publisher', peer: 'chromium', ok: false, codec: o.codec, simulcast: o.simulcast, audio: o.audio };
      let page = null;
      try {
        page = await pageP;
        Object.assign(result, await page.evaluate(pagePublishStop, o.httpTimeoutMs));
      } catch (e) {
        result.error = result.error || liveError || errText(e);
      } finally {
        if (page) await page.close().catch(() => {});
      }
      result.error = result.error || liveError || null;
      if (!result.error && result.connected_ms == null) result.error = 'never connected';
      if (!result.error && !(result.frames_encoded > 0)) result.error = 'no video frame was encoded';
      result.ok = !result.error;
      return result;
    })();
    return stopping;
  };
  return { live, stop };
}

// ---- viewer ---------------------------------------------------------------------------------

// In the page: recvonly offer, WHEP POST (404 offline retried), answer, then measure decoded
// video and audio until o.durationMs after the POST that got the answer; DELETE and close.
async function pageView(o) {
  const r = { first_frame_ms: null, first_audio_ms: null, video_frames: 0, audio_frames: 0, width: null, height: null,
    connected_ms: null, offline_retries: 0, error: null };
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const el = document.createElement('video');
  el.muted = true; el.autoplay = true; el.playsInline = true; el.width = 160; el.height = 90;
  document.body.appendChild(el);
  const stream = new MediaStream();
  let t0 = performance.now();
  pc.ontrack = (ev) => {
    stream.addTrack(ev.track);
    if (el.srcObject !== stream) el.srcObject = stream;
    el.play().catch(() => {});
  };
  // The first decoded (and presented) video frame.
  el.requestVideoFrameCallback(() => { if (r.first_frame_ms == null) r.first_frame_ms = Math.round(performance.now() - t0); });
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'connected' && r.connected_ms == null) r.connected_ms = Math.round(performance.now() - t0);
  };
  let location = null;
  try {
    await pc.setLocalDescription(await pc.createOffer());
    const headers = { 'Content-Type': 'application/sdp' };
    if (o.token) headers.Authorization = 'Bearer ' + o.token;
    const retryUntil = performance.now() + o.offlineRetryMs;
    let resp, body;
    for (;;) {
      t0 = performance.now();
      try {
        resp = await fetch(o.whepUrl, { method: 'POST', headers, body: pc.localDescription.sdp, signal: AbortSignal.timeout(o.httpTimeoutMs) });
        body = await resp.text();
      } catch (e) { throw new Error('WHEP POST failed: ' + e.message); }
      let code = '';
      try { code = JSON.parse(body).code || ''; } catch (_) { /* not JSON */ }
      if (resp.status === 404 && code === 'offline' && performance.now() + 500 < retryUntil) {
        r.offline_retries++;
        await new Promise((res) => setTimeout(res, 500));
        continue;
      }
      break;
    }
    if (resp.status !== 201) throw new Error(`WHEP POST answered ${resp.status}: ${body.slice(0, 300)}`);
    const loc = resp.headers.get('Location');
    location = loc ? new URL(loc, resp.url).href : null;
    r.answer_audio = answerHasAudio(body);
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
    } catch (e) { throw new Error('setRemoteDescription: ' + e.message); }

    // Measure until the end; stop early only on a dead connection.
    const end = t0 + o.durationMs;
    let samples = 0;
    let concealed = 0;
    let clockRate = 48000;
    while (performance.now() < end) {
      if (pc.connectionState === 'failed' || pc.connectionState === 'closed') throw new Error('connection ' + pc.connectionState);
      if (r.connected_ms == null && performance.now() - t0 > o.connectTimeoutMs) {
        throw new Error(`not connected within ${o.connectTimeoutMs} ms (state ${pc.connectionState})`);
      }
      const rep = await pc.getStats();
      rep.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          r.video_frames = s.framesDecoded || 0;
          if (s.frameWidth) { r.width = s.frameWidth; r.height = s.frameHeight; }
          if (s.codecId && rep.get(s.codecId)) r.video_codec = rep.get(s.codecId).mimeType;
        } else if (s.kind === 'audio') {
          samples = s.totalSamplesReceived || 0;
          concealed = s.concealedSamples || 0;
          if (s.codecId && rep.get(s.codecId)) {
            r.audio_codec = rep.get(s.codecId).mimeType;
            clockRate = rep.get(s.codecId).clockRate || clockRate;
          }
        }
      });
      // Audio counts as decoded when samples arrived that are not concealment.
      const decoded = Math.max(0, samples - concealed);
      r.audio_frames = Math.floor(decoded / (clockRate / 50)); // in 20 ms frames
      if (r.audio_frames > 0 && r.first_audio_ms == null) r.first_audio_ms = Math.round(performance.now() - t0);
      if (r.video_frames > 0 && r.first_frame_ms == null) r.first_frame_ms = Math.round(performance.now() - t0); // rVFC had not fired
      r.audio_samples = samples;
      r.concealed_samples = concealed;
      const fast = r.first_frame_ms == null || (r.first_audio_ms == null && r.answer_audio);
      await new Promise((res) => setTimeout(res, Math.max(1, Math.min(fast ? o.fastPollMs : o.slowPollMs, end - performance.now()))));
    }
  } catch (e) {
    r.error = e.message;
  } finally {
    r.connection_state = pc.connectionState;
    if (location) {
      try {
        r.delete_status = (await fetch(location, { method: 'DELETE', signal: AbortSignal.timeout(o.httpTimeoutMs) })).status;
      } catch (e) { r.delete_status = 'error: ' + e.message; }
    }
    pc.close();
    el.srcObject = null;
    el.remove();
  }
  return r;

  // An active audio section (port not 0, not inactive) with an rtpmap.
  function answerHasAudio(sdp) {
    return sdp.split(/\r?\n(?=m=)/).some((sec) => /^m=audio [1-9]/.test(sec)
      && !/^a=inactive\b/m.test(sec) && /^a=rtpmap:/m.test(sec));
  }
}

// Watch a WHEP stream for durationMs; resolves to the result (never rejects). ok: no error,
// at least minVideoFrames decoded video frames and, when audio is expected, decoded audio.
export async function view(context, opts) {
  const o = {
    whepUrl: opts.whepUrl,
    token: opts.token || '',
    durationMs: opts.durationMs || 5000,
    expectAudio: opts.expectAudio || 'auto',
    minVideoFrames: opts.minVideoFrames == null ? 1 : opts.minVideoFrames,
    offlineRetryMs: opts.offlineRetryMs == null ? 10000 : opts.offlineRetryMs,
    connectTimeoutMs: opts.connectTimeoutMs || CONNECT_TIMEOUT_MS,
    httpTimeoutMs: HTTP_TIMEOUT_MS,
    fastPollMs: FAST_POLL_MS,
    slowPollMs: SLOW_POLL_MS,
  };
  const result = { role: 'viewer', peer: 'chromium', ok: false, first_frame_ms: null, first_audio_ms: null,
    video_frames: 0, audio_frames: 0, width: null, height: null, error: null };
  let page = null;
  let timer = null;
  try {
    page = await openPage(context, o.whepUrl);
    const limitMs = o.offlineRetryMs + o.durationMs + 3 * o.httpTimeoutMs + 10000;
    const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`viewer page did not finish within ${limitMs} ms`)), limitMs); });
    Object.assign(result, await Promise.race([page.evaluate(pageView, o), timeout]));
  } catch (e) {
    result.error = errText(e);
  } finally {
    clearTimeout(timer);
    if (page) await page.close().catch(() => {});
  }
  const expectAudio = o.expectAudio === 'yes' || (o.expectAudio === 'auto' && !!result.answer_audio);
  result.expect_audio = expectAudio;
  if (!result.error && result.video_frames < o.minVideoFrames) {
    result.error = `too few video frames: ${result.video_frames} decoded (min ${o.minVideoFrames})`;
  }
  if (!result.error && expectAudio && !(result.audio_frames > 0)) {
    result.error = `no audio decoded (${result.audio_samples || 0} samples, ${result.concealed_samples || 0} concealed)`;
  }
  result.ok = !result.error;
  return result;
}

// ---- CLI ------------------------------------------------------------------------------------

function parseArgs(argv) {
  const [cmd, ...rest] = argv;
  const a = { cmd, flags: {} };
  const boolean = new Set(['simulcast', 'no-audio']);
  for (let i = 0; i < rest.length; i++) {
    const m = /^--([a-z-]+)$/.exec(rest[i]);
    if (!m) throw new Error(`unexpected argument ${rest[i]}`);
    if (boolean.has(m[1])) a.flags[m[1]] = true;
    else if (i + 1 < rest.length) a.flags[m[1]] = rest[++i];
    else throw new Error(`--${m[1]} needs a value`);
  }
  return a;
}

const USAGE = `usage:
  node tests/interop/chromium.mjs publish --url WHIP_URL --token KEY --duration SECS [--codec vp8|h264] [--simulcast] [--no-audio]
  node tests/interop/chromium.mjs view --url WHEP_URL --duration SECS [--min-video-frames N] [--expect-audio yes|no|auto] [--token T] [--offline-retry SECS]`;

async function cli() {
  let a;
  try {
    a = parseArgs(process.argv.slice(2));
    if (!['publish', 'view'].includes(a.cmd) || !a.flags.url || !(Number(a.flags.duration) > 0)) throw new Error('bad arguments');
    if (a.flags.codec && !['vp8', 'h264'].includes(a.flags.codec)) throw new Error('--codec is vp8 or h264');
    if (a.flags['expect-audio'] && !['yes', 'no', 'auto'].includes(a.flags['expect-audio'])) throw new Error('--expect-audio is yes, no or auto');
  } catch (e) {
    process.stderr.write(`${e.message}\n${USAGE}\n`);
    process.exit(2);
  }
  const role = a.cmd === 'publish' ? 'publisher' : 'viewer';
  const durationMs = Number(a.flags.duration) * 1000;
  const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
  let chrome = null;
  let done = false;
  const finish = async (result) => {
    if (done) return;
    done = true;
    emit(result);
    if (chrome) await chrome.close();
    process.exit(result.ok ? 0 : 1);
  };
  const hard = setTimeout(() => finish({ role, peer: 'chromium', ok: false, error: `hard time limit ${durationMs / 1000 + 60} s exceeded` }), durationMs + 60000);
  hard.unref();
  let pub = null;
  const interrupted = async (sig) => {
    const r = pub ? await Promise.race([pub.stop(), sleep(5000).then(() => ({}))]) : {};
    finish({ role, peer: 'chromium', ...r, ok: false, error: 'interrupted by ' + sig });
  };
  process.on('SIGINT', () => interrupted('SIGINT'));
  process.on('SIGTERM', () => interrupted('SIGTERM'));

  try {
    chrome = await startChromium();
    process.stderr.write(`chromium ${chrome.browser.version()}\n`);
    if (a.cmd === 'publish') {
      pub = publish(chrome.context, {
        whipUrl: a.flags.url, key: a.flags.token || '', codec: a.flags.codec || 'vp8',
        simulcast: !!a.flags.simulcast, audio: !a.flags['no-audio'],
      });
      try {
        const live = await pub.live;
        emit({ event: 'live' });
        process.stderr.write(`connected after ${live.connected_ms} ms\n`);
        await sleep(Math.max(0, live.post_at + durationMs - Date.now()));
      } catch (e) {
        process.stderr.write(`publish failed: ${e.message}\n`);
      }
      await finish(await pub.stop());
    } else {
      await finish(await view(chrome.context, {
        whepUrl: a.flags.url, token: a.flags.token || '', durationMs,
        expectAudio: a.flags['expect-audio'] || 'auto',
        minVideoFrames: a.flags['min-video-frames'] == null ? 1 : Number(a.flags['min-video-frames']),
        offlineRetryMs: a.flags['offline-retry'] == null ? 10000 : Number(a.flags['offline-retry']) * 1000,
      }));
    }
  } catch (e) {
    await finish({ role, peer: 'chromium', ok: false, error: errText(e) });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) cli();
