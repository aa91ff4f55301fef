// Headless Chromium end-to-end test of the AeThex LIVE web client against a running server.
//
//   AETHEX_URL=http://127.0.0.1:18080 AETHEX_CHANNEL=demo AETHEX_KEY=... node tests/browser/watch.test.mjs
//
// Publishes Chromium's fake camera from /live (WHIP), plays it on /watch/{channel} (WHEP) and
// checks the player's state, stats overlay and console. Prints `ok - name` / `not ok - name: why`
// per case and a final `N passed, M failed` line; exits 0 only when nothing failed.
//
// Chromium is Debian's /usr/bin/chromium, started by this script with an exact command line (one
// --disable-features switch, fresh user-data-dir) and driven through playwright-core over CDP.
import fs from 'node:fs';

import { CHROMIUM, createHarness } from './lib.mjs';

const BASE = (process.env.AETHEX_URL || 'http://127.0.0.1:18080').replace(/\/+$/, '');
const CHANNEL = process.env.AETHEX_CHANNEL || '';
const KEY = process.env.AETHEX_KEY || '';
const TOTAL_TIMEOUT_MS = 90_000;

const h = createHarness({ totalTimeoutMs: TOTAL_TIMEOUT_MS });
const { note, pass, fail, poll, launchChromium } = h;

// Collect console errors and uncaught page errors per page.
function watchErrors(page) {
  const errors = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push({ console: true, text: m.text(), url: (m.location() || {}).url || '' });
  });
  page.on('pageerror', (e) => errors.push({ console: false, text: 'pageerror: ' + (e && e.message || e) }));
  return errors;
}

