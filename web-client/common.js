// AeThex LIVE — helpers shared by the go-live page (live.js) and the player (player.js).
// Plain browser JS, no dependencies. Defines window.AethexCommon; load it before the page script.
(function () {
  'use strict';

  // An AbortSignal that fires after `ms`; call done() once the request has settled.
  function withTimeout(ms) {
    const ctl = new AbortController();
    const t = setTimeout(function () { ctl.abort(); }, ms);
    return { signal: ctl.signal, done: function () { clearTimeout(t); } };
  }

  // Read a server error body ({ code, error | message } JSON, or text) into { code, text }.
  // `statusText` optionally maps an HTTP status to the text to use when the body has none.
  async function readError(resp, statusText) {
    let code = '';
    let text = '';
    try {
      const body = await resp.text();
      try {
        const j = JSON.parse(body);
        code = j.code || '';
        text = j.error || j.message || '';
      } catch (_) {
        text = body.slice(0, 200);
      }
    } catch (_) { /* ignore */ }
    if (!text) text = (statusText && statusText[resp.status]) || 'HTTP ' + resp.status;
    return { code: code, text: text };
  }

  // POST an SDP offer to a WHIP/WHEP endpoint. Resolves to the response whatever its status;
  // rejects on a network error, or with an AbortError after `timeoutMs`.
  async function postSdp(url, sdp, headers, timeoutMs) {
    const to = withTimeout(timeoutMs);
    try {
      return await fetch(url, {
        method: 'POST',
        headers: Object.assign({ 'Content-Type': 'application/sdp', 'Accept': 'application/sdp' }, headers),
        body: sdp,
        signal: to.signal,
      });
    } finally {
      to.done();
    }
  }

  // Create and set the local offer, then POST it (postSdp). Resolves to the response, or to null
  // without sending anything if isCurrent() turned false meanwhile.
  async function sendOffer(conn, url, headers, timeoutMs, isCurrent) {
    const offer = await conn.createOffer();
    await conn.setLocalDescription(offer);
    if (!isCurrent()) return null;
    // The server is ICE-lite: no need to wait for our candidates, send the offer at once.
    return postSdp(url, conn.localDescription.sdp, headers, timeoutMs);
  }

  // The session resource URL from a 201's Location header (absolute), or null. Relative to the
  // URL that answered: after a 307 to an edge, the session lives at the edge.
  function locationOf(resp, endpoint) {
    const loc = resp.headers.get('Location');
    const base = resp.url || new URL(endpoint, location.href).href;
    return loc ? new URL(loc, base).href : null;
  }

  // The answer SDP of a successful POST ('' if the body cannot be read).
  async function readAnswer(resp) {
    try { return await resp.text(); } catch (_) { return ''; }
  }

  // End a session: DELETE its resource. Without `waitMs` it is fire-and-forget with keepalive
  // (works during page unload); with it, resolves once the server answered or after waitMs.
  async function deleteResource(url, waitMs) {
    if (!url) return;
    if (!waitMs) {
      try { fetch(url, { method: 'DELETE', keepalive: true }).catch(function () {}); } catch (_) { /* ignore */ }
      return;
    }
    const to = withTimeout(waitMs);
    try { await fetch(url, { method: 'DELETE', signal: to.signal }); } catch (_) { /* ignore */ }
    to.done();
  }

  // Detach the handlers of a peer connection and close it.
  function closePeer(conn) {
    if (!conn) return;
    conn.ontrack = null;
    conn.onconnectionstatechange = null;
    try { conn.close(); } catch (_) { /* ignore */ }
  }

  // Follow a peer connection's state. `h.isCurrent()` false means the page has moved on to another
  // session: events are ignored. `h.onState(st)` (optional) sees every change; `h.onConnected()`
  // runs on 'connected'; `h.onLost()` on 'failed'/'closed', or after `graceMs` of 'disconnected'.
  // Returns { connectTimeout(ms, fn): run fn if not connected within ms, stop(): clear timers }.
  function watchConnection(conn, graceMs, h) {
    let dropTimer = null;
    let connectTimer = null;
    function stop() {
      clearTimeout(connectTimer); connectTimer = null;
      clearTimeout(dropTimer); dropTimer = null;
    }
    conn.onconnectionstatechange = function () {
      if (!h.isCurrent()) return;
      const st = conn.connectionState;
      if (h.onState) h.onState(st);
      if (st === 'connected') {
        stop();
        h.onConnected();
      } else if (st === 'disconnected') {
        if (!dropTimer) {
          dropTimer = setTimeout(function () {
            dropTimer = null;
            if (h.isCurrent() && conn.connectionState !== 'connected') h.onLost();
          }, graceMs);
        }
      } else if (st === 'failed' || st === 'closed') {
        h.onLost();
      }
    };
    return {
      connectTimeout: function (ms, fn) {
        clearTimeout(connectTimer);
        connectTimer = setTimeout(function () {
          connectTimer = null;
          if (h.isCurrent() && conn.connectionState !== 'connected') fn();
        }, ms);
      },
      stop: stop,
    };
  }

  // Start playback; a rejected play() (autoplay policy) stays quiet.
  function play(videoEl) {
    const p = videoEl.play();
    if (p && typeof p.catch === 'function') p.catch(function () {});
  }

  // ---- stats ----

  // conn.getStats(), or null if it fails.
  async function getStats(conn) {
    try { return await conn.getStats(); } catch (_) { return null; }
  }

  // The codec mime type ('video/VP8', …) of an RTP stats entry, or ''.
  function codecOf(report, rtp) {
    return rtp.codecId && report.get(rtp.codecId) ? report.get(rtp.codecId).mimeType : '';
  }

  // Bit rate in kbps between two byte counter samples (ms timestamps).
  function kbps(bytes, time, prevBytes, prevTime) {
    return Math.max(0, 8 * (bytes - prevBytes) / (time - prevTime));
  }

  // Run the async `fn` every `ms`, ignoring its failures.
  function every(ms, fn) {
    return setInterval(function () { fn().catch(function () {}); }, ms);
  }

  // The camera and microphone at about `width` x `height`, 30 fps; without a microphone (none,
  // or busy), the camera alone.
  async function camera(width, height) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw new Error('Camera access needs HTTPS or localhost');
    const video = { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } };
    try {
      return await navigator.mediaDevices.getUserMedia({ video: video, audio: true });
    } catch (err) {
      if (err && (err.name === 'NotFoundError' || err.name === 'NotReadableError' || err.name === 'OverconstrainedError')) {
        return navigator.mediaDevices.getUserMedia({ video: video, audio: false });
      }
      throw err;
    }
  }

  window.AethexCommon = {
    camera: camera,
    withTimeout: withTimeout,
    readError: readError,
    postSdp: postSdp,
    sendOffer: sendOffer,
    locationOf: locationOf,
    readAnswer: readAnswer,
    deleteResource: deleteResource,
    closePeer: closePeer,
    watchConnection: watchConnection,
    play: play,
    getStats: getStats,
    codecOf: codecOf,
    kbps: kbps,
    every: every,
  };
})();
