// Headless Chromium end-to-end test of simulcast (rid layers) through a running AeThex server.
//
//   AETHEX_URL=http://127.0.0.1:18080 AETHEX_CHANNEL=demo AETHEX_KEY=... node tests/browser/simulcast.test.mjs
//
// One page publishes Chromium's fake camera at 960x540 over WHIP with three VP8 encodings
// (rid q = 1/4, h = 1/2, f = full size) and plays it back over WHEP three times:
//   A  unconstrained: starts on the lowest layer and must climb to the top one (960 wide);
//   B  through a UDP shaping proxy in this process (350 kbit/s token bucket towards the
//      browser, 150 ms queue): must stay on the low layer (240 wide); then the cap is lifted
//      and it must climb to 960;
//   C  subscribed with ?layer=low: stays at 240, then POST {"layer":"high"} to its session's
//      /layer resource moves it to 960.
// Finally /metrics must count layer switches. Prints `ok - name` / `not ok - name: why` per case,
// `# ` notes (first-frame and switch times) and a final `N passed, M failed` line; exits 0 only
// when nothing failed.
//
// Chromium is Debian's /usr/bin/chromium, started by this script with the same command line as
// watch.test.mjs and driven through playwright-core over CDP.
import dgram from 'node:dgram';
import fs from 'node:fs';

import { CHROMIUM, createHarness, sleep } from './lib.mjs';

const BASE = (process.env.AETHEX_URL || 'http://127.0.0.1:18080').replace(/\/+$/, '');
const CHANNEL = process.env.AETHEX_CHANNEL || '';
const KEY = process.env.AETHEX_KEY || '';
const TOTAL_TIMEOUT_MS = 140_000;

// Viewer B's link while capped: 350 kbit/s, or less when the publisher's middle layer would fit
// through 350 kbit/s (Chromium's fake camera is easy to encode: its h layer needs ~250-300 kbit/s
// rather than its 500 kbit/s maxBitrate, so 350 kbit/s legitimately carries it). See capFor().
const CAP_BPS = Number(process.env.AETHEX_CAP_KBPS || 350) * 1000;
const LIFTED_BPS = 20_000_000;  // ... and after the cap is lifted
const MAX_QUEUE_MS = 150;       // a packet that would wait longer than this is dropped
const TOP_WIDTH = 960;
const LOW_WIDTH = 240;

let page = null;
const proxies = [];
const resources = []; // WHIP/WHEP session URLs to DELETE at the end

const secs = (ms) => (ms / 1000).toFixed(1) + ' s';

// fetch with a timeout (Node's global fetch).
async function httpFetch(url, opts = {}, timeoutMs = 5000) {
  return fetch(url, { ...opts, signal: AbortSignal.timeout(timeoutMs) });
}

async function closeSessions() {
  if (page) {
    await Promise.race([page.evaluate(() => window.T && window.T.closeAll()).catch(() => {}), sleep(3000)]);
  }
  const urls = resources.splice(0);
  await Promise.all(urls.map((u) => httpFetch(u, { method: 'DELETE' }, 3000).catch(() => {})));
  for (const p of proxies.splice(0)) p.close();
}

const h = createHarness({ totalTimeoutMs: TOTAL_TIMEOUT_MS, cleanup: closeSessions });
const { note, pass, fail, poll, launchChromium } = h;

// ---- UDP shaping proxy -------------------------------------------------------------------------
//
// Browser <-> [down socket, 127.0.0.1:port] proxy [up socket] <-> server UDP port.
// Browser -> server: forwarded as is. Server -> browser: through a token bucket (rate `bps`,
// depth BURST_BYTES) with a FIFO; a packet that would wait more than MAX_QUEUE_MS is dropped.
// The server is ICE-lite and learns the proxy's up socket as the viewer's address from the STUN
// checks. Towards the browser, a STUN response goes to the source of the matching request
// (transaction id), everything else to the last source that sent non-STUN traffic (DTLS/SRTP),
// or failing that the last source seen at all.
const BURST_BYTES = 3000;

function isStun(buf) {
  return buf.length >= 20 && buf[0] < 2 && buf.readUInt32BE(4) === 0x2112a442;
}

class ShapingProxy {
  constructor(bps) {
    this.bps = bps;
    this.tokens = BURST_BYTES;
    this.refilledAt = performance.now();
    this.queue = [];        // { buf, addr, port, at }
    this.queuedBytes = 0;
    this.timer = null;
    this.closed = false;
    this.stunSources = new Map(); // transaction id (hex) -> { address, port }
    this.lastAny = null;
    this.lastMedia = null;
    this.server = null;     // { address, port }
    this.stats = { toServer: 0, toBrowser: 0, bytesToBrowser: 0, dropped: 0, maxWaitMs: 0 };
  }