async function main() {
  if (!CHANNEL || !KEY) throw new Error('AETHEX_CHANNEL and AETHEX_KEY must be set');
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (run scripts/install-test-deps.sh)`);
  const ctx = await launchChromium();
  note(`chromium ${h.browser.version()}, server ${BASE}, channel ${CHANNEL}`);

  // Timestamp the first decoded video frame (the video's first `resize`) in page time.
  await ctx.addInitScript(() => {
    document.addEventListener('resize', (ev) => {
      if (ev.target && ev.target.tagName === 'VIDEO' && ev.target.videoWidth > 0 && !window.__aethexFirstFrameAt) {
        window.__aethexFirstFrameAt = performance.now();
      }
    }, true);
  });

  // a) publish
  const live = await ctx.newPage();
  const liveErrors = watchErrors(live);
  let published = false;
  {
    const name = 'go-live page publishes with a fake camera';
    try {
      const st = await h.goLive(live, BASE, KEY);
      if (st.state !== 'live') {
        fail(name, `state=${st.state} message=${JSON.stringify(st.message)}`);
      } else if (st.channel !== CHANNEL) {
        published = true;
        fail(name, `live, but X-Aethex-Channel gave ${JSON.stringify(st.channel)} instead of ${JSON.stringify(CHANNEL)}`);
      } else {
        published = true;
        pass(name);
      }
    } catch (e) { fail(name, e.message); }
  }

  // b) play
  const watch = await ctx.newPage();
  const watchErrs = watchErrors(watch);
  {
    const name = 'watch page plays the live stream';
    try {
      if (!published) throw new Error('nothing is published (a failed)');
      await watch.goto(`${BASE}/watch/${encodeURIComponent(CHANNEL)}`, { timeout: 10000 });
      let firstCt = null;
      const sample = () => watch.evaluate(() => {
        const v = document.querySelector('video');
        const p = window.aethexPlayer || {};
        return { w: v.videoWidth, h: v.videoHeight, ct: v.currentTime, state: p.state, msg: p.message, cs: p.connectionState,
          ff: window.__aethexFirstFrameAt || null };
      });
      const st = await poll(async () => {
        const s = await sample();
        if (s.w > 0 && firstCt === null) firstCt = s.ct;
        s.done = s.w > 0 && firstCt !== null && s.ct - firstCt >= 1 && s.state === 'playing';
        return s;
      }, 20000, 250);
      if (st.ff != null) note(`time to first frame: ${Math.round(st.ff)} ms after navigation start`);
      if (!st.done) {
        fail(name, `videoWidth=${st.w} currentTime=${st.ct} (first ${firstCt}) state=${st.state} connection=${st.cs} message=${JSON.stringify(st.msg)}`);
      } else {
        note(`playing ${st.w}x${st.h}`);
        pass(name);
      }
    } catch (e) { fail(name, e.message); }
  }

  // c) overlay
  {
    const name = 'overlay shows stats';
    try {
      const st = await poll(() => watch.evaluate(() => {
        const el = document.getElementById('stats');
        const text = el ? el.textContent : '';
        const visible = !!el && !el.hidden && el.getBoundingClientRect().height > 0;
        return { done: visible && /resolution\s+\d+x\d+/.test(text), text, visible };
      }), 6000, 500);
      if (!st.done) fail(name, `visible=${st.visible} text=${JSON.stringify(st.text)}`);
      else {
        note('overlay: ' + st.text.split('\n').map((l) => l.replace(/\s+/g, ' ').trim()).join(' | '));
        pass(name);
      }
    } catch (e) { fail(name, e.message); }
  }

  // c2) quality menu: choosing Low POSTs {"layer":"low"} to the session's /layer resource. The
  // stream here is not simulcast, so only the HTTP exchange and continued playback are checked.
  let layerUrl = null;
  {
    const name = 'quality menu: Low POSTs to the session /layer (204) and playback continues';
    try {
      if (!published) throw new Error('nothing is published (a failed)');
      const sel = watch.locator('#quality');
      if (await sel.count() !== 1) throw new Error('no #quality select in the player');
      const label = await watch.evaluate(() => {
        const el = document.getElementById('quality');
        return el && el.labels && el.labels.length ? el.labels[0].textContent.replace(/\s+/g, ' ').trim() : '';
      });
      if (!/quality/i.test(label)) throw new Error(`the select has no "Quality" label (${JSON.stringify(label)})`);
      const options = await sel.evaluate((el) => Array.from(el.options).map((o) => o.value));
      if (['auto', 'high', 'mid', 'low'].some((v) => !options.includes(v))) throw new Error(`options are ${options.join(',')}`);
      const respP = watch.waitForResponse((r) => r.request().method() === 'POST' && /\/whep\/[^?]+\/layer$/.test(r.url()), { timeout: 8000 });
      await sel.selectOption('low', { timeout: 5000 });
      const resp = await respP;
      layerUrl = new URL(resp.url()).pathname;
      let body = null;
      try { body = JSON.parse(resp.request().postData() || ''); } catch (_) { /* not JSON */ }
      if (resp.status() !== 204) throw new Error(`POST ${layerUrl} answered ${resp.status()} ${(await resp.text().catch(() => '')).slice(0, 200)}`);
      if (!body || body.layer !== 'low') throw new Error(`POST ${layerUrl} body was ${JSON.stringify(resp.request().postData())}`);
      const ct0 = await watch.evaluate(() => document.querySelector('video').currentTime);
      const st = await poll(() => watch.evaluate((t0) => {
        const v = document.querySelector('video');
        const p = window.aethexPlayer || {};
        let saved = null;
        try { saved = localStorage.getItem('aethex.layer'); } catch (_) { /* ignore */ }
        return { done: p.state === 'playing' && v.currentTime - t0 >= 1.5 && p.layer === 'low',
          state: p.state, msg: p.message, ct: v.currentTime, layer: p.layer, saved };
      }, ct0), 8000, 250);
      if (!st.done) throw new Error(`after choosing Low: state=${st.state} layer=${st.layer} currentTime ${ct0} -> ${st.ct} message=${JSON.stringify(st.msg)}`);
      if (st.saved !== 'low') throw new Error(`localStorage aethex.layer = ${JSON.stringify(st.saved)}`);
      note(`quality: POST ${layerUrl.replace(/\/[^/]+\/layer$/, '/…/layer')} -> 204, still playing (currentTime ${ct0.toFixed(1)} -> ${st.ct.toFixed(1)})`);
      pass(name);
    } catch (e) { fail(name, e.message); }
  }

  // d) console
  {
    const name = 'no console errors';
    // A failed /layer request is reported by the quality case above, not again here.
    const own = (e) => !/\/layer$/.test(e.url || '');
    const all = [...liveErrors.map((e) => '[live] ' + e.text), ...watchErrs.filter(own).map((e) => '[watch] ' + e.text)];
    if (all.length) fail(name, all.join(' ;; ').slice(0, 1500));
    else pass(name);
  }

  // e) unknown channel
  {
    const name = 'offline channel shows offline state';
    const page = await ctx.newPage();
    const errs = watchErrors(page);
    try {
      await page.goto(`${BASE}/watch/no-such-channel-xyz`, { timeout: 10000 });
      const st = await poll(() => page.evaluate(() => {
        const p = window.aethexPlayer || {};
        const m = document.getElementById('message');
        return { done: p.state === 'offline' || p.state === 'error', state: p.state, text: m && !m.hidden ? m.textContent : '' };
      }), 5000, 200);
      const bad = errs.filter((e) => !(e.console && e.text.startsWith('Failed to load resource')));
      if (!st.done) fail(name, `state=${st.state}`);
      else if (!st.text) fail(name, `state=${st.state} but no message shown`);
      else if (bad.length) fail(name, bad.map((e) => e.text).join(' ;; ').slice(0, 1000));
      else { note(`unknown channel: ${st.state}: ${st.text}`); pass(name); }
    } catch (e) { fail(name, e.message); }
    await page.close().catch(() => {});
  }

  // f) stop publishing; the viewer should notice the end of the stream
  {
    const name = 'stop ends the broadcast and the viewer goes offline';
    try {
      if (!published) throw new Error('nothing was published');
      await live.click('#stop', { timeout: 5000 });
      const ls = await poll(() => live.evaluate(() => ({ done: window.aethexLive.state === 'idle', state: window.aethexLive.state })), 5000);
      if (!ls.done) throw new Error(`go-live page state=${ls.state} after Stop`);
      const ws = await poll(() => watch.evaluate(() => {
        const p = window.aethexPlayer || {};
        return { done: p.state === 'offline', state: p.state, msg: p.message };
      }), 15000, 250);
      if (!ws.done) fail(name, `viewer state=${ws.state} message=${JSON.stringify(ws.msg)} 15 s after Stop`);
      else pass(name);
    } catch (e) { fail(name, e.message); }
  }
}

h.run(main);
