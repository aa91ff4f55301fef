// Headless Chromium end-to-end test of the co-stream page /stage/{channel}?invite=si_… against a
// running server.
//
//   AETHEX_URL=http://127.0.0.1:18080 AETHEX_CHANNEL=stagech AETHEX_KEY=sk_... \
//   AETHEX_INVITE_A=si_... AETHEX_INVITE_B=si_... node tests/browser/stage.test.mjs
//
// One Chromium (fake camera and microphone), pages in one context:
//   host  publishes the channel from /live with the stream key;
//   A, B  open the stage page with their invites and press Join (WHIP publish + WHEP watch);
// then checks that A and B each show exactly 2 playing tiles (the host and the other guest: the
// server never sends a guest itself, so 2 and not 3), that Leave on A DELETEs both of its
// sessions (2xx) and clears the page, that B's tiles drop to 1 within 15 s, and that a bad
// invite gives a clear error about the invite (401) and no tile. A one-section viewer (the watch
// page) on the stage plays a participant and receives the mix. With AETHEX_HOST=obs the host is
// OBS's WebRTC stack (libdatachannel, H.264) beside the Chromium guests (VP8). Prints `ok - name` /
// `not ok - name: why` per case, `# ` notes (time from Join to the first remote frame) and a
// final `N passed, M failed` line; exits 0 only when nothing failed.
//
// The page reads window.stage (documented in web-client/stage.js). The pages and scripts come
// from the server (compiled into the binary); AETHEX_WEB_CLIENT_DIR=web-client serves /stage/*
// and /static/* from that directory instead, to test a changed page without rebuilding.
import fs from 'node:fs';
import path from 'node:path';

import { CHROMIUM, createHarness, sleep } from './lib.mjs';

const BASE = (process.env.AETHEX_URL || 'http://127.0.0.1:18080').replace(/\/+$/, '');
const CHANNEL = process.env.AETHEX_CHANNEL || '';
const KEY = process.env.AETHEX_KEY || '';
const INVITE_A = process.env.AETHEX_INVITE_A || '';
const INVITE_B = process.env.AETHEX_INVITE_B || '';
const WEB_DIR = process.env.AETHEX_WEB_CLIENT_DIR || '';
// AETHEX_HOST=obs: the host is already live from OBS's WebRTC stack (tests/peers/obs_peer.py,
// libdatachannel, H.264, started by run.sh); the test checks it is live instead of going live
// from /live in Chromium.
const HOST_OBS = process.env.AETHEX_HOST === 'obs';
const TOTAL_TIMEOUT_MS = 130_000;
const PLAY_TIMEOUT_MS = 20_000;  // until both guests show their 2 tiles playing
const DROP_TIMEOUT_MS = 15_000;  // until B notices that A left
const MIN_FRAMES = 15;           // framesDecoded growth that counts as "playing"

const pages = { host: null, a: null, b: null, bad: null };
const badErrors = [];

// Whatever happened: leave the stage on the guest pages, stop the host (bounded).
async function cleanup() {
  const bounded = (p) => Promise.race([p.catch(() => {}), sleep(4000)]);
  for (const k of ['a', 'b', 'bad']) {
    const page = pages[k];
    if (!page || page.isClosed()) continue;
    await bounded(page.evaluate(() => {
      const b = document.getElementById('leave');
      if (b && !b.disabled) b.click();
      return new Promise((r) => setTimeout(r, 500));
    }));
  }
  if (pages.host && !pages.host.isClosed()) {
    await bounded(pages.host.evaluate(() => {
      const b = document.getElementById('stop');
      if (b && !b.disabled) b.click();
      return new Promise((r) => setTimeout(r, 500));
    }));
  }
}

const h = createHarness({ totalTimeoutMs: TOTAL_TIMEOUT_MS, cleanup });
const { note, pass, fail, poll, launchChromium } = h;