  async start() {
    const bind = (sock) => new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(0, '127.0.0.1', () => { sock.off('error', reject); resolve(); });
    });
    this.down = dgram.createSocket('udp4');
    this.up = dgram.createSocket('udp4');
    await bind(this.down);
    await bind(this.up);
    this.down.on('error', () => {});
    this.up.on('error', () => {});
    this.down.on('message', (buf, rinfo) => this.fromBrowser(buf, rinfo));
    this.up.on('message', (buf, rinfo) => this.fromServer(buf, rinfo));
    return this.down.address().port;
  }

  setServer(address, port) { this.server = { address, port }; }

  fromBrowser(buf, rinfo) {
    if (this.closed || !this.server) return;
    const src = { address: rinfo.address, port: rinfo.port };
    this.lastAny = src;
    if (isStun(buf)) {
      this.stunSources.set(buf.subarray(8, 20).toString('hex'), src);
      if (this.stunSources.size > 512) this.stunSources.delete(this.stunSources.keys().next().value);
    } else {
      this.lastMedia = src;
    }
    this.stats.toServer++;
    this.up.send(buf, this.server.port, this.server.address);
  }

  fromServer(buf, rinfo) {
    if (this.closed || !this.server || rinfo.port !== this.server.port) return;
    let dst = null;
    if (isStun(buf)) dst = this.stunSources.get(buf.subarray(8, 20).toString('hex')) || null;
    if (!dst) dst = this.lastMedia || this.lastAny;
    if (!dst) return;
    this.refill();
    const waitMs = Math.max(0, this.queuedBytes + buf.length - this.tokens) * 8000 / this.bps;
    if (waitMs > MAX_QUEUE_MS) { this.stats.dropped++; return; }
    this.queue.push({ buf, addr: dst.address, port: dst.port, at: performance.now() });
    this.queuedBytes += buf.length;
    this.pump();
  }

  refill() {
    const now = performance.now();
    this.tokens = Math.min(BURST_BYTES, this.tokens + (now - this.refilledAt) * this.bps / 8000);
    this.refilledAt = now;
  }

  pump() {
    if (this.closed) return;
    this.refill();
    while (this.queue.length && this.tokens >= this.queue[0].buf.length) {
      const p = this.queue.shift();
      this.queuedBytes -= p.buf.length;
      this.tokens -= p.buf.length;
      const waited = performance.now() - p.at;
      if (waited > this.stats.maxWaitMs) this.stats.maxWaitMs = waited;
      this.stats.toBrowser++;
      this.stats.bytesToBrowser += p.buf.length;
      this.down.send(p.buf, p.port, p.addr);
    }
    if (this.queue.length && !this.timer) {
      const ms = Math.max(1, Math.ceil((this.queue[0].buf.length - this.tokens) * 8000 / this.bps));
      this.timer = setTimeout(() => { this.timer = null; this.pump(); }, ms);
    }
  }

  setRate(bps) {
    this.refill();
    this.bps = bps;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    this.pump();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    this.queue = [];
    this.queuedBytes = 0;
    try { this.down.close(); } catch (_) { /* closed */ }
    try { this.up.close(); } catch (_) { /* closed */ }
  }
}

// ---- in-page helpers (window.T) ----------------------------------------------------------------

