// AeThex LIVE — go-live page (/live): publish camera or screen over WHIP (RFC 9725).
// Plain browser JS, no dependencies. Exposes window.aethexLive for tests.
(function () {
  'use strict';

  const CONNECT_TIMEOUT_MS = 15000;
  const DISCONNECT_GRACE_MS = 5000;
  const HTTP_TIMEOUT_MS = 10000;
  const KEY_STORE = 'aethex.streamKey';
  const C = window.AethexCommon;

  const $ = (id) => document.getElementById(id);
  const form = $('form');
  const keyInput = $('key');
  const remember = $('remember');
  const goBtn = $('go');
  const stopBtn = $('stop');
  const statusEl = $('status');
  const badge = $('badge');
  const watchBox = $('watchlink');
  const watchA = $('watch-a');
  const preview = $('preview');
  const sendStats = $('sendstats');

  const live = { state: 'idle', channel: null, message: '', resource: null };
  window.aethexLive = live;

  let pc = null;
  let stream = null;
  let resourceUrl = null;
  let generation = 0;
  let watch = null; // connection state watcher of `pc`
  let prevOut = null;

  try {
    const saved = localStorage.getItem(KEY_STORE);
    if (saved) { keyInput.value = saved; remember.checked = true; }
  } catch (_) { /* storage may be unavailable */ }

  function setState(state, text) {
    live.state = state;
    live.message = text || '';
    badge.className = 'badge ' + state;
    badge.textContent = state;
    statusEl.className = 'status ' + state;
    statusEl.textContent = text || '';
    const busy = state === 'connecting' || state === 'live';
    goBtn.disabled = busy;
    stopBtn.disabled = !busy;
    keyInput.disabled = busy;
    form.querySelectorAll('input[name=source]').forEach(function (r) { r.disabled = busy; });
  }

  function showWatchLink(channel) {
    live.channel = channel || null;
    if (!channel) { watchBox.hidden = true; return; }
    const href = '/watch/' + encodeURIComponent(channel);
    watchA.href = href;
    watchA.textContent = new URL(href, location.href).href;
    watchBox.hidden = false;
  }

  // Release everything; `keepalive` is for page unload (no awaiting possible there).
  async function cleanup(keepalive) {
    generation++;
    if (watch) { watch.stop(); watch = null; }
    const url = resourceUrl;
    resourceUrl = null;
    live.resource = null;
    C.closePeer(pc);
    pc = null;
    if (stream) {
      stream.getTracks().forEach(function (t) { t.onended = null; t.stop(); });
      stream = null;
    }
    preview.srcObject = null;
    prevOut = null;
    sendStats.textContent = '';
    if (url) await C.deleteResource(url, keepalive ? 0 : 3000);
  }

  async function getMedia(source) {
    if (source === 'screen') {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) throw new Error('Screen capture is not supported by this browser');
      return navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 30 } }, audio: true });
    }
    return C.camera(1280, 720);
  }

  async function goLive() {
    const key = keyInput.value.trim();
    if (!key) { setState('error', 'Enter your stream key.'); keyInput.focus(); return; }
    try {
      if (remember.checked) localStorage.setItem(KEY_STORE, key);
      else localStorage.removeItem(KEY_STORE);
    } catch (_) { /* ignore */ }

    await cleanup(false);
    const gen = generation;
    showWatchLink(null);
    const source = (form.querySelector('input[name=source]:checked') || {}).value || 'camera';
    setState('connecting', source === 'screen' ? 'Choose a screen to share…' : 'Opening camera…');

    let media;
    try {
      media = await getMedia(source);
    } catch (err) {
      if (gen !== generation) return;
      setState('error', 'Could not capture ' + source + ': ' + ((err && (err.message || err.name)) || err));
      return;
    }
    if (gen !== generation) { media.getTracks().forEach(function (t) { t.stop(); }); return; }
    stream = media;
    preview.srcObject = stream;
    C.play(preview);

    const conn = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    pc = conn;
    stream.getTracks().forEach(function (track) {
      if (track.kind === 'video' && source === 'screen' && 'contentHint' in track) track.contentHint = 'detail';
      conn.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      track.onended = function () { if (gen === generation) stop('Capture ended.'); };
    });
    const current = function () { return gen === generation; };
    watch = C.watchConnection(conn, DISCONNECT_GRACE_MS, {
      isCurrent: current,
      onConnected: function () {
        setState('live', 'You are live' + (live.channel ? ' on “' + live.channel + '”.' : '.'));
      },
      onLost: function () { fail('Connection lost.'); },
    });

    setState('connecting', 'Connecting…');
    let resp;
    try {
      resp = await C.sendOffer(conn, '/whip', { 'Authorization': 'Bearer ' + key }, HTTP_TIMEOUT_MS, current);
    } catch (err) {
      if (gen !== generation) return;
      await cleanup(false);
      setState('error', 'Cannot reach the server' + (err && err.name === 'AbortError' ? ' (timed out)' : ''));
      return;
    }
    if (gen !== generation) return;

    if (resp.status !== 201 && resp.status !== 200) {
      const e = await C.readError(resp, { 401: 'Invalid stream key' });
      if (gen !== generation) return;
      await cleanup(false);
      setState('error', e.text + (e.code ? ' (' + e.code + ')' : ''));
      return;
    }

    resourceUrl = C.locationOf(resp, '/whip');
    live.resource = resourceUrl;
    showWatchLink(resp.headers.get('X-Aethex-Channel'));
    const answer = await C.readAnswer(resp);
    if (gen !== generation) return;
    try {
      await conn.setRemoteDescription({ type: 'answer', sdp: answer });
    } catch (err) {
      if (gen !== generation) return;
      await cleanup(false);
      setState('error', 'Bad answer from server: ' + ((err && err.message) || err));
      return;
    }
    if (gen !== generation) return;
    if (conn.connectionState !== 'connected') setState('connecting', 'Connecting media…');
    watch.connectTimeout(CONNECT_TIMEOUT_MS, function () { fail('Media connection timed out.'); });
  }

  async function fail(text) {
    await cleanup(false);
    setState('error', text + ' Press “Go live” to try again.');
  }

  async function stop(text) {
    await cleanup(false);
    setState('idle', text || 'Stopped.');
  }

  // ---- outgoing stats ----
  async function pollStats() {
    const conn = pc;
    if (!conn || live.state !== 'live') return;
    const report = await C.getStats(conn);
    if (!report || conn !== pc) return;
    let v = null;
    let pair = null;
    report.forEach(function (s) {
      if (s.type === 'outbound-rtp' && s.kind === 'video' && (!v || (s.bytesSent || 0) > (v.bytesSent || 0))) v = s;
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
    if (!v) return;
    const now = Date.now();
    let kbps = 0;
    if (prevOut && now > prevOut.time) kbps = C.kbps(v.bytesSent || 0, now, prevOut.bytes, prevOut.time);
    prevOut = { time: now, bytes: v.bytesSent || 0 };
    const codec = C.codecOf(report, v).replace(/^video\//, '');
    const res = v.frameWidth ? v.frameWidth + 'x' + v.frameHeight : '–';
    const limit = v.qualityLimitationReason && v.qualityLimitationReason !== 'none' ? v.qualityLimitationReason : '';
    const estKbps = pair && pair.availableOutgoingBitrate ? pair.availableOutgoingBitrate / 1000 : null;
    live.stats = { width: v.frameWidth || 0, height: v.frameHeight || 0, fps: v.framesPerSecond || 0, kbps: kbps, codec: codec,
      qualityLimitation: limit || 'none', availableKbps: estKbps };
    sendStats.textContent = 'sending ' + res + ' @ ' + Math.round(v.framesPerSecond || 0) + ' fps, ' +
      Math.round(kbps) + ' kbps' + (codec ? ' (' + codec + ')' : '') +
      (estKbps != null ? ', est. ' + Math.round(estKbps) + ' kbps' : '') + (limit ? ', limited by ' + limit : '');
  }
  C.every(1000, pollStats);

  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    if (live.state === 'connecting' || live.state === 'live') return;
    goLive().catch(function (err) {
      cleanup(false).then(function () { setState('error', String((err && err.message) || err)); });
    });
  });
  stopBtn.addEventListener('click', function () { stop(); });
  window.addEventListener('pagehide', function () {
    if (pc || resourceUrl) cleanup(true);
  });

  setState('idle', 'Ready. Enter your stream key, pick a source and press “Go live”.');
})();