// Uncaught page errors, and console errors other than the browser's own "Failed to load
// resource" lines (the 401 of the bad invite, the 404s of WHEP while no one else is live).
function watchErrors(page, label, errors = []) {
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(`[${label}] ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`[${label}] pageerror: ${e && e.message || e}`));
  return errors;
}

// WHIP/WHEP requests of a page: { method, kind: 'whip'|'whep', url, status, offer }.
function watchSignaling(page) {
  const seen = [];
  page.on('response', (r) => {
    const req = r.request();
    const u = new URL(r.url());
    const m = u.pathname.match(/^\/(whip|whep)\//);
    if (!m) return;
    seen.push({ method: req.method(), kind: m[1], url: r.url(), status: r.status(),
      auth: (req.headers().authorization || ''), offer: req.method() === 'POST' ? (req.postData() || '') : '' });
  });
  return seen;
}

const TYPES = { '.js': 'text/javascript', '.css': 'text/css', '.html': 'text/html' };

// Serve /stage/* and /static/* from WEB_DIR (AETHEX_WEB_CLIENT_DIR).
async function serveWebClient(ctx) {
  await ctx.route((u) => u.pathname.startsWith('/stage/') || u.pathname.startsWith('/static/'), (route) => {
    const u = new URL(route.request().url());
    const file = u.pathname.startsWith('/stage/') ? 'stage.html' : path.basename(u.pathname);
    const full = path.join(WEB_DIR, file);
    if (!fs.existsSync(full)) return route.fulfill({ status: 404, body: 'not found' });
    return route.fulfill({ status: 200, contentType: TYPES[path.extname(file)] || 'application/octet-stream', body: fs.readFileSync(full) });
  });
}

const stageUrl = (invite) => `${BASE}/stage/${encodeURIComponent(CHANNEL)}?invite=${encodeURIComponent(invite)}`;

// The page's window.stage, plus what the DOM shows.
const stageState = (page) => page.evaluate(() => {
  const s = window.stage || {};
  const grid = document.getElementById('grid');
  const preview = document.getElementById('preview');
  return {
    state: s.state, watching: s.watching, message: s.message || '',
    watchText: (document.getElementById('watchstatus') || {}).textContent || '',
    tiles: typeof s.tiles === 'function' ? s.tiles() : null,
    visibleVideos: grid ? Array.from(grid.querySelectorAll('.tile')).filter((t) => !t.hidden && t.offsetWidth > 0).length : -1,
    gridChildren: grid ? grid.children.length : -1,
    previewLive: !!(preview && preview.srcObject && preview.srcObject.getTracks().some((t) => t.readyState === 'live')),
    timings: s.timings || null, left: s.left || null,
  };
});

const describeTiles = (tiles) => (tiles || []).map((t) => `#${t.index} mid ${t.mid} ${t.width}x${t.height} ${t.framesDecoded} frames`).join(', ') || 'none';

// Open the stage page for an invite and check what it shows before Join.
async function openStage(ctx, invite, label, errors = []) {
  const page = await ctx.newPage();
  watchErrors(page, label, errors);
  const signaling = watchSignaling(page);
  await page.goto(stageUrl(invite), { timeout: 10000 });
  await page.waitForFunction(() => window.stage && window.stage.state, null, { timeout: 5000 });
  return { page, errors, signaling };
}

// Press Join and wait until the page publishes (state live) and shows at least `minTiles` tiles.
async function joinAndWait(g, minTiles) {
  await g.page.click('#join', { timeout: 5000 });
  return poll(async () => {
    const s = await stageState(g.page);
    s.done = s.state === 'error' || (s.state === 'live' && (s.tiles || []).length >= minTiles && s.tiles.every((t) => t.width > 0));
    return s;
  }, PLAY_TIMEOUT_MS, 250);
}

const since = (t, from) => (t != null && from != null ? `${Math.round(t - from)} ms` : 'n/a');

async function main() {
  if (!CHANNEL || !KEY || !INVITE_A || !INVITE_B) {
    throw new Error('AETHEX_CHANNEL, AETHEX_KEY, AETHEX_INVITE_A and AETHEX_INVITE_B must be set');
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (run scripts/install-test-deps.sh)`);
  const ctx = await launchChromium();
  note(`chromium ${h.browser.version()}, server ${BASE}, channel ${CHANNEL}${WEB_DIR ? `, page from ${WEB_DIR}` : ''}`);
  if (WEB_DIR) await serveWebClient(ctx);

  // 1) the host
  let hostErrors = [];
  let hostLive = false;
  if (HOST_OBS) {
    const name = 'the host is live from OBS\'s WebRTC stack (libdatachannel, H.264)';
    try {
      const st = await poll(async () => {
        const r = await fetch(`${BASE}/api/channels/${encodeURIComponent(CHANNEL)}`);
        const body = r.ok ? await r.json() : {};
        return { done: body.live === true, status: r.status, live: body.live };
      }, 10000, 250);
      if (st.done) { hostLive = true; pass(name); } else fail(name, `GET /api/channels/${CHANNEL}: ${st.status}, live=${st.live}`);
    } catch (e) { fail(name, e.message); }
  } else {
    pages.host = await ctx.newPage();
    hostErrors = watchErrors(pages.host, 'host');
    const name = 'the host goes live from /live with the stream key';
    try {
      const st = await h.goLive(pages.host, BASE, KEY);
      if (st.state === 'live') { hostLive = true; pass(name); } else fail(name, `state=${st.state} message=${JSON.stringify(st.message)}`);
    } catch (e) { fail(name, e.message); }
  }

  // 2) guest A
  const A = await openStage(ctx, INVITE_A, 'A');
  pages.a = A.page;
  {
    const name = 'the stage page shows the channel and a Join button';
    try {
      const st = await A.page.evaluate(() => ({
        channel: (document.getElementById('channel') || {}).textContent,
        join: !!document.getElementById('join') && !document.getElementById('join').disabled,
        leave: !!document.getElementById('leave') && document.getElementById('leave').disabled,
        state: window.stage.state,
        href: location.href,
      }));
      if (st.channel !== CHANNEL) fail(name, `#channel is ${JSON.stringify(st.channel)}`);
      else if (!st.join || !st.leave) fail(name, `Join enabled=${st.join}, Leave disabled=${st.leave}`);
      else if (st.state !== 'idle') fail(name, `state=${st.state}`);
      else pass(name);
    } catch (e) { fail(name, e.message); }
  }

  let aJoined = false;
  {
    const name = 'guest A joins: WHIP publish and WHEP watch with the invite, the host appears';
    try {
      if (!hostLive) throw new Error('the host is not live (case 1 failed)');
      const st = await joinAndWait(A, 1);
      const whip = A.signaling.find((r) => r.method === 'POST' && r.kind === 'whip');
      const whep = A.signaling.filter((r) => r.method === 'POST' && r.kind === 'whep');
      const lastWhep = whep[whep.length - 1];
      const kinds = lastWhep ? (lastWhep.offer.match(/^m=(video|audio)/gm) || []).map((l) => l.slice(2)) : [];
      const recvonly = lastWhep ? (lastWhep.offer.match(/^a=recvonly/gm) || []).length : 0;
      const interleaved = kinds.length === 10 && kinds.every((k, i) => k === (i % 2 ? 'audio' : 'video'));
      const leaks = A.signaling.filter((r) => /si_/.test(r.url));
      if (st.state !== 'live') throw new Error(`state=${st.state} message=${JSON.stringify(st.message)} watching=${st.watching}`);
      if (!whip || whip.status !== 201 || whip.auth !== `Bearer ${INVITE_A}`) throw new Error(`WHIP POST: ${whip ? `${whip.status}, bearer ${whip.auth === `Bearer ${INVITE_A}` ? 'the invite' : 'NOT the invite'}` : 'none'}`);
      if (!lastWhep || lastWhep.status !== 201 || lastWhep.auth !== `Bearer ${INVITE_A}`) throw new Error(`WHEP POSTs: ${whep.map((r) => r.status).join(',') || 'none'}`);
      if (!interleaved || recvonly !== 10) throw new Error(`WHEP offer sections: ${kinds.join(',')} (${recvonly} recvonly), want 5 video + 5 audio interleaved`);
      if (leaks.length) throw new Error(`the invite is in a request URL: ${leaks.length} requests`);
      if ((st.tiles || []).length < 1) throw new Error(`tiles: ${describeTiles(st.tiles)}, watching=${st.watching} ${JSON.stringify(st.watchText)}`);
      aJoined = true;
      note(`A: Join -> WHIP connected ${since(st.timings.published, st.timings.join)}, Join -> first remote frame ${since(st.timings.firstFrame, st.timings.join)}; tiles: ${describeTiles(st.tiles)}`);
      pass(name);
    } catch (e) { fail(name, e.message); }
  }

  // 3) guest B
  const B = await openStage(ctx, INVITE_B, 'B');
  pages.b = B.page;
  let bJoined = false;
  {
    const name = 'guest B joins and sees the others';
    try {
      if (!hostLive) throw new Error('the host is not live (case 1 failed)');
      const st = await joinAndWait(B, aJoined ? 2 : 1);
      if (st.state !== 'live') throw new Error(`state=${st.state} message=${JSON.stringify(st.message)} watching=${st.watching}`);
      if ((st.tiles || []).length < 1) throw new Error(`tiles: ${describeTiles(st.tiles)}, watching=${st.watching} ${JSON.stringify(st.watchText)}`);
      bJoined = true;
      note(`B: Join -> WHIP connected ${since(st.timings.published, st.timings.join)}, Join -> first remote frame ${since(st.timings.firstFrame, st.timings.join)}; tiles: ${describeTiles(st.tiles)}`);
      pass(name);
    } catch (e) { fail(name, e.message); }
  }

  // 4) each guest: exactly 2 playing tiles (the host and the other guest), never 3
  {
    const name = 'A and B each show exactly 2 playing tiles (the host and the other guest, not themselves), named from the stage map';
    try {
      if (!aJoined || !bJoined) throw new Error('A or B did not join');
      const first = { a: {}, b: {} };
      const max = { a: 0, b: 0 };
      const t0 = Date.now();
      const check = (k, s) => {
        const tiles = s.tiles || [];
        max[k] = Math.max(max[k], tiles.length, s.visibleVideos);
        for (const t of tiles) if (first[k][t.mid] == null) first[k][t.mid] = t.framesDecoded;
        return tiles.length === 2 && s.visibleVideos === 2 &&
          tiles.every((t) => t.width > 0 && t.height > 0 && t.framesDecoded - first[k][t.mid] >= MIN_FRAMES);
      };
      const st = await poll(async () => {
        const [a, b] = await Promise.all([stageState(A.page), stageState(B.page)]);
        return { done: check('a', a) && check('b', b), a, b };
      }, PLAY_TIMEOUT_MS, 300);
      if (!st.done) {
        throw new Error(`after ${PLAY_TIMEOUT_MS / 1000} s: A tiles ${describeTiles(st.a && st.a.tiles)} (watching ${st.a && st.a.watching}); ` +
          `B tiles ${describeTiles(st.b && st.b.tiles)} (watching ${st.b && st.b.watching})`);
      }
      note(`2 + 2 tiles playing ${Date.now() - t0} ms after B joined; A: ${describeTiles(st.a.tiles)}; B: ${describeTiles(st.b.tiles)}`);
      // Hold: still exactly 2 each a little later (a third tile would be the guest itself).
      await sleep(2500);
      const [a2, b2] = await Promise.all([stageState(A.page), stageState(B.page)]);
      max.a = Math.max(max.a, (a2.tiles || []).length); max.b = Math.max(max.b, (b2.tiles || []).length);
      if ((a2.tiles || []).length !== 2 || (b2.tiles || []).length !== 2) throw new Error(`2.5 s later: A ${describeTiles(a2.tiles)}; B ${describeTiles(b2.tiles)}`);
      if (max.a > 2 || max.b > 2) throw new Error(`at some point A showed ${max.a} and B ${max.b} tiles`);
      // The stage map names the tiles: the host (by its channel) and the other guest.
      const labels = (t) => (t || []).map((x) => x.label).sort().join(', ');
      const wantA = [`${CHANNEL} (host)`, 'Bob'].sort().join(', ');
      const wantB = ['Ann', `${CHANNEL} (host)`].sort().join(', ');
      if (labels(a2.tiles) !== wantA || labels(b2.tiles) !== wantB) {
        throw new Error(`tile names: A [${labels(a2.tiles)}] (want [${wantA}]), B [${labels(b2.tiles)}] (want [${wantB}])`);
      }
      pass(name);
    } catch (e) { fail(name, e.message); }
  }

  // 4b) a one-section viewer: the watch page, as any WHEP player
  {
    const name = 'a one-section viewer (/watch) plays a participant and hears the stage\'s mix';
    let watch = null;
    try {
      if (!aJoined || !bJoined) throw new Error('A or B did not join');
      watch = await ctx.newPage();
      // Keep the page's RTCPeerConnection reachable for getStats (player.js holds it privately).
      await watch.addInitScript(() => {
        const Native = window.RTCPeerConnection;
        window.__pcs = [];
        window.RTCPeerConnection = function (...args) { const pc = new Native(...args); window.__pcs.push(pc); return pc; };
        window.RTCPeerConnection.prototype = Native.prototype;
      });
      await watch.goto(`${BASE}/watch/${encodeURIComponent(CHANNEL)}`, { timeout: 10000 });
      const sample = () => watch.evaluate(async () => {
        const v = document.querySelector('video');
        const pc = (window.__pcs || [])[window.__pcs.length - 1];
        let audio = 0; let videoCodec = '';
        if (pc) {
          const report = await pc.getStats();
          const codecs = {};
          report.forEach((r) => { if (r.type === 'codec') codecs[r.id] = r.mimeType; });
          report.forEach((r) => {
            if (r.type !== 'inbound-rtp') return;
            if (r.kind === 'audio') audio += r.packetsReceived || 0;
            if (r.kind === 'video') videoCodec = codecs[r.codecId] || '';
          });
        }
        return { w: v.videoWidth, h: v.videoHeight, ct: v.currentTime, audio, videoCodec, state: (window.aethexPlayer || {}).state };
      });
      let first = null;
      const st = await poll(async () => {
        const s1 = await sample();
        if (s1.w > 0 && first === null) first = s1;
        s1.done = first !== null && s1.ct - first.ct >= 1.5 && s1.audio - first.audio >= 50 && s1.state === 'playing';
        return s1;
      }, PLAY_TIMEOUT_MS, 300);
      if (!st.done) {
        throw new Error(`videoWidth=${st.w} currentTime=${st.ct} audio packets=${st.audio} (first ${first && first.audio}) state=${st.state}`);
      }
      note(`one-section viewer: ${st.w}x${st.h} ${st.videoCodec}, ${st.audio - first.audio} mix packets in ${(st.ct - first.ct).toFixed(1)} s`);
      pass(name);
    } catch (e) { fail(name, e.message); }
    if (watch) await watch.close().catch(() => {});
  }

  // 5) A leaves
  let aLeft = false;
  {
    const name = 'Leave on A DELETEs both sessions (2xx), stops the camera and clears the grid';
    try {
      if (!aJoined) throw new Error('A did not join');
      const before = A.signaling.length;
      await A.page.click('#leave', { timeout: 5000 });
      const st = await poll(async () => {
        const s = await stageState(A.page);
        s.deletes = A.signaling.slice(before).filter((r) => r.method === 'DELETE');
        s.done = s.state === 'idle' && s.left != null && s.deletes.length >= 2;
        return s;
      }, 8000, 200);
      aLeft = true;
      const dels = (st.deletes || []).map((r) => `${r.kind} ${r.status}`).join(', ') || 'none';
      const ok2xx = (v) => v >= 200 && v < 300;
      if (!st.done) throw new Error(`state=${st.state} left=${JSON.stringify(st.left)} DELETEs: ${dels}`);
      if (!ok2xx(st.left.whip) || !ok2xx(st.left.whep)) throw new Error(`window.stage.left = ${JSON.stringify(st.left)}`);
      const kinds = st.deletes.map((r) => r.kind).sort().join(',');
      if (kinds !== 'whep,whip' || !st.deletes.every((r) => ok2xx(r.status))) throw new Error(`DELETEs seen: ${dels}`);
      if ((st.tiles || []).length !== 0 || st.gridChildren !== 0) throw new Error(`after Leave: tiles ${describeTiles(st.tiles)}, ${st.gridChildren} grid children`);
      if (st.previewLive) throw new Error('the local preview still has live tracks');
      note(`A left: DELETEs ${dels}`);
      pass(name);
    } catch (e) { fail(name, e.message); }
  }

  // 6) B notices
  {
    const name = `B shows 1 tile (the host) within ${DROP_TIMEOUT_MS / 1000} s of A leaving, still playing`;
    try {
      if (!aLeft || !bJoined) throw new Error('A did not leave or B did not join');
      const t0 = Date.now();
      let base = null;
      const st = await poll(async () => {
        const s = await stageState(B.page);
        const tiles = s.tiles || [];
        if (tiles.length === 1 && (!base || base.mid !== tiles[0].mid)) base = { mid: tiles[0].mid, frames: tiles[0].framesDecoded, at: Date.now() };
        s.dropAt = base ? base.at - t0 : null;
        s.done = tiles.length === 1 && s.visibleVideos === 1 && base && tiles[0].mid === base.mid && tiles[0].framesDecoded - base.frames >= MIN_FRAMES / 2;
        return s;
      }, DROP_TIMEOUT_MS, 250);
      if (!st.done) throw new Error(`B tiles after ${DROP_TIMEOUT_MS / 1000} s: ${describeTiles(st.tiles)} (watching ${st.watching})`);
      note(`B dropped to 1 tile ${st.dropAt} ms after A's Leave; ${describeTiles(st.tiles)}`);
      pass(name);
    } catch (e) { fail(name, e.message); }
  }

  // 7) a bad invite
  {
    const name = 'a bad invite: Join shows an error about the invite (401) and no tile';
    try {
      const bad = await openStage(ctx, 'si_wrong', 'bad', badErrors);
      pages.bad = bad.page;
      await bad.page.click('#join', { timeout: 5000 });
      const st = await poll(async () => {
        const s = await stageState(bad.page);
        s.done = s.state === 'error';
        return s;
      }, 10000, 200);
      await sleep(1000); // nothing else should follow (no WHEP, no tile)
      const after = await stageState(bad.page);
      const whip = bad.signaling.filter((r) => r.method === 'POST' && r.kind === 'whip');
      const whep = bad.signaling.filter((r) => r.method === 'POST' && r.kind === 'whep');
      const shown = await bad.page.evaluate(() => document.getElementById('status').textContent);
      if (!st.done) throw new Error(`state=${st.state} message=${JSON.stringify(st.message)}`);
      if (!whip.length || whip[0].status !== 401) throw new Error(`WHIP POSTs: ${whip.map((r) => r.status).join(',') || 'none'}`);
      if (!/invite/i.test(shown) || !/401/.test(shown)) throw new Error(`status line: ${JSON.stringify(shown)}`);
      if (whep.length) throw new Error(`${whep.length} WHEP POSTs after a refused join`);
      if ((after.tiles || []).length || after.visibleVideos) throw new Error(`tiles: ${describeTiles(after.tiles)}`);
      if (after.previewLive) throw new Error('the camera is still open after the refused join');
      if (after.state !== 'error') throw new Error(`state changed to ${after.state}`);
      note(`bad invite: ${shown}`);
      pass(name);
    } catch (e) { fail(name, e.message); }
  }

  // 8) console
  {
    const name = 'no uncaught errors on the host and stage pages';
    const all = [...hostErrors, ...A.errors, ...B.errors, ...badErrors];
    if (all.length) fail(name, all.join(' ;; ').slice(0, 1500));
    else pass(name);
  }
}

h.run(main);