function installPageHelpers() {
  const T = {
    pub: null,
    viewers: {},
    timers: [],
  };
  window.T = T;

  const post = async (url, sdp, headers) => {
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), 10000);
    try {
      return await fetch(url, {
        method: 'POST',
        headers: Object.assign({ 'Content-Type': 'application/sdp', 'Accept': 'application/sdp' }, headers || {}),
        body: sdp,
        signal: ctl.signal,
      });
    } finally { clearTimeout(t); }
  };

  const gathered = (pc, ms) => new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') { resolve(true); return; }
    const t = setTimeout(() => resolve(false), ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(true); }
    });
  });

  // Publish the fake camera over WHIP. Default: 960x540 VP8 in three simulcast layers;
  // `opts` picks another codec, size, or a single layer (replacing the current publisher).
  T.publish = async (channel, key, opts) => {
    const o = Object.assign({ codec: 'video/vp8', simulcast: true, width: 960, height: 540 }, opts || {});
    if (T.pub) {
      try { T.pub.pc.close(); } catch (_) { /* closed */ }
      T.pub.stream.getTracks().forEach((t) => t.stop());
      T.pub = null;
    }
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: o.width, height: o.height, frameRate: 30 }, audio: true,
    });
    const vt = stream.getVideoTracks()[0];
    const at = stream.getAudioTracks()[0];
    const settings = vt.getSettings();
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    T.pub = { pc, stream, location: null };
    const tr = pc.addTransceiver(vt, {
      direction: 'sendonly',
      streams: [stream],
      sendEncodings: o.simulcast ? [
        { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
        { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
        { rid: 'f', maxBitrate: 1500000 },
      ] : undefined,
    });
    pc.addTransceiver(at, { direction: 'sendonly', streams: [stream] });
    let preferred = false;
    if (typeof tr.setCodecPreferences === 'function' && RTCRtpSender.getCapabilities) {
      const codecs = RTCRtpSender.getCapabilities('video').codecs;
      const first = codecs.filter((c) => c.mimeType.toLowerCase() === o.codec.toLowerCase());
      // The server answers in its own codec order (VP8 first): to publish another codec, offer
      // only it (and the repair formats).
      const repair = (c) => /\/(rtx|red|ulpfec|flexfec-03)$/i.test(c.mimeType);
      const rest = codecs.filter((c) => c.mimeType.toLowerCase() !== o.codec.toLowerCase()
        && (o.codec.toLowerCase() === 'video/vp8' || repair(c)));
      if (first.length) { tr.setCodecPreferences(first.concat(rest)); preferred = true; }
    }
    // Keep the resolution of each layer (on a 2-core box CPU adaptation would scale them down).
    let degradation = 'default';
    try {
      const p = tr.sender.getParameters();
      p.degradationPreference = 'maintain-resolution';
      await tr.sender.setParameters(p);
      degradation = tr.sender.getParameters().degradationPreference || 'unsupported';
    } catch (e) { degradation = 'unsupported (' + e.name + ')'; }
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const complete = await gathered(pc, 3000);
    const sdp = pc.localDescription.sdp;
    const resp = await post('/whip/' + encodeURIComponent(channel), sdp, { Authorization: 'Bearer ' + key });
    const body = await resp.text();
    if (resp.status !== 201) return { status: resp.status, error: body.slice(0, 300) };
    const loc = resp.headers.get('Location');
    T.pub.location = loc ? new URL(loc, location.href).href : null;
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    return {
      status: resp.status,
      location: T.pub.location,
      preferred,
      degradation,
      gathered: complete,
      capture: settings.width + 'x' + settings.height + '@' + settings.frameRate,
      offerRids: (sdp.match(/^a=rid:.*$/gm) || []).join(' ; '),
      answerSimulcast: (body.match(/^a=(simulcast|rid):.*$/gm) || []).join(' ; '),
    };
  };

  T.pubStats = async () => {
    if (!T.pub) return null;
    const rep = await T.pub.pc.getStats();
    const out = {};
    let audioBytes = null;
    rep.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'audio') audioBytes = s.bytesSent || 0;
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out[s.rid || '-'] = {
          bytes: s.bytesSent || 0,
          w: s.frameWidth || 0,
          h: s.frameHeight || 0,
          fps: s.framesPerSecond || 0,
          limit: s.qualityLimitationReason || '',
          active: s.active,
          codec: s.codecId && rep.get(s.codecId) ? rep.get(s.codecId).mimeType : '',
        };
      }
    });
    return { state: T.pub.pc.connectionState, layers: out, audioBytes };
  };

  // Phase 1 of a viewer: recvonly offer, WHEP POST, keep the answer. Returns the server's UDP
  // port(s) from the answer's candidates.
  T.viewOffer = async (name, url) => {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    const v = { pc, t0: performance.now(), answer: null, location: null, firstFrameMs: null, video: null };
    T.viewers[name] = v;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const stream = new MediaStream();
    const el = document.createElement('video');
    el.muted = true; el.autoplay = true; el.playsInline = true; el.width = 160; el.height = 90;
    document.body.appendChild(el);
    v.video = el;
    pc.ontrack = (ev) => {
      stream.addTrack(ev.track);
      if (el.srcObject !== stream) el.srcObject = stream;
      el.play().catch(() => {});
    };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    v.t0 = performance.now();
    const resp = await post(url, pc.localDescription.sdp);
    const body = await resp.text();
    if (resp.status !== 201) return { status: resp.status, error: body.slice(0, 300) };
    const loc = resp.headers.get('Location');
    v.location = loc ? new URL(loc, location.href).href : null;
    v.answer = body;
    const ports = [];
    for (const line of body.split(/\r?\n/)) {
      const m = /^a=candidate:\S+ \d+ (\S+) \d+ (\S+) (\d+) typ (\S+)/.exec(line);
      if (m && m[1].toLowerCase() === 'udp') ports.push({ ip: m[2], port: Number(m[3]), typ: m[4] });
    }
    return { status: resp.status, location: v.location, candidates: ports };
  };

  // Phase 2: apply the answer (candidates rewritten to the proxy when proxyPort is given) and
  // time the first decoded frame.
  T.viewAnswer = async (name, serverPort, proxyPort, tcpOnly) => {
    const v = T.viewers[name];
    let sdp = v.answer;
    if (tcpOnly) {
      // A network that blocks UDP: only the server's ICE-TCP candidates are left.
      sdp = sdp.split(/\r?\n/).filter((l) => l !== '' && !/^a=candidate:\S+ \d+ udp /i.test(l)).join('\r\n') + '\r\n';
      v.rewritten = [...new Set(sdp.match(/^a=candidate:.*$/gm) || [])].join(' ; ');
    }
    if (proxyPort) {
      const lines = [];
      for (const line of sdp.split(/\r?\n/)) {
        if (line === '') continue;
        const m = /^(a=candidate:\S+ \d+ )(\S+)( \d+ )(\S+) (\d+)( typ .*)$/.exec(line);
        if (m) {
          // Only the server's UDP candidate, moved to the proxy; anything else would bypass it.
          if (m[2].toLowerCase() !== 'udp' || Number(m[5]) !== serverPort) continue;
          lines.push(m[1] + m[2] + m[3] + '127.0.0.1 ' + proxyPort + m[6]);
          continue;
        }
        const mm = /^(m=\S+ )(\d+)( .*)$/.exec(line);
        if (mm && Number(mm[2]) === serverPort) { lines.push(mm[1] + proxyPort + mm[3]); continue; }
        lines.push(line);
      }
      sdp = lines.join('\r\n') + '\r\n';
      v.rewritten = [...new Set(sdp.match(/^a=candidate:.*$/gm) || [])].join(' ; ');
    }
    await v.pc.setRemoteDescription({ type: 'answer', sdp });
    const until = performance.now() + 40000;
    const timer = setInterval(async () => {
      if (v.firstFrameMs != null || performance.now() > until || v.pc.connectionState === 'closed') {
        clearInterval(timer);
        return;
      }
      try {
        const rep = await v.pc.getStats();
        rep.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0 && v.firstFrameMs == null) {
            v.firstFrameMs = performance.now() - v.t0;
          }
        });
      } catch (_) { /* closed */ }
    }, 50);
    T.timers.push(timer);
    return { rewritten: v.rewritten || null };
  };

  T.viewStats = async (name) => {
    const v = T.viewers[name];
    if (!v) return null;
    const rep = await v.pc.getStats();
    let s = null;
    rep.forEach((x) => { if (x.type === 'inbound-rtp' && x.kind === 'video') s = x; });
    return {
      cs: v.pc.connectionState,
      w: s ? s.frameWidth || 0 : 0,
      h: s ? s.frameHeight || 0 : 0,
      decoded: s ? s.framesDecoded || 0 : 0,
      bytes: s ? s.bytesReceived || 0 : 0,
      lost: s ? s.packetsLost || 0 : 0,
      fps: s ? s.framesPerSecond || 0 : 0,
      firstFrameMs: v.firstFrameMs,
      sinceStart: performance.now() - v.t0,
    };
  };

  // ICE restart the way a WHEP client does it (RFC 9725 section 4.4): restartIce(), a new offer,
  // PATCH its ufrag/pwd with If-Match: "*", and the first answer with the server's new
  // credentials as the remote description.
  T.restartIce = async (name) => {
    const v = T.viewers[name];
    const before = v.pc.remoteDescription.sdp;
    v.pc.restartIce();
    const offer = await v.pc.createOffer();
    await v.pc.setLocalDescription(offer);
    const attr = (sdp, a) => (sdp.match(new RegExp('^a=' + a + ':(.*)$', 'm')) || [])[1];
    const frag = 'a=ice-ufrag:' + attr(offer.sdp, 'ice-ufrag').trim() + '\r\na=ice-pwd:' + attr(offer.sdp, 'ice-pwd').trim() + '\r\n';
    const resp = await fetch(v.location, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': '*' },
      body: frag,
    });
    const body = await resp.text();
    if (resp.status !== 200) return { status: resp.status, body: body.slice(0, 300) };
    const ufrag = attr(body, 'ice-ufrag').trim();
    const pwd = attr(body, 'ice-pwd').trim();
    const answer = before
      .replace(/^a=ice-ufrag:.*$/gm, 'a=ice-ufrag:' + ufrag)
      .replace(/^a=ice-pwd:.*$/gm, 'a=ice-pwd:' + pwd)
      // The candidates stay; their ufrag extension named the old credentials.
      .replace(/^(a=candidate:.*?) ufrag \S+/gm, '$1');
    await v.pc.setRemoteDescription({ type: 'answer', sdp: answer });
    return { status: resp.status, etag: resp.headers.get('ETag'), ufrag, local: attr(offer.sdp, 'ice-ufrag').trim() };
  };

  // The transport's ICE state and the local ufrag of the ICE generation in use.
  T.iceTransport = async (name) => {
    const rep = await T.viewers[name].pc.getStats();
    let out = null;
    rep.forEach((x) => {
      if (x.type === 'transport') out = { ufrag: x.iceLocalUsernameFragment || null, state: x.iceState || null };
    });
    return out;
  };

  // mimeType of a viewer's received video.
  T.viewCodec = async (name) => {
    const rep = await T.viewers[name].pc.getStats();
    let mime = null;
    rep.forEach((x) => {
      if (x.type === 'inbound-rtp' && x.kind === 'video' && x.codecId && rep.get(x.codecId)) mime = rep.get(x.codecId).mimeType;
    });
    return mime;
  };

  // Protocol of the remote candidate of the selected candidate pair ('udp' or 'tcp').
  T.transport = async (name) => {
    const v = T.viewers[name];
    const rep = await v.pc.getStats();
    let pair = null;
    rep.forEach((x) => { if (x.type === 'transport' && x.selectedCandidatePairId) pair = rep.get(x.selectedCandidatePairId); });
    if (!pair) rep.forEach((x) => { if (x.type === 'candidate-pair' && x.state === 'succeeded' && x.nominated) pair = x; });
    const remote = pair && rep.get(pair.remoteCandidateId);
    return remote ? `${remote.protocol} ${remote.address}:${remote.port}` : null;
  };

  // A throwaway recvonly offer POSTed to `url`; the peer connection is closed at once.
  T.rawWhep = async (url) => {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    try {
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      const resp = await post(url, pc.localDescription.sdp);
      const loc = resp.headers.get('Location');
      return { status: resp.status, body: (await resp.text()).slice(0, 300), location: loc ? new URL(loc, location.href).href : null };
    } finally { pc.close(); }
  };

  T.close = (name) => {
    const v = T.viewers[name];
    if (!v) return null;
    delete T.viewers[name];
    try { v.pc.close(); } catch (_) { /* closed */ }
    if (v.video) { v.video.srcObject = null; v.video.remove(); }
    return v.location;
  };

  T.closeAll = () => {
    T.timers.forEach((t) => clearInterval(t));
    T.timers = [];
    const locs = Object.keys(T.viewers).map((n) => T.close(n));
    if (T.pub) {
      locs.push(T.pub.location);
      try { T.pub.pc.close(); } catch (_) { /* closed */ }
      T.pub.stream.getTracks().forEach((t) => t.stop());
      T.pub = null;
    }
    return locs.filter(Boolean);
  };
}

