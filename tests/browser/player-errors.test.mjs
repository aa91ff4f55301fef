// Headless Chromium test of how the watch page's player handles WHEP failures.
//
//   AETHEX_URL=http://127.0.0.1:18080 node tests/browser/player-errors.test.mjs
//
// The WHEP POSTs of /watch/{channel} are answered by this script (playwright's page.route), not
// by the server, so no publisher is needed:
//   a  400 {"code":"codec_mismatch","error":...}: the server's text is shown once, no retry
//      (at most 1 POST in ~3.5 s), a Retry button appears and makes exactly one new POST;
//   b  201 with an answer Chromium cannot apply: the browser's error is shown once, the session
//      is DELETEd once, no retry;
//   c  404 {"code":"offline"}: still retried (every 2 s);
//   d  network error: still retried with backoff.
// Prints `ok - name` / `not ok - name: why` per case and a final `N passed, M failed` line;
// exits 0 only when nothing failed.
//
// The page, its scripts and styles come from the server (they are compiled into the binary).
// AETHEX_WEB_CLIENT_DIR=web-client serves /watch/* and /static/* from that directory instead, to
// test a changed player without rebuilding the server.
import fs from 'node:fs';
import path from 'node:path';

import { CHROMIUM, createHarness, sleep } from './lib.mjs';

const BASE = (process.env.AETHEX_URL || 'http://127.0.0.1:18080').replace(/\/+$/, '');
const CHANNEL = process.env.AETHEX_CHANNEL || 'player-errors';
const WEB_DIR = process.env.AETHEX_WEB_CLIENT_DIR || '';
const TOTAL_TIMEOUT_MS = 90_000;
const OBSERVE_MS = 3500; // how long a case watches for retries

const CODEC_ERROR = 'the stream is H264 (profile 640028) and this viewer offered none it can decode';

const h = createHarness({ totalTimeoutMs: TOTAL_TIMEOUT_MS });
const { note, pass, fail, poll, launchChromium } = h;

// Record every text the player's #message takes (setState replaces it each time). The
// observer starts when parsing is done, before the deferred player.js runs.
function recordMessages() {
  window.__messages = [];
  document.addEventListener('readystatechange', () => {
    if (document.readyState !== 'interactive') return;
    const el = document.getElementById('message');
    if (!el) return;
    new MutationObserver(() => window.__messages.push({ t: performance.now(), text: el.hidden ? '' : el.textContent }))
      .observe(el, { childList: true, characterData: true, subtree: true, attributes: true, attributeFilter: ['hidden'] });
  });
}

const TYPES = { '.js': 'text/javascript', '.css': 'text/css', '.html': 'text/html' };

// Serve the watch page and its assets from WEB_DIR.
async function serveWebClient(page) {
  await page.route((u) => u.pathname.startsWith('/watch/') || u.pathname.startsWith('/static/'), (route) => {
    const u = new URL(route.request().url());
    const file = u.pathname.startsWith('/watch/') ? 'watch.html' : path.basename(u.pathname);
    const full = path.join(WEB_DIR, file);
    if (!fs.existsSync(full)) return route.fulfill({ status: 404, body: 'not found' });
    return route.fulfill({ status: 200, contentType: TYPES[path.extname(file)] || 'application/octet-stream', body: fs.readFileSync(full) });
  });
}

// An "answer" made from the viewer's own offer without its rtpmap lines (what a server that
// loses the codec numbering sends): it parses, but Chromium cannot apply it.
function unusableAnswer(offer) {
  return offer.split(/\r?\n/).filter((l) => l && !/^a=(rtpmap|fmtp|rtcp-fb):/.test(l))
    .map((l) => (l === 'a=setup:actpass' ? 'a=setup:passive' : l === 'a=recvonly' ? 'a=sendonly' : l))
    .join('\r\n') + '\r\n';
}

// Open /watch/{CHANNEL} with WHEP answered by `answer(route, n)` (n = 1 for the first POST).
// Returns { page, posts: [ms], deletes: [url], errors: [text] }.
async function openWatch(ctx, answer) {
  const page = await ctx.newPage();
  const s = { page, posts: [], deletes: [], errors: [] };
  page.on('pageerror', (e) => s.errors.push(String(e && e.message || e)));
  await page.addInitScript(recordMessages);
  if (WEB_DIR) await serveWebClient(page);
  const t0 = Date.now();
  await page.route((u) => u.pathname.startsWith('/whep/'), (route) => {
    const req = route.request();
    if (req.method() === 'POST') {
      s.posts.push(Date.now() - t0);
      return answer(route, s.posts.length);
    }
    if (req.method() === 'DELETE') {
      s.deletes.push(new URL(req.url()).pathname);
      return route.fulfill({ status: 204 });
    }
    return route.continue();
  });
  await page.goto(`${BASE}/watch/${encodeURIComponent(CHANNEL)}`, { timeout: 10000 });
  return s;
}

const playerState = (page) => page.evaluate(() => {
  const p = window.aethexPlayer || {};
  const r = document.getElementById('retry');
  return { state: p.state, msg: p.message, gaveUp: p.gaveUp, retryShown: !!r && !r.hidden && r.getBoundingClientRect().width > 0,
    messages: window.__messages || [] };
});

// How many times `re` became the text of #message.
const timesShown = (messages, re) => messages.filter((m, i) => re.test(m.text) && (i === 0 || messages[i - 1].text !== m.text)).length;

// Wait until the first error is shown, then watch for OBSERVE_MS. Returns the final state.
async function settle(s, re) {
  const st = await poll(async () => {
    const x = await playerState(s.page);
    x.done = x.state === 'error' && re.test(x.msg || '');
    return x;
  }, 10000, 100);
  if (!st.done) throw new Error(`no error matching ${re} shown: state=${st.state} message=${JSON.stringify(st.msg)}`);
  await sleep(OBSERVE_MS);
  return playerState(s.page);
}

