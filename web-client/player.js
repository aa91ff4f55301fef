// AeThex LIVE — WHEP player for /watch/{channel}.
// Plain browser JS, no dependencies. Exposes window.aethexPlayer for tests.
(function () {
  'use strict';

  const OFFLINE_RETRY_MS = 2000;
  const MAX_BACKOFF_MS = 10000;
  const DISCONNECT_GRACE_MS = 3000;
  const CONNECT_TIMEOUT_MS = 15000; // answer received but ICE/DTLS never connects
  const STALL_TIMEOUT_MS = 8000;    // connected but no media bytes at all for this long
  const POST_TIMEOUT_MS = 10000;
  const LAYER_TIMEOUT_MS = 5000;
  const LAYERS = ['auto', 'high', 'mid', 'low']; // simulcast layer choices (server contract)
  const C = window.AethexCommon;

  const segs = location.pathname.split('/').filter(Boolean);
  let channel = '';
  try { channel = decodeURIComponent(segs[segs.length - 1] || ''); } catch (_) { channel = segs[segs.length - 1] || ''; }
  const endpoint = '/whep/' + encodeURIComponent(channel);
  // Passed on to WHEP from the page's own query: a playback token (private channels) and a
  // region (the server may then redirect us to an edge of that region).
  const pageQuery = new URLSearchParams(location.search);
  const token = pageQuery.get('token') || '';
  const region = pageQuery.get('region') || '';

  const $ = (id) => document.getElementById(id);
  const video = $('video');
  const badge = $('badge');
  const message = $('message');
  const statsEl = $('stats');
  const unmuteBtn = $('unmute');
  const statsBtn = $('toggle-stats');
  const qualitySel = $('quality');
  const retryBtn = $('retry');

  // The chosen simulcast layer: 'auto' lets the server follow our bandwidth, others pin it.
  let layer = 'auto';
  try {
    const saved = localStorage.getItem('aethex.layer');
    if (LAYERS.indexOf(saved) >= 0) layer = saved;
  } catch (_) { /* ignore */ }

  const player = {
    state: 'connecting', // 'offline' | 'connecting' | 'playing' | 'error'
    channel: channel,
    message: '',
    connectionState: 'new',
    stats: {},
    reconnects: 0,
    gaveUp: false,     // true after an error that is not retried by itself (the Retry button is shown)
    layer: layer,      // chosen quality: 'auto' | 'high' | 'mid' | 'low'
    layerStatus: null, // HTTP status of the last live layer change (null: none sent)
  };
  window.aethexPlayer = player;

  $('channel').textContent = channel;
  document.title = channel + ' — AeThex LIVE';

  let pc = null;
  let resourceUrl = null;
  let generation = 0;
  let retryTimer = null;
  let watch = null;     // connection state watcher of `pc`
  let backoffMs = 1000;
  let prev = null;      // previous stats sample (for deltas)
  let lastBytesAt = 0;  // time the received byte counter last advanced
  let stopped = false;

  function setState(state, text) {
    player.state = state;
    player.message = text || '';
    badge.className = 'badge ' + state;
    badge.textContent = state === 'playing' ? 'live' : state;
    message.textContent = text || '';
    message.hidden = !text;
  }

  function clearTimers() {
    clearTimeout(retryTimer); retryTimer = null;
    if (watch) { watch.stop(); watch = null; }
  }

  function deleteResource() {
    const url = resourceUrl;
    resourceUrl = null;
    C.deleteResource(url);
  }

  function teardown() {
    generation++;
    clearTimers();
    deleteResource();
    C.closePeer(pc);
    pc = null;
    prev = null;
  }

  function scheduleRetry(ms) {
    clearTimeout(retryTimer);
    if (stopped) return;
    retryTimer = setTimeout(connect, ms);
  }

  // Tear down the current session and start over (after a drop or stall).
  function reconnect(reason, delayMs) {
    if (stopped) return;
    teardown();
    player.reconnects++;
    setState('connecting', reason + ' — reconnecting…');
    scheduleRetry(delayMs == null ? 500 : delayMs);
  }

  function tryPlay() { C.play(video); }

  // An error that retrying cannot fix (the server refused our offer, or its answer cannot be
  // used): shown once, no retry until the viewer presses Retry.
  function giveUp(text) {
    teardown();
    player.gaveUp = true;
    setState('error', text);
    retryBtn.hidden = false;
  }

  // A 4xx with a JSON error code is the server's final word on this request, except "offline"
  // (the stream may start), and timeouts or rate limits (worth another try later).
  function isRefusal(status, e) {
    return status >= 400 && status < 500 && !!e.code && e.code !== 'offline'
      && status !== 408 && status !== 425 && status !== 429;
  }

  async function connect() {
    if (stopped) return;
    teardown();
    player.gaveUp = false;
    retryBtn.hidden = true;
    const gen = generation;
    if (player.state !== 'offline') setState('connecting', 'Connecting…');

    const conn = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    pc = conn;
    const stream = new MediaStream();
    conn.addTransceiver('video', { direction: 'recvonly' });
    conn.addTransceiver('audio', { direction: 'recvonly' });
    conn.ontrack = function (ev) {
      if (gen !== generation) return;
      stream.addTrack(ev.track);
      if (video.srcObject !== stream) video.srcObject = stream;
      tryPlay();
    };
    const current = function () { return gen === generation; };
    watch = C.watchConnection(conn, DISCONNECT_GRACE_MS, {
      isCurrent: current,
      onState: function (st) { player.connectionState = st; },
      onConnected: function () {
        backoffMs = 1000;
        lastBytesAt = Date.now();
        setState('playing', video.videoWidth > 0 ? '' : 'Waiting for video…');
        tryPlay();
      },
      onLost: function () { reconnect('Connection lost'); },
    });

    let resp;
    try {
      resp = await C.sendOffer(conn, whepUrl(), null, POST_TIMEOUT_MS, current);
    } catch (err) {
      if (gen !== generation) return;
      failAndRetry('Cannot reach the server');
      return;
    }
    if (gen !== generation) return;

    if (resp.status !== 201 && resp.status !== 200) {
      const e = await C.readError(resp);
      if (gen !== generation) return;
      teardown();
      if (resp.status === 404 && e.code === 'offline') {
        backoffMs = 1000;
        setState('offline', 'Offline — waiting for the stream…');
        scheduleRetry(OFFLINE_RETRY_MS);
      } else if (resp.status === 401) {
        giveUp(token
          ? 'This playback link is not valid (' + e.text + ').'
          : 'This channel is private: open it with a playback link (…?token=…).');
      } else if (e.code === 'not_found') {
        giveUp('Channel “' + channel + '” does not exist.');
      } else if (isRefusal(resp.status, e)) {
        giveUp('The server cannot play this stream here: ' + e.text);
      } else {
        setState('error', e.text);
        scheduleRetry(nextBackoff());
      }
      return;
    }

    resourceUrl = C.locationOf(resp, endpoint);
    const answer = await C.readAnswer(resp);
    if (gen !== generation) { deleteResource(); return; }
    try {
      await conn.setRemoteDescription({ type: 'answer', sdp: answer });
    } catch (err) {
      if (gen !== generation) return;
      giveUp('Bad answer from server: ' + ((err && err.message) || err));
      return;
    }
    if (gen !== generation) return;
    setState('connecting', 'Connecting to the stream…');
    lastBytesAt = Date.now();
    watch.connectTimeout(CONNECT_TIMEOUT_MS, function () { reconnect('Connection timed out'); });
  }

  // The WHEP endpoint, with the pinned layer (if any) for the next session.
  function whepUrl() {
    const q = new URLSearchParams();
    if (layer !== 'auto') q.set('layer', layer);
    if (token) q.set('token', token);
    if (region) q.set('region', region);
    const text = q.toString();
    return text ? endpoint + '?' + text : endpoint;
  }

  function nextBackoff() {
    const ms = backoffMs;
    backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
    return ms;
  }

  function failAndRetry(text) {
    teardown();
    setState('error', text);
    scheduleRetry(nextBackoff());
  }

  video.addEventListener('resize', function () {
    if (player.state === 'playing' && video.videoWidth > 0) setState('playing', '');
  });
  video.addEventListener('playing', function () {
    if (player.state === 'playing') setState('playing', '');
  });

  // ---- stats overlay ----
  async function pollStats() {
    const conn = pc;
    if (!conn || conn.connectionState === 'closed') {
      statsEl.textContent = 'state: ' + player.state;
      return;
    }
    const report = await C.getStats(conn);
    if (!report || conn !== pc) return;
    let v = null, a = null, pair = null, transport = null;
    const pairs = {};
    report.forEach(function (s) {
      if (s.type === 'inbound-rtp' && s.kind === 'video') v = s;
      else if (s.type === 'inbound-rtp' && s.kind === 'audio') a = s;
      else if (s.type === 'transport') transport = s;
      else if (s.type === 'candidate-pair') pairs[s.id] = s;
    });
    if (transport && transport.selectedCandidatePairId) pair = pairs[transport.selectedCandidatePairId];
    if (!pair) {
      Object.keys(pairs).forEach(function (k) {
        const p = pairs[k];
        if (p.nominated && p.state === 'succeeded') pair = p;
      });
    }

    const now = Date.now();
    const st = { connectionState: conn.connectionState, time: now };
    const bytes = (v ? v.bytesReceived || 0 : 0) + (a ? a.bytesReceived || 0 : 0);
    if (v) {
      st.width = v.frameWidth || video.videoWidth || 0;
      st.height = v.frameHeight || video.videoHeight || 0;
      st.fps = v.framesPerSecond || 0;
      st.codec = C.codecOf(report, v);
      st.bytesReceived = v.bytesReceived || 0;
      st.packetsReceived = v.packetsReceived || 0;
      st.packetsLost = Math.max(0, v.packetsLost || 0);
      const tot = st.packetsReceived + st.packetsLost;
      st.lossPct = tot > 0 ? (100 * st.packetsLost / tot) : 0;
      st.jitterBufferDelay = v.jitterBufferDelay || 0;
      st.jitterBufferEmittedCount = v.jitterBufferEmittedCount || 0;
      st.framesDecoded = v.framesDecoded || 0;
      st.kbps = null; // needs two samples
      let jbMs = st.jitterBufferEmittedCount > 0 ? 1000 * st.jitterBufferDelay / st.jitterBufferEmittedCount : null;
      if (prev && prev.bytesReceived != null && now > prev.time) {
        st.kbps = C.kbps(st.bytesReceived, now, prev.bytesReceived, prev.time);
        const dn = st.jitterBufferEmittedCount - prev.jitterBufferEmittedCount;
        if (dn > 0) jbMs = 1000 * (st.jitterBufferDelay - prev.jitterBufferDelay) / dn;
      }
      st.jitterBufferMs = jbMs;
    }
    st.rttMs = pair && pair.currentRoundTripTime != null ? 1000 * pair.currentRoundTripTime : null;
    st.delayMs = st.jitterBufferMs != null ? st.jitterBufferMs + (st.rttMs != null ? st.rttMs / 2 : 0) : null;

    if (!prev || bytes > (prev.totalBytes || 0)) lastBytesAt = now;
    st.totalBytes = bytes;
    prev = st;
    player.stats = st;
    renderStats(st);

    if (conn.connectionState === 'connected' && now - lastBytesAt > STALL_TIMEOUT_MS) {
      reconnect('No media received');
    }
  }

  function fmt(n, d) { return n == null || isNaN(n) ? '–' : n.toFixed(d); }

  function renderStats(st) {
    const lines = [
      'state      ' + player.state + ' (' + st.connectionState + ')',
      'resolution ' + (st.width ? st.width + 'x' + st.height : '–'),
      'quality    ' + layer,
      'fps        ' + (st.fps ? fmt(st.fps, 0) : '–'),
      'bitrate    ' + fmt(st.kbps, 0) + ' kbps',
      'loss       ' + fmt(st.lossPct, 2) + ' %',
      'delay ≈    ' + (st.delayMs != null ? fmt(st.delayMs, 0) + ' ms' : '–') +
        (st.rttMs != null ? '  (rtt ' + fmt(st.rttMs, 1) + ' ms)' : ''),
    ];
    if (st.codec) lines.push('codec      ' + st.codec.replace(/^video\//, ''));
    statsEl.textContent = lines.join('\n');
  }

  C.every(1000, pollStats);

  // ---- controls ----
  function syncUnmute() { unmuteBtn.textContent = video.muted ? 'Unmute' : 'Mute'; }
  unmuteBtn.addEventListener('click', function () {
    video.muted = !video.muted;
    syncUnmute();
    tryPlay();
  });
  video.addEventListener('volumechange', syncUnmute);

  let showStats = true;
  try { showStats = localStorage.getItem('aethex.stats') !== 'off'; } catch (_) { /* ignore */ }
  function applyStats() {
    statsEl.hidden = !showStats;
    statsBtn.setAttribute('aria-pressed', String(showStats));
  }
  function toggleStats() {
    showStats = !showStats;
    try { localStorage.setItem('aethex.stats', showStats ? 'on' : 'off'); } catch (_) { /* ignore */ }
    applyStats();
  }
  statsBtn.addEventListener('click', toggleStats);
  document.addEventListener('keydown', function (ev) {
    const t = ev.target && ev.target.tagName;
    if (t === 'SELECT' || t === 'INPUT' || t === 'TEXTAREA') return; // typing in a form control
    if ((ev.key === 's' || ev.key === 'S') && !ev.ctrlKey && !ev.metaKey && !ev.altKey) toggleStats();
  });

  // Quality: remembered for the next WHEP POST (?layer=), and applied to a live session at once.
  async function sendLayer(url, value) {
    const to = C.withTimeout(LAYER_TIMEOUT_MS);
    try {
      const resp = await fetch(url + '/layer', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ layer: value }),
        signal: to.signal,
      });
      if (url === resourceUrl) player.layerStatus = resp.status;
      if (resp.status !== 204 && resp.status !== 200 && url === resourceUrl && resp.status !== 404) {
        const e = await C.readError(resp);
        console.warn('quality change to ' + value + ' refused: ' + e.text);
      }
    } catch (_) {
      if (url === resourceUrl) player.layerStatus = 0; // network error or timeout
    } finally {
      to.done();
    }
  }
  function setLayer(value) {
    if (LAYERS.indexOf(value) < 0) value = 'auto';
    layer = value;
    player.layer = value;
    qualitySel.value = value;
    try { localStorage.setItem('aethex.layer', value); } catch (_) { /* ignore */ }
    if (resourceUrl) sendLayer(resourceUrl, value);
    if (player.stats && player.stats.time) renderStats(player.stats);
  }
  qualitySel.value = layer;
  qualitySel.addEventListener('change', function () { setLayer(qualitySel.value); });
  retryBtn.addEventListener('click', function () {
    backoffMs = 1000;
    connect();
  });
  applyStats();
  syncUnmute();

  window.addEventListener('pagehide', function () {
    stopped = true;
    teardown();
  });
  window.addEventListener('pageshow', function (ev) {
    if (ev.persisted && stopped && channel) { stopped = false; connect(); } // back/forward cache
  });

  if (!channel) {
    setState('error', 'No channel in the URL.');
  } else if (typeof RTCPeerConnection === 'undefined') {
    setState('error', 'This browser does not support WebRTC.');
  } else {
    connect();
  }
})();