// ---- viewer helpers (Node side) ---------------------------------------------------------------

// Subscribe viewer `name` (optionally through `proxy`). Resolves to { location, serverPort }.
async function subscribe(name, query, proxy, tcpOnly) {
  const url = `/whep/${encodeURIComponent(CHANNEL)}${query || ''}`;
  const r = await page.evaluate(([n, u]) => window.T.viewOffer(n, u), [name, url]);
  if (r.status !== 201) throw new Error(`WHEP POST ${url} answered ${r.status}: ${r.error}`);
  if (r.location) resources.push(r.location);
  const cand = r.candidates.find((c) => c.ip === '127.0.0.1') || r.candidates[0];
  if (!cand) throw new Error('the WHEP answer has no UDP candidate');
  let proxyPort = null;
  if (proxy) {
    proxyPort = await proxy.start();
    proxy.setServer('127.0.0.1', cand.port);
  }
  const a = await page.evaluate(([n, sp, pp, t]) => window.T.viewAnswer(n, sp, pp, t), [name, cand.port, proxyPort, !!tcpOnly]);
  if (a.rewritten) note(`viewer ${name}: answer candidates given to the browser: ${a.rewritten}`);
  return { location: r.location, serverPort: cand.port };
}

const viewStats = (name) => page.evaluate((n) => window.T.viewStats(n), name);

