// Headless Chromium against an origin and a regional edge: a private channel published from
// /live at the origin, watched through the origin's watch page with a playback token and a
// region, so the player's WHEP POST is redirected (307) to the edge and plays there.
//
//   AETHEX_URL=http://127.0.0.1:18080 AETHEX_EDGE_URL=http://127.0.0.1:18081 AETHEX_REGION=eu \
//   AETHEX_CHANNEL=vip AETHEX_KEY=... AETHEX_TOKEN=... node tests/browser/edge.test.mjs
//
// Prints `ok - name` / `not ok - name: why` per case; exits 0 only when nothing failed.
import fs from 'node:fs';

import { CHROMIUM, createHarness } from './lib.mjs';

const BASE = (process.env.AETHEX_URL || '').replace(/\/+$/, '');
const EDGE = (process.env.AETHEX_EDGE_URL || '').replace(/\/+$/, '');
const REGION = process.env.AETHEX_REGION || '';
const CHANNEL = process.env.AETHEX_CHANNEL || '';
const KEY = process.env.AETHEX_KEY || '';
const TOKEN = process.env.AETHEX_TOKEN || '';

const h = createHarness({ totalTimeoutMs: 90_000 });
const { note, pass, fail, poll, launchChromium } = h;

const playerState = (page) => page.evaluate(() => {
  const v = document.querySelector('video');
  const p = window.aethexPlayer || {};
  return { w: v.videoWidth, ct: v.currentTime, state: p.state, msg: p.message };
});

async function main() {
  if (!BASE || !EDGE || !REGION || !CHANNEL || !KEY || !TOKEN) {
    throw new Error('AETHEX_URL, AETHEX_EDGE_URL, AETHEX_REGION, AETHEX_CHANNEL, AETHEX_KEY and AETHEX_TOKEN must be set');
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (run scripts/install-test-deps.sh)`);
  const ctx = await launchChromium();
  note(`chromium ${h.browser.version()}, origin ${BASE}, edge ${EDGE} (${REGION}), channel ${CHANNEL}`);

  const live = await ctx.newPage();
  let published = false;
  {
    const name = 'a private channel goes live at the origin from /live';
    try {
      const st = await h.goLive(live, BASE, KEY);
      if (st.state === 'live') { published = true; pass(name); } else fail(name, `state=${st.state} ${st.message}`);
    } catch (e) { fail(name, e.message); }
  }

  {
    const name = 'without a token the watch page says the channel is private';
    try {
      if (!published) throw new Error('nothing is published');
      const page = await ctx.newPage();
      await page.goto(`${BASE}/watch/${encodeURIComponent(CHANNEL)}`, { timeout: 10000 });
      const st = await poll(async () => {
        const s = await playerState(page);
        s.done = s.state === 'error' && /private/.test(s.msg || '');
        return s;
      }, 10000, 250);
      if (st.done) pass(name); else fail(name, `state=${st.state} message=${JSON.stringify(st.msg)}`);
      await page.close();
    } catch (e) { fail(name, e.message); }
  }

  {
    const name = 'with a token and a region, the WHEP POST is redirected to the edge and plays there';
    try {
      if (!published) throw new Error('nothing is published');
      const page = await ctx.newPage();
      const whep = [];
      page.on('response', (r) => {
        if (r.request().method() === 'POST' && r.url().includes('/whep/')) whep.push({ status: r.status(), url: r.url() });
      });
      const q = new URLSearchParams({ token: TOKEN, region: REGION });
      await page.goto(`${BASE}/watch/${encodeURIComponent(CHANNEL)}?${q}`, { timeout: 10000 });
      let firstCt = null;
      const st = await poll(async () => {
        const s = await playerState(page);
        if (s.w > 0 && firstCt === null) firstCt = s.ct;
        s.done = s.w > 0 && firstCt !== null && s.ct - firstCt >= 1 && s.state === 'playing';
        return s;
      }, 20000, 250);
      note('WHEP POSTs: ' + whep.map((w) => `${w.status} ${w.url.replace(/token=[^&]+/, 'token=…')}`).join(', '));
      const redirected = whep.some((w) => w.status === 307 && w.url.startsWith(BASE + '/'));
      const atEdge = whep.some((w) => w.status === 201 && w.url.startsWith(EDGE + '/'));
      if (!st.done) fail(name, `state=${st.state} message=${JSON.stringify(st.msg)} width=${st.w}`);
      else if (!redirected || !atEdge) fail(name, `playing, but not through the edge: ${JSON.stringify(whep)}`);
      else pass(name);
      await page.close();
    } catch (e) { fail(name, e.message); }
  }
}

h.run(main);
