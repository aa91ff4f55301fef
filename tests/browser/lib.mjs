// What the headless Chromium tests share: TAP-like output (`ok - name` / `not ok - name: why`,
// `# ` notes, a final `N passed, M failed`), a global timeout, Debian's Chromium started with an
// exact command line and driven over CDP by playwright-core, bounded polling, and a clean
// shutdown (Chromium's process group, its temporary profile) whatever happens.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Chromium's command line: headless, fake camera and microphone, loopback ICE, no mDNS hiding.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--no-default-browser-check',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-extensions',
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
  '--mute-audio',
  '--hide-scrollbars',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns,Translate,MediaRouter,OptimizationHints',
  '--window-size=1280,720',
];

// Start Debian's Chromium with exactly CHROMIUM_ARGS and a fresh profile, and attach over CDP.
// Resolves to { browser, context, close() }; close() ends Chromium's process group (SIGTERM, then
// SIGKILL) and removes the profile, and is safe to call twice. On a failed start Chromium is
// already gone when the promise rejects. `onSpawn(close)`, if given, gets close() as soon as the
// process exists, so that a caller shutting down mid-start can end it.
export async function startChromium(onSpawn) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'aethex-chromium-'));
  const args = [...CHROMIUM_ARGS, `--user-data-dir=${userDataDir}`,
    '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0', 'about:blank'];
  const proc = spawn(CHROMIUM, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  let browser = null;
  let closed = false;
  async function close() {
    if (closed) return;
    closed = true;
    if (browser) await Promise.race([browser.close().catch(() => {}), sleep(3000)]);
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      try { process.kill(-proc.pid, 'SIGTERM'); } catch (_) { /* gone */ }
      await Promise.race([exited, sleep(5000)]);
      if (proc.exitCode === null && proc.signalCode === null) {
        try { process.kill(-proc.pid, 'SIGKILL'); } catch (_) { /* gone */ }
        await Promise.race([exited, sleep(2000)]);
      }
    }
    try { fs.rmSync(userDataDir, { recursive: true, force: true }); } catch (_) { /* ignore */ }
  }
  if (onSpawn) onSpawn(close);
  try {
    let stderr = '';
    const ws = await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('Chromium did not report its DevTools endpoint within 15 s: ' + stderr.slice(-500))), 15000);
      proc.stderr.on('data', (d) => {
        stderr += d.toString();
        const m = stderr.match(/DevTools listening on (ws:\/\/\S+)/);
        if (m) { clearTimeout(t); resolve(m[1]); }
      });
      proc.once('exit', (code, sig) => { clearTimeout(t); reject(new Error(`Chromium exited early (${code ?? sig}): ${stderr.slice(-500)}`)); });
      proc.once('error', (e) => { clearTimeout(t); reject(e); });
    });
    proc.stderr.removeAllListeners('data');
    proc.stderr.on('data', () => {}); // keep draining, but stop accumulating
    browser = await chromium.connectOverCDP(ws, { timeout: 15000 });
    const context = browser.contexts()[0] || await browser.newContext();
    return { browser, context, close };
  } catch (e) {
    await close();
    throw e;
  }
}

// A test run. `cleanup` runs first at the end (close sessions, sockets); then Chromium goes.
export function createHarness({ totalTimeoutMs, cleanup }) {
  const results = [];
  let browser = null;
  let closeChromium = null; // startChromium()'s close(), known from the spawn on
  let finished = false;

  const log = (line) => process.stdout.write(line + '\n');
  const h = {
    log,
    note: (line) => log('# ' + line),
    pass: (name) => { results.push(true); log(`ok - ${name}`); },
    fail: (name, why) => { results.push(false); log(`not ok - ${name}: ${String(why).replace(/\s+/g, ' ').trim()}`); },
    get browser() { return browser; },
    get finished() { return finished; },

    // Start Chromium ourselves so that its command line is exactly what we want, then attach.
    async launchChromium() {
      const chrome = await startChromium((close) => { closeChromium = close; });
      browser = chrome.browser;
      return chrome.context;
    },

    // Publish Chromium's fake camera from `${base}/live` with a stream key; returns the go-live
    // page's final `window.aethexLive` state ({ state, channel, message }).
    async goLive(page, base, key) {
      await page.goto(`${base}/live`, { timeout: 10000 });
      await page.fill('#key', key, { timeout: 5000 });
      await page.check('#src-camera', { timeout: 5000 });
      await page.click('#go', { timeout: 5000 });
      return h.poll(() => page.evaluate(() => {
        const l = window.aethexLive || {};
        return { done: l.state === 'live' || l.state === 'error', state: l.state, channel: l.channel, message: l.message };
      }), 15000);
    },

    // Call `fn` until it returns `{ done: true, ... }` or the time is up; returns its last value.
    async poll(fn, timeoutMs, intervalMs = 200) {
      const end = Date.now() + timeoutMs;
      let last;
      while (Date.now() < end && !finished) {
        last = await fn();
        if (last && last.done) return last;
        await sleep(intervalMs);
      }
      return last || {};
    },

    async finish(extraFailure) {
      if (finished) return;
      finished = true;
      clearTimeout(globalTimer);
      if (extraFailure) h.fail(extraFailure[0], extraFailure[1]);
      if (cleanup) await cleanup().catch(() => {});
      await shutdownChromium();
      const passed = results.filter(Boolean).length;
      const failed = results.length - passed;
      log(`${passed} passed, ${failed} failed`);
      process.exit(failed === 0 && passed > 0 ? 0 : 1);
    },

    // Run `main`, then finish; a throw is a failed "test setup" case.
    run(main) {
      main().then(() => h.finish(), (e) => h.finish(['test setup', e && e.stack || e]));
      process.on('SIGINT', () => h.finish(['interrupted', 'SIGINT']));
      process.on('SIGTERM', () => h.finish(['interrupted', 'SIGTERM']));
    },
  };

  async function shutdownChromium() {
    if (closeChromium) await closeChromium();
    closeChromium = null;
    browser = null;
  }

  const globalTimer = setTimeout(() => {
    h.finish([`test run finished within ${totalTimeoutMs / 1000} s`, 'global timeout hit']);
  }, totalTimeoutMs);

  return h;
}