async function closeViewer(name) {
  const loc = await page.evaluate((n) => window.T.close(n), name).catch(() => null);
  if (loc) {
    const i = resources.indexOf(loc);
    if (i >= 0) resources.splice(i, 1);
    await httpFetch(loc, { method: 'DELETE' }, 3000).catch(() => {});
  }
}

// Wait for the first decoded frame of viewer `name`; notes and returns it.
async function firstFrame(name, timeoutMs) {
  const st = await poll(async () => {
    const s = await viewStats(name);
    s.done = s.firstFrameMs != null;
    return s;
  }, timeoutMs, 100);
  if (st.firstFrameMs != null) note(`viewer ${name}: first decoded frame ${Math.round(st.firstFrameMs)} ms after the WHEP POST (${st.w}x${st.h})`);
  return st;
}

// Poll viewer `name` until its frameWidth is `width`; returns { done, ms (since POST), last }.
async function reachWidth(name, width, timeoutMs) {
  const seen = new Set();
  const st = await poll(async () => {
    const s = await viewStats(name);
    if (s.w) seen.add(s.w);
    s.done = s.w === width;
    return s;
  }, timeoutMs, 200);
  st.seen = [...seen];
  return st;
}

// Publisher bitrate per rid (kbit/s) over `ms`.
async function publisherRates(ms) {
  const a = await page.evaluate(() => window.T.pubStats());
  const t0 = Date.now();
  await sleep(ms);
  const b = await page.evaluate(() => window.T.pubStats());
  const dt = Date.now() - t0;
  const out = {};
  for (const rid of ['q', 'h', 'f']) {
    const x = a.layers[rid], y = b.layers[rid];
    out[rid] = x && y ? Math.round(8 * (y.bytes - x.bytes) / dt) : null;
  }
  out.audio = a.audioBytes != null && b.audioBytes != null ? Math.round(8 * (b.audioBytes - a.audioBytes) / dt) : null;
  return out;
}
// The capped link for viewer B: CAP_BPS, unless that would carry the middle layer. The server
// moves up only while 85 % of its estimate carries a layer; the low layer plus audio plus packet
// overhead must fit. Halfway between "low + audio" and "mid", plus 10 % for headers.
function capFor(r) {
  if (process.env.AETHEX_CAP_KBPS || r.q == null || r.h == null) return CAP_BPS;
  const between = Math.round(((r.q + (r.audio || 0) + r.h) / 2) * 1.1) * 1000;
  return Math.min(CAP_BPS, Math.round(between / 10000) * 10000);
}
const fmtRates = (r) => `q ${r.q} kbit/s, h ${r.h} kbit/s, f ${r.f} kbit/s, audio ${r.audio} kbit/s`;

// ---- the test -----------------------------------------------------------------------------------

