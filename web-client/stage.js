// AeThex LIVE — co-stream page (/stage/{channel}?invite=si_…). A stage guest goes live with its
// camera and microphone over WHIP with its invite, and watches the other participants (the host,
// then the other guests; never itself) over WHEP with the same invite: one offer with 5 video + 5
// audio recvonly sections, each video/audio pair showing one participant (docs/costreaming.md,
// "Joining" and "Watching"). A pair's tile is shown while its video receives frames.
// Plain browser JS, no dependencies; load common.js first.
//
// Test hooks, window.stage (read-only for tests):
//   channel    the channel of the URL
//   state      our publish: 'idle' | 'joining' | 'live' | 'error'
//   watching   the others: 'off' | 'connecting' | 'waiting' (WHEP 404: no one else is live yet,
//              retried every 2 s) | 'connected' | 'error'
//   message    the status line's text
//   timings    performance.now() ms of the last Join: { join, published (WHIP media connected),
//              firstFrame (first remote tile shown) }, null before any Join
//   left       HTTP statuses of the last Leave's DELETEs: { whip, whep } (0: no answer, null: no
//              resource to delete), null before any Leave
//   tiles()    the remote tiles shown now, in section order:
//              [{ index, mid, width, height, framesDecoded, muted }]
// The invite is only ever sent as a bearer token; it is not logged and not exposed here.
(function () {
  'use strict';

  const PAIRS = 5;                 // a stage is the host + 5 guests: at most 5 others to show
  const WAIT_RETRY_MS = 2000;      // WHEP 404 (no one else live yet): ask again after this
  const MAX_WATCH_TRIES = 60;      // WHEP attempts in a row without a connected session
  const STALE_MS = 3000;           // a tile without a new frame for longer than this is hidden
  const TICK_MS = 1000;            // receiver stats poll
  const CONNECT_TIMEOUT_MS = 15000;
  const DISCONNECT_GRACE_MS = 5000;
  const HTTP_TIMEOUT_MS = 10000;
  const DELETE_TIMEOUT_MS = 3000;
  const C = window.AethexCommon;

  const segs = location.pathname.split('/').filter(Boolean);
  let channel = '';
  if (segs.length >= 2) {
    try { channel = decodeURIComponent(segs[1]); } catch (_) { channel = segs[1]; }
  }
  const invite = (new URLSearchParams(location.search).get('invite') || '').trim();
  const whipUrl = '/whip/' + encodeURIComponent(channel);
  const whepUrl = '/whep/' + encodeURIComponent(channel);
  function authHeaders() { return { 'Authorization': 'Bearer ' + invite }; }

  const $ = (id) => document.getElementById(id);
  const badge = $('badge');
  const statusEl = $('status');
  const watchStatusEl = $('watchstatus');
  const joinBtn = $('join');
  const leaveBtn = $('leave');
  const preview = $('preview');
  const grid = $('grid');
  const emptyEl = $('empty');
  const countEl = $('count');

  const stage = {
    channel: channel,
    state: 'idle',
    watching: 'off',
    message: '',
    timings: null,
    left: null,
    tiles: function () {
      return pairs.filter(function (p) { return p.shown; }).map(function (p) {
        return { index: p.index, mid: p.video.mid, width: p.el.videoWidth, height: p.el.videoHeight,
          framesDecoded: p.frames, muted: p.el.muted, label: p.label ? p.label.textContent : '' };
      });
    },
  };
  window.stage = stage;

  let generation = 0;   // bumped by every Join and Leave: work of an older one stops
  let stream = null;    // our camera + microphone
  let pubPc = null;     // WHIP
  let pubUrl = null;
  let pubWatch = null;
  let subPc = null;     // WHEP
  let subUrl = null;
  let subWatch = null;
  let stageEvents = null; // who each section shows (server-sent events of the WHEP session)
  let pairs = [];       // the WHEP session's section pairs (see newPair)
  let retryTimer = null;
  let tries = 0;

  $('channel').textContent = channel;
  document.title = 'Stage: ' + channel + ' — AeThex LIVE';
  $('watch-a').href = '/watch/' + encodeURIComponent(channel);

  function errText(err) { return String((err && (err.message || err.name)) || err); }

  function setState(state, text) {
    stage.state = state;
    stage.message = text || '';
    badge.className = 'badge ' + state;
    badge.textContent = state;
    statusEl.className = 'status ' + state;
    statusEl.textContent = text || '';
    const busy = state === 'joining' || state === 'live';
    joinBtn.disabled = busy || !invite || !channel;
    leaveBtn.disabled = !busy;
  }

  function setWatching(w, text) {
    stage.watching = w;
    watchStatusEl.className = 'watchstatus ' + w;
    watchStatusEl.textContent = text || '';
  }

  function stopTracks(s) {
    if (s) s.getTracks().forEach(function (t) { t.onended = null; t.stop(); });
  }

  // DELETE a session resource; resolves to the HTTP status (0: no answer), null without a URL.
  async function del(url) {
    if (!url) return null;
    const to = C.withTimeout(DELETE_TIMEOUT_MS);
    try {
      const resp = await fetch(url, { method: 'DELETE', signal: to.signal });
      return resp.status;
    } catch (_) {
      return 0;
    } finally {
      to.done();
    }
  }

  // A 2xx answer that came in after Leave (or a new Join): its session is not wanted.
  function discard(resp, endpoint) {
    if (resp && (resp.status === 201 || resp.status === 200)) C.deleteResource(C.locationOf(resp, endpoint));
  }

  // ---- remote tiles ----

  // One section pair: the video and audio transceiver with the same index, one MediaStream and
  // one tile for both.
  function newPair(index, video, audio) {
    return { index: index, video: video, audio: audio,
      stream: new MediaStream([video.receiver.track, audio.receiver.track]),
      tile: null, el: null, btn: null,
      statId: null, frames: 0, frameWidth: 0, progressAt: 0, shown: false };
  }

  function mountTile(p) {
    const tile = document.createElement('div');
    tile.className = 'tile';
    tile.hidden = true;
    const v = document.createElement('video');
    v.autoplay = true;
    v.playsInline = true;
    v.muted = true; // autoplay policy: start muted, the button unmutes
    v.srcObject = p.stream;
    const label = document.createElement('span');
    label.className = 'tile-label';
    label.textContent = '#' + (p.index + 1);
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'tile-unmute';
    btn.textContent = 'Unmute';
    btn.addEventListener('click', function () {
      v.muted = !v.muted;
      btn.textContent = v.muted ? 'Unmute' : 'Mute';
      C.play(v);
    });
    v.addEventListener('resize', function () {
      if (v.videoWidth > 0) { p.progressAt = Date.now(); refreshTile(p); }
    });
    const track = p.video.receiver.track;
    track.addEventListener('mute', function () { refreshTile(p); });
    track.addEventListener('unmute', function () { sample(p).then(function () { refreshTile(p); }); });
    tile.appendChild(v);
    tile.appendChild(label);
    p.label = label;
    tile.appendChild(btn);
    grid.appendChild(tile);
    p.tile = tile;
    p.el = v;
    p.btn = btn;
    C.play(v);
  }

  // Shown while the video track is live and unmuted and decoded a frame within STALE_MS.
  function refreshTile(p) {
    if (!p.tile || pairs.indexOf(p) < 0) return;
    const track = p.video.receiver.track;
    const fresh = track.readyState === 'live' && !track.muted && (p.el.videoWidth > 0 || p.frameWidth > 0) &&
      Date.now() - p.progressAt <= STALE_MS;
    if (fresh !== p.shown) {
      p.shown = fresh;
      p.tile.hidden = !fresh;
      if (fresh) {
        C.play(p.el);
        if (stage.timings && stage.timings.firstFrame == null) stage.timings.firstFrame = performance.now();
      }
      renderCount();
    }
  }

  // Read the pair's video receiver stats: progress is a growing framesDecoded of the RTP stream
  // that received last (a newcomer on a freed section may come with another stream).
  async function sample(p) {
    let report;
    try { report = await p.video.receiver.getStats(); } catch (_) { return; }
    let st = null;
    report.forEach(function (s) {
      if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
      if (!st || (s.lastPacketReceivedTimestamp || 0) > (st.lastPacketReceivedTimestamp || 0)) st = s;
    });
    if (!st) return;
    const f = st.framesDecoded || 0;
    p.frameWidth = st.frameWidth || 0;
    if (st.id !== p.statId) {
      p.statId = st.id;
      if (f > 0) p.progressAt = Date.now();
      p.frames = f;
    } else if (f > p.frames) {
      p.frames = f;
      p.progressAt = Date.now();
    }
  }

  async function tick() {
    const list = pairs;
    if (!subPc || !list.length) return;
    await Promise.all(list.map(sample));
    list.forEach(refreshTile);
  }
  C.every(TICK_MS, tick);

  function renderCount() {
    const n = pairs.filter(function (p) { return p.shown; }).length;
    countEl.textContent = n ? '(' + n + ')' : '';
    emptyEl.hidden = n > 0;
    if (stage.watching === 'connected') {
      setWatching('connected', n ? 'Watching ' + n + ' other' + (n === 1 ? '' : 's') + '.' : 'Connected; no one else is live right now.');
    }
  }

  function clearTiles() {
    pairs.forEach(function (p) {
      if (p.el) { p.el.srcObject = null; }
      if (p.tile && p.tile.parentNode) p.tile.parentNode.removeChild(p.tile);
    });
    pairs = [];
    grid.textContent = '';
    renderCount();
  }

  // ---- watching the others (WHEP) ----

  // End the current WHEP session (if any), keeping our publish. DELETE first (see teardown).
  // Name each tile after whom its section shows: the server says it on
  // `{session}/stage/events` (an `event: stage` with {"sections": [{video_mid, role, name}]}).
  function followStageMap(url) {
    if (stageEvents) stageEvents.close();
    stageEvents = new EventSource(url + '/stage/events');
    stageEvents.addEventListener('stage', function (ev) {
      let map;
      try { map = JSON.parse(ev.data); } catch (_) { return; }
      pairs.forEach(function (p) {
        if (!p.label) return;
        const s = (map.sections || []).find(function (x) { return x.video_mid === p.video.mid; });
        p.label.textContent = s ? s.name + (s.role === 'host' ? ' (host)' : '') : '#' + (p.index + 1);
      });
    });
  }

  function closeWatch() {
    clearTimeout(retryTimer); retryTimer = null;
    if (stageEvents) { stageEvents.close(); stageEvents = null; }
    if (subWatch) { subWatch.stop(); subWatch = null; }
    const url = subUrl;
    const conn = subPc;
    subUrl = null;
    subPc = null;
    clearTiles();
    const deleted = url ? C.deleteResource(url, DELETE_TIMEOUT_MS) : Promise.resolve();
    deleted.then(function () { C.closePeer(conn); });
  }

  function scheduleWatch(gen, ms) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(function () {
      retryTimer = null;
      if (gen === generation) watchOnce(gen);
    }, ms);
  }

  async function watchOnce(gen) {
    const current = function () { return gen === generation; };
    closeWatch();
    if (tries >= MAX_WATCH_TRIES) {
      setWatching('error', 'No one else came on the stage. Leave and join again to look again.');
      return;
    }
    tries++;
    if (stage.watching !== 'waiting') setWatching('connecting', 'Connecting to the others…');

    const conn = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    subPc = conn;
    const list = [];
    for (let i = 0; i < PAIRS; i++) {
      // Interleaved: the server fills video/audio section pairs in order.
      const v = conn.addTransceiver('video', { direction: 'recvonly' });
      const a = conn.addTransceiver('audio', { direction: 'recvonly' });
      list.push(newPair(i, v, a));
    }
    const mine = function () { return current() && subPc === conn; };
    subWatch = C.watchConnection(conn, DISCONNECT_GRACE_MS, {
      isCurrent: mine,
      onConnected: function () {
        tries = 0;
        setWatching('connected', '');
        renderCount();
      },
      onLost: function () {
        setWatching('connecting', 'Lost the connection to the others — reconnecting…');
        closeWatch();
        scheduleWatch(gen, 500);
      },
    });

    let resp;
    try {
      resp = await C.sendOffer(conn, whepUrl, authHeaders(), HTTP_TIMEOUT_MS, mine);
    } catch (err) {
      if (!mine()) return;
      closeWatch();
      setWatching('connecting', 'Cannot reach the server' + (err && err.name === 'AbortError' ? ' (timed out)' : '') + ' — retrying…');
      scheduleWatch(gen, WAIT_RETRY_MS);
      return;
    }
    if (!resp) return;
    if (!mine()) { discard(resp, whepUrl); return; }

    if (resp.status !== 201 && resp.status !== 200) {
      const e = await C.readError(resp);
      if (!mine()) return;
      closeWatch();
      if (resp.status === 404) {
        setWatching('waiting', 'Waiting for someone else to go live…');
        scheduleWatch(gen, WAIT_RETRY_MS);
      } else if (resp.status >= 400 && resp.status < 500 && resp.status !== 408 && resp.status !== 429) {
        setWatching('error', 'Cannot watch the others: ' + e.text + ' (HTTP ' + resp.status + ').');
      } else {
        setWatching('connecting', e.text + ' — retrying…');
        scheduleWatch(gen, WAIT_RETRY_MS);
      }
      return;
    }

    subUrl = C.locationOf(resp, whepUrl);
    const answer = await C.readAnswer(resp);
    if (!mine()) return;
    try {
      await conn.setRemoteDescription({ type: 'answer', sdp: answer });
    } catch (err) {
      if (!mine()) return;
      closeWatch();
      setWatching('error', 'Bad answer from the server: ' + errText(err));
      return;
    }
    if (!mine()) return;
    pairs = list;
    list.forEach(mountTile);
    followStageMap(subUrl);
    renderCount();
    if (conn.connectionState !== 'connected') setWatching('connecting', 'Connecting to the others…');
    subWatch.connectTimeout(CONNECT_TIMEOUT_MS, function () {
      setWatching('connecting', 'Connection to the others timed out — retrying…');
      closeWatch();
      scheduleWatch(gen, 500);
    });
  }

  // ---- joining (WHIP) ----

  async function getMedia() {
    return C.camera(640, 360);
  }

  // The text for a refused WHIP POST: the server's `error`, and what the status means here.
  function refusal(status, e) {
    if (status === 401) return 'Cannot join: ' + e.text + ' (HTTP 401). Ask the host for a new invite link.';
    if (status === 409) return 'Cannot join: ' + e.text + ' (HTTP 409).';
    return 'Cannot join: ' + e.text + ' (HTTP ' + status + ').';
  }

  // Release everything: both sessions (DELETEd), both peer connections, our tracks, the tiles.
  // Resolves to the DELETE statuses { whip, whep }; `keepalive` is for page unload (not awaited).
  // The DELETEs go first: a peer connection closed before them makes the server drop the session
  // by itself, and the DELETE would find nothing (404).
  async function teardown(keepalive) {
    generation++;
    clearTimeout(retryTimer); retryTimer = null;
    if (pubWatch) { pubWatch.stop(); pubWatch = null; }
    if (subWatch) { subWatch.stop(); subWatch = null; }
    const whip = pubUrl;
    const whep = subUrl;
    const pub = pubPc;
    const sub = subPc;
    pubUrl = null;
    subUrl = null;
    pubPc = null;
    subPc = null;
    stopTracks(stream); // the camera goes off at once
    stream = null;
    preview.srcObject = null;
    clearTiles();
    tries = 0;
    setWatching('off', '');
    let st = { whip: null, whep: null };
    if (keepalive) {
      C.deleteResource(whip);
      C.deleteResource(whep);
    } else {
      const r = await Promise.all([del(whip), del(whep)]);
      st = { whip: r[0], whep: r[1] };
    }
    C.closePeer(pub);
    C.closePeer(sub);
    return st;
  }

  async function fail(text) {
    await teardown(false);
    setState('error', text);
  }

  async function join() {
    await teardown(false);
    const gen = generation;
    const current = function () { return gen === generation; };
    stage.timings = { join: performance.now(), published: null, firstFrame: null };
    setState('joining', 'Opening camera and microphone…');

    let media;
    try {
      media = await getMedia();
    } catch (err) {
      if (!current()) return;
      setState('error', 'Could not open the camera or microphone: ' + errText(err));
      return;
    }
    if (!current()) { stopTracks(media); return; }
    stream = media;
    preview.srcObject = stream;
    C.play(preview);

    const conn = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    pubPc = conn;
    stream.getTracks().forEach(function (track) {
      conn.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      track.onended = function () { if (current()) fail('Your camera or microphone stopped. Press “Join” to go on stage again.'); };
    });
    pubWatch = C.watchConnection(conn, DISCONNECT_GRACE_MS, {
      isCurrent: current,
      onConnected: function () {
        if (stage.timings && stage.timings.published == null) stage.timings.published = performance.now();
        setState('live', 'You are live on the stage of “' + channel + '”.');
      },
      onLost: function () { fail('The connection to the server was lost (or the host ended your invite). Press “Join” to try again.'); },
    });

    setState('joining', 'Joining the stage…');
    let resp;
    try {
      resp = await C.sendOffer(conn, whipUrl, authHeaders(), HTTP_TIMEOUT_MS, current);
    } catch (err) {
      if (!current()) return;
      await fail('Cannot reach the server' + (err && err.name === 'AbortError' ? ' (timed out)' : '') + '. Press “Join” to try again.');
      return;
    }
    if (!resp) return;
    if (!current()) { discard(resp, whipUrl); return; }

    if (resp.status !== 201 && resp.status !== 200) {
      const e = await C.readError(resp, { 401: 'invalid, expired or revoked stage invite', 409: 'the stage is full' });
      if (!current()) return;
      await fail(refusal(resp.status, e));
      return;
    }
    pubUrl = C.locationOf(resp, whipUrl);
    const answer = await C.readAnswer(resp);
    if (!current()) return;
    try {
      await conn.setRemoteDescription({ type: 'answer', sdp: answer });
    } catch (err) {
      if (!current()) return;
      await fail('Bad answer from the server: ' + errText(err));
      return;
    }
    if (!current()) return;
    if (conn.connectionState !== 'connected') setState('joining', 'Connecting media…');
    pubWatch.connectTimeout(CONNECT_TIMEOUT_MS, function () { fail('The media connection timed out. Press “Join” to try again.'); });

    // Watch the others at once, beside our own publish.
    tries = 0;
    watchOnce(gen);
  }

  async function leave() {
    leaveBtn.disabled = true;
    joinBtn.disabled = true;
    const st = await teardown(false);
    stage.left = st;
    setState('idle', 'You left the stage. Press “Join” to go on again.');
  }

  joinBtn.addEventListener('click', function () {
    if (stage.state === 'joining' || stage.state === 'live') return;
    joinBtn.disabled = true;
    join().catch(function (err) { fail('Could not join: ' + errText(err)); });
  });
  leaveBtn.addEventListener('click', function () {
    leave().catch(function () { setState('idle', 'You left the stage.'); });
  });
  window.addEventListener('pagehide', function () {
    if (pubPc || subPc || pubUrl || subUrl || stream) teardown(true);
  });

  renderCount();
  if (!channel) {
    setState('error', 'No channel in the URL (/stage/{channel}?invite=…).');
  } else if (!invite) {
    setState('error', 'This link has no invite. Open the join link the host sent you (…/stage/' + channel + '?invite=si_…).');
  } else if (typeof RTCPeerConnection === 'undefined') {
    setState('error', 'This browser does not support WebRTC.');
    joinBtn.disabled = true;
  } else {
    setState('idle', 'Ready. Press “Join” to go on the stage of “' + channel + '” with your camera and microphone.');
  }
})();