async function main() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (run scripts/install-test-deps.sh)`);
  const ctx = await launchChromium();
  note(`chromium ${h.browser.version()}, server ${BASE}, channel ${CHANNEL}` + (WEB_DIR ? `, web client from ${WEB_DIR}` : ''));

  // a) codec_mismatch
  {
    const name = '400 codec_mismatch: the server\'s error is shown once, no retry, Retry makes one POST';
    let s = null;
    try {
      s = await openWatch(ctx, (route) => route.fulfill({
        status: 400, contentType: 'application/json', body: JSON.stringify({ code: 'codec_mismatch', error: CODEC_ERROR }),
      }));
      const re = new RegExp(CODEC_ERROR.replace(/[()]/g, '\\$&'));
      const st = await settle(s, re);
      const shown = timesShown(st.messages, re);
      if (s.posts.length !== 1) throw new Error(`${s.posts.length} POSTs (at ${s.posts.join(', ')} ms), expected 1`);
      if (shown !== 1) throw new Error(`the error was shown ${shown} times: ${JSON.stringify(st.messages.map((m) => m.text))}`);
      if (st.state !== 'error' || !st.gaveUp) throw new Error(`state=${st.state} gaveUp=${st.gaveUp} message=${JSON.stringify(st.msg)}`);
      if (!st.retryShown) throw new Error('no visible Retry button');
      note(`shown: ${JSON.stringify(st.msg)}`);
      await s.page.click('#retry', { timeout: 5000 });
      const again = await settle(s, re);
      if (s.posts.length !== 2) throw new Error(`after Retry: ${s.posts.length} POSTs in all (at ${s.posts.join(', ')} ms), expected 2`);
      if (timesShown(again.messages, re) !== 2) throw new Error(`after Retry: shown ${timesShown(again.messages, re)} times in all, expected 2`);
      if (s.errors.length) throw new Error('page errors: ' + s.errors.join(' ;; '));
      pass(name);
    } catch (e) { fail(name, e.message); }
    if (s) await s.page.close().catch(() => {});
  }

  // b) 201 with an answer that setRemoteDescription rejects
  {
    const name = '201 with an unusable answer: the browser\'s error is shown once, one DELETE, no retry';
    let s = null;
    try {
      s = await openWatch(ctx, (route, n) => route.fulfill({
        status: 201,
        headers: { 'Content-Type': 'application/sdp', Location: `/whep/${encodeURIComponent(CHANNEL)}/unusable-${n}` },
        body: unusableAnswer(route.request().postData() || ''),
      }));
      const re = /^Bad answer from server: .{10,}/;
      const st = await settle(s, re);
      const shown = timesShown(st.messages, re);
      if (s.posts.length !== 1) throw new Error(`${s.posts.length} POSTs (at ${s.posts.join(', ')} ms), expected 1`);
      if (shown !== 1) throw new Error(`the error was shown ${shown} times: ${JSON.stringify(st.messages.map((m) => m.text))}`);
      if (!st.gaveUp || !st.retryShown) throw new Error(`gaveUp=${st.gaveUp} retry button shown=${st.retryShown}`);
      const want = `/whep/${encodeURIComponent(CHANNEL)}/unusable-1`;
      if (s.deletes.length !== 1 || s.deletes[0] !== want) throw new Error(`DELETEs: ${JSON.stringify(s.deletes)}, expected one of ${want}`);
      if (s.errors.length) throw new Error('page errors: ' + s.errors.join(' ;; '));
      note(`shown: ${JSON.stringify(st.msg).slice(0, 300)}`);
      pass(name);
    } catch (e) { fail(name, e.message); }
    if (s) await s.page.close().catch(() => {});
  }

  // c) offline keeps retrying
  {
    const name = '404 offline: still retried';
    let s = null;
    try {
      s = await openWatch(ctx, (route) => route.fulfill({
        status: 404, contentType: 'application/json', body: JSON.stringify({ code: 'offline', error: `channel ${CHANNEL} is offline` }),
      }));
      const st = await poll(async () => ({ ...(await playerState(s.page)), done: s.posts.length >= 2 }), 8000, 200);
      if (s.posts.length < 2) throw new Error(`${s.posts.length} POSTs in 8 s (state=${st.state})`);
      if (st.state !== 'offline' || st.gaveUp) throw new Error(`state=${st.state} gaveUp=${st.gaveUp}`);
      note(`offline POSTs at ${s.posts.join(', ')} ms`);
      pass(name);
    } catch (e) { fail(name, e.message); }
    if (s) await s.page.close().catch(() => {});
  }

  // d) a network error keeps retrying with backoff
  {
    const name = 'network error: still retried with backoff';
    let s = null;
    try {
      s = await openWatch(ctx, (route) => route.abort('connectionrefused'));
      const st = await poll(async () => ({ ...(await playerState(s.page)), done: s.posts.length >= 3 }), 10000, 200);
      if (s.posts.length < 3) throw new Error(`${s.posts.length} POSTs in 10 s (state=${st.state} message=${JSON.stringify(st.msg)})`);
      if (st.gaveUp) throw new Error('the player gave up');
      const gaps = s.posts.slice(1).map((t, i) => t - s.posts[i]);
      if (gaps.some((g) => g < 700)) throw new Error(`retries too close together: POSTs at ${s.posts.join(', ')} ms`);
      note(`network error POSTs at ${s.posts.join(', ')} ms`);
      pass(name);
    } catch (e) { fail(name, e.message); }
    if (s) await s.page.close().catch(() => {});
  }
}

h.run(main);