async function main() {
  if (!CHANNEL || !KEY) throw new Error('AETHEX_CHANNEL and AETHEX_KEY must be set');
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (run scripts/install-test-deps.sh)`);
  const ctx = await launchChromium();
  note(`chromium ${h.browser.version()}, server ${BASE}, channel ${CHANNEL}`);

  page = await ctx.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e && e.message || e)));
  await page.goto(`${BASE}/healthz`, { timeout: 10000 });
  await page.evaluate(installPageHelpers);

  // 1) publish three layers
  let published = false;
  {
    const name = 'publisher sends a 3-layer VP8 simulcast offer over WHIP';
    try {
      const r = await page.evaluate(([c, k]) => window.T.publish(c, k), [CHANNEL, KEY]);
      if (r.status !== 201) throw new Error(`WHIP POST answered ${r.status}: ${r.error}`);
      if (r.location) resources.push(r.location);
      note(`capture ${r.capture}, VP8 preferred: ${r.preferred}, degradationPreference: ${r.degradation}, ICE gathering complete: ${r.gathered}`);
      note(`offer: ${r.offerRids}`);
      note(`answer: ${r.answerSimulcast || '(no a=simulcast / a=rid lines)'}`);
      if (!/a=simulcast:recv/.test(r.answerSimulcast || '')) throw new Error('the WHIP answer does not accept simulcast (no a=simulcast:recv)');
      published = true;
      pass(name);
    } catch (e) { fail(name, e.message); }
  }

  // 2) all three layers flow
  let topWidth = 0;
  {
    const name = 'publisher sends layers q, h and f';
    try {
      if (!published) throw new Error('nothing is published');
      const t0 = Date.now();
      let prev = null;
      const grow = {}; // rid -> consecutive samples with bytesSent growing
      const st = await poll(async () => {
        const s = await page.evaluate(() => window.T.pubStats());
        const L = s.layers;
        for (const rid of ['q', 'h', 'f']) {
          const ok = L[rid] && prev && prev[rid] && L[rid].bytes > prev[rid].bytes;
          grow[rid] = ok ? (grow[rid] || 0) + 1 : 0;
        }
        prev = L;
        s.done = ['q', 'h', 'f'].every((rid) => grow[rid] >= 3 && L[rid].w > 0);
        return s;
      }, 20000, 500);
      const L = st.layers || {};
      const desc = ['q', 'h', 'f'].map((rid) => L[rid]
        ? `${rid} ${L[rid].w}x${L[rid].h} ${Math.round(L[rid].fps)} fps ${L[rid].codec} limit=${L[rid].limit || 'none'}`
        : `${rid} missing`);
      note(`publisher layers after ${secs(Date.now() - t0)}:`);
      for (const d of desc) note(`  layer ${d}`);
      topWidth = L.f ? L.f.w : 0;
      if (!st.done) throw new Error(`not all of q/h/f sending (connection ${st.state}); ${desc.join(', ')}`);
      if (L.f.w !== TOP_WIDTH) note(`WARNING: top layer is ${L.f.w} wide, not ${TOP_WIDTH}`);
      pass(name);
    } catch (e) { fail(name, e.message); }
  }

  // Give the server a moment to measure the three layers' bitrates before anyone subscribes (and
  // measure them here too, for the notes).
  let rates = {};
  if (published) {
    rates = await publisherRates(2500);
    note('publisher bitrates: ' + fmtRates(rates));
  }

  // 3) viewer A, unconstrained: lowest layer first, then up to the top
  {
    const name = `unconstrained viewer climbs to the top layer (${TOP_WIDTH} wide)`;
    try {
      if (!published) throw new Error('nothing is published');
      await subscribe('A', '');
      const ff = await firstFrame('A', 15000);
      if (ff.firstFrameMs == null) throw new Error(`no decoded frame within 15 s (connection ${ff.cs}, ${ff.bytes} bytes)`);
      const st = await reachWidth('A', TOP_WIDTH, 30000);
      note(`viewer A: widths seen ${st.seen.join(' -> ')}`);
      if (!st.done) throw new Error(`frameWidth ${st.w} after ${secs(st.sinceStart)} (connection ${st.cs}, top layer sent at ${topWidth})`);
      note(`viewer A: top layer (${st.w}x${st.h}) ${secs(st.sinceStart)} after the WHEP POST`);
      pass(name);
    } catch (e) { fail(name, e.message); }
    await closeViewer('A'); // keep the 2-core box to one decoder at a time where possible
  }

  // 4) viewer B behind a 350 kbit/s link: stays low; then the cap is lifted
  let bLow = false;
  const cap = capFor(rates);
  if (cap !== CAP_BPS) {
    note(`cap for viewer B: ${cap / 1000} kbit/s instead of ${CAP_BPS / 1000} kbit/s: the middle layer ` +
      `(${rates.h} kbit/s + ${rates.audio} kbit/s audio) would fit through ${CAP_BPS / 1000} kbit/s`);
  }
  const proxy = new ShapingProxy(cap);
  proxies.push(proxy);
  {
    const name = `viewer capped at ${cap / 1000} kbit/s stays on the low layer (${LOW_WIDTH} wide)`;
    try {
      if (!published) throw new Error('nothing is published');
      await subscribe('B', '', proxy);
      const ff = await firstFrame('B', 15000);
      if (ff.firstFrameMs == null) throw new Error(`no decoded frame within 15 s (connection ${ff.cs}, ${ff.bytes} bytes, proxy ${JSON.stringify(proxy.stats)})`);
      // Let the estimator work for a while (the server probes upwards), then require LOW_WIDTH in
      // every sample of a 5 s window.
      const seen = new Set();
      const start = Date.now();
      const b0 = proxy.stats.bytesToBrowser;
      let runStart = null;
      const WARMUP_MS = 6000;
      const st = await poll(async () => {
        const s = await viewStats('B');
        if (s.w) seen.add(s.w);
        if (s.w === LOW_WIDTH) { if (runStart === null) runStart = Date.now(); } else runStart = null;
        s.done = Date.now() - start >= WARMUP_MS && runStart !== null && Date.now() - runStart >= 5000;
        return s;
      }, 30000, 500);
      const rate = 8 * (proxy.stats.bytesToBrowser - b0) / Math.max(1, Date.now() - start);
      note(`viewer B (capped): widths seen ${[...seen].join(' -> ')}; ${Math.round(rate)} kbit/s through the proxy, ` +
        `${proxy.stats.dropped} packets dropped, max queue wait ${Math.round(proxy.stats.maxWaitMs)} ms`);
      note('publisher bitrates now: ' + fmtRates(await publisherRates(1000)));
      if (!st.done) throw new Error(`frameWidth ${st.w} (not a steady ${LOW_WIDTH} for 5 s) after ${secs(Date.now() - start)}, connection ${st.cs}`);
      note(`viewer B (capped): steady at ${st.w}x${st.h}, ${Math.round(st.fps)} fps`);
      bLow = true;
      pass(name);
    } catch (e) { fail(name, e.message); }
  }
  {
    const name = `capped viewer climbs to the top layer once the cap is lifted (${LIFTED_BPS / 1e6} Mbit/s)`;
    try {
      if (!bLow) throw new Error('viewer B did not settle on the low layer');
      const dropsBefore = proxy.stats.dropped;
      proxy.setRate(LIFTED_BPS);
      const t0 = Date.now();
      const seen = new Set();
      const st = await poll(async () => {
        const s = await viewStats('B');
        if (s.w) seen.add(s.w);
        s.done = s.w === TOP_WIDTH;
        return s;
      }, 40000, 250);
      note(`viewer B (lifted): widths seen ${[...seen].join(' -> ')}; ${proxy.stats.dropped - dropsBefore} packets dropped after the lift`);
      if (!st.done) throw new Error(`frameWidth ${st.w} ${secs(Date.now() - t0)} after lifting the cap (connection ${st.cs})`);
      note(`viewer B: top layer (${st.w}x${st.h}) ${secs(Date.now() - t0)} after lifting the cap`);
      pass(name);
    } catch (e) { fail(name, e.message); }
    await closeViewer('B');
    proxy.close();
  }

  // 5) viewer C pinned with ?layer=low, then moved to high through its /layer resource
  {
    const name = 'viewer pinned with ?layer=low gets the low layer';
    let pinnedOk = false;
    let loc = null;
    try {
      if (!published) throw new Error('nothing is published');
      const sub = await subscribe('C', '?layer=low');
      loc = sub.location;
      const ff = await firstFrame('C', 15000);
      if (ff.firstFrameMs == null) throw new Error(`no decoded frame within 15 s (connection ${ff.cs}, ${ff.bytes} bytes)`);
      // Unconstrained, an unpinned viewer would start climbing within a few seconds.
      const seen = new Set();
      const start = Date.now();
      const st = await poll(async () => {
        const s = await viewStats('C');
        if (s.w) seen.add(s.w);
        s.done = Date.now() - start >= 4000;
        return s;
      }, 4000, 250);
      note(`viewer C (pinned low): widths seen ${[...seen].join(' -> ')} over ${secs(Date.now() - start)}`);
      if (st.w !== LOW_WIDTH || seen.size !== 1) throw new Error(`frameWidth ${st.w}, widths seen ${[...seen].join(',')}`);
      pinnedOk = true;
      pass(name);
    } catch (e) { fail(name, e.message); }

    const name2 = 'POST {"layer":"high"} to the session\'s /layer moves the pinned viewer to the top layer';
    try {
      if (!loc) throw new Error('viewer C has no session (previous case failed)');
      const t0 = Date.now();
      const resp = await httpFetch(loc + '/layer', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ layer: 'high' }),
      });
      const body = await resp.text().catch(() => '');
      if (resp.status !== 204) throw new Error(`POST ${new URL(loc).pathname}/layer answered ${resp.status} ${body.slice(0, 200)}`);
      const st = await reachWidth('C', TOP_WIDTH, 15000);
      note(`viewer C (pinned high): widths seen ${st.seen.join(' -> ')}`);
      if (!st.done) throw new Error(`frameWidth ${st.w} ${secs(Date.now() - t0)} after the change (connection ${st.cs})`);
      note(`viewer C: top layer (${st.w}x${st.h}) ${secs(Date.now() - t0)} after POST /layer${pinnedOk ? '' : ' (the low pin had failed)'}`);
      pass(name2);
    } catch (e) { fail(name2, e.message); }

    const name3 = 'an invalid layer is refused with 400';
    try {
      if (!loc) throw new Error('viewer C has no session');
      const r1 = await httpFetch(loc + '/layer', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ layer: 'ultra' }),
      });
      const b1 = await r1.text().catch(() => '');
      // A real offer, so that a 400 can only be about the layer.
      const r2 = await page.evaluate((u) => window.T.rawWhep(u), `/whep/${encodeURIComponent(CHANNEL)}?layer=ultra`);
      if (r2.location) await httpFetch(r2.location, { method: 'DELETE' }, 3000).catch(() => {});
      const b2 = r2.body;
      if (r1.status !== 400) throw new Error(`POST /layer {"layer":"ultra"} answered ${r1.status} ${b1.slice(0, 200)}`);
      if (r2.status !== 400) throw new Error(`POST /whep?layer=ultra answered ${r2.status} ${b2.slice(0, 200)}`);
      let j = null;
      try { j = JSON.parse(b2); } catch (_) { /* not JSON */ }
      if (!j || !j.error) throw new Error(`POST /whep?layer=ultra: 400 without a JSON error body: ${b2.slice(0, 200)}`);
      pass(name3);
    } catch (e) { fail(name3, e.message); }
    await closeViewer('C');
  }

  // 5b) viewer D on a network without UDP: ICE-TCP only
  {
    const name = 'a viewer offered only the ICE-TCP candidate plays over TCP';
    try {
      await subscribe('D', '', null, true);
      const ff = await firstFrame('D', 15000);
      if (ff.firstFrameMs == null) throw new Error('no decoded frame within 15 s');
      const transport = await page.evaluate((n) => window.T.transport(n), 'D');
      note(`viewer D (ICE-TCP): selected remote candidate ${transport}`);
      if (!transport || !transport.startsWith('tcp')) throw new Error(`selected candidate is ${transport}`);
      pass(name);
    } catch (e) { fail(name, e.message); }
    await closeViewer('D');
  }

  // 5b') ICE restart through PATCH keeps a playing viewer playing
  {
    const name = 'an ICE restart through PATCH keeps the session and the picture';
    try {
      await subscribe('R', '', null, false);
      const ff = await firstFrame('R', 15000);
      if (ff.firstFrameMs == null) throw new Error('no decoded frame within 15 s');
      const r = await page.evaluate((n) => window.T.restartIce(n), 'R');
      if (r.status !== 200) throw new Error(`PATCH answered ${r.status}: ${r.body}`);
      const before = (await viewStats('R')).decoded;
      // The new ICE generation (new credentials at both ends) must take over.
      const t0 = Date.now();
      const ice = await poll(async () => {
        const t = await page.evaluate((n) => window.T.iceTransport(n), 'R');
        return { ...t, done: t && t.ufrag === r.local && (t.state === 'connected' || t.state === 'completed') };
      }, 8000, 100);
      if (!ice.done) throw new Error(`the new ICE credentials did not take over: ${JSON.stringify(ice)} (new local ufrag ${r.local})`);
      note(`viewer R: new ICE generation connected ${Date.now() - t0} ms after the PATCH answer`);
      await sleep(3000);
      const after = await viewStats('R');
      note(`viewer R: ICE restart answered 200 (new ETag ${r.etag}); ${after.decoded - before} frames decoded in the 3 s after, state ${after.cs}`);
      if (after.cs !== 'connected') throw new Error(`connection state ${after.cs} after the restart`);
      if (after.decoded - before < 20) throw new Error(`only ${after.decoded - before} frames decoded after the restart`);
      const resp = await httpFetch(`${BASE}/metrics`);
      const line = (await resp.text()).split('\n').find((l) => l.startsWith('aethex_ice_restarts_total '));
      if (!line || !(Number(line.split(' ')[1]) >= 1)) throw new Error(`metrics: ${line}`);
      pass(name);
    } catch (e) { fail(name, e.message); }
    await closeViewer('R');
  }

  // 5c) other codecs, one layer each: the publisher is replaced, a new viewer decodes it
  for (const [codec, width, height] of [['video/VP9', 640, 360], ['video/AV1', 320, 180]]) {
    const name = `a ${codec} publish (one layer) is forwarded and decoded by a viewer`;
    const viewer = codec.slice(6);
    try {
      const r = await page.evaluate(([c, k, o]) => window.T.publish(c, k, o), [CHANNEL, KEY, { codec, simulcast: false, width, height }]);
      if (r.status !== 201) throw new Error(`WHIP POST answered ${r.status}: ${r.error}`);
      if (r.location) resources.push(r.location);
      if (!r.preferred) throw new Error(`this Chromium cannot send ${codec}`);
      await subscribe(viewer, '', null, false);
      const ff = await firstFrame(viewer, 20000);
      if (ff.firstFrameMs == null) throw new Error('no decoded frame within 20 s');
      const mime = await page.evaluate((n) => window.T.viewCodec(n), viewer);
      note(`viewer ${viewer}: decodes ${mime} at ${ff.w}x${ff.h}`);
      if (!mime || mime.toLowerCase() !== codec.toLowerCase()) throw new Error(`viewer decodes ${mime}`);
      pass(name);
    } catch (e) { fail(name, e.message); }
    await closeViewer(viewer);
  }

  // 6) metrics
  {
    const name = 'metrics count layer switches (aethex_layer_switches_total > 0)';
    try {
      const resp = await httpFetch(`${BASE}/metrics`);
      const text = await resp.text();
      if (resp.status !== 200) throw new Error(`GET /metrics answered ${resp.status}`);
      const lines = text.split('\n').filter((l) => /^aethex_layer_switches_total(\{|\s)/.test(l));
      if (!lines.length) throw new Error('no aethex_layer_switches_total sample in /metrics');
      const total = lines.reduce((n, l) => n + Number(l.trim().split(/\s+/).pop()), 0);
      note(`metrics: ${lines.join(' ; ')}`);
      if (!(total > 0)) throw new Error(`aethex_layer_switches_total = ${total}`);
      pass(name);
    } catch (e) { fail(name, e.message); }
  }

  // 7) tidy up: every session ends with a DELETE
  {
    const name = 'sessions end cleanly (DELETE of the WHIP/WHEP resources)';
    try {
      const locs = await page.evaluate(() => window.T.closeAll());
      const urls = [...new Set([...resources.splice(0), ...locs])];
      const codes = await Promise.all(urls.map((u) => httpFetch(u, { method: 'DELETE' }, 3000).then((r) => r.status, (e) => String(e.message))));
      for (const p of proxies.splice(0)) p.close();
      const bad = codes.filter((c) => c !== 200 && c !== 204 && c !== 404);
      if (bad.length) throw new Error(`DELETE answered ${codes.join(', ')}`);
      if (pageErrors.length) throw new Error('page errors: ' + pageErrors.join(' ;; ').slice(0, 800));
      pass(name);
    } catch (e) { fail(name, e.message); }
  }
}

h.run(main);
