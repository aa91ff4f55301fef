// Interop matrix: every publisher implementation x every viewer implementation, at the origin
// and at a regional edge, one publisher (row) at a time. Usually started by tests/interop/run.sh,
// which creates the channels and starts the servers:
//
//   node tests/interop/matrix.mjs --origin http://127.0.0.1:18080 --edge http://127.0.0.1:18081 \
//       --keys KEYS.jsonl [--only ROWS] [--viewers COLS] [--out target/interop/matrix.json]
//   node tests/interop/matrix.mjs --list-channels [--only ROWS]   # the channel names to create
//   node tests/interop/matrix.mjs --write-doc docs/interop.md [--out RESULTS.json]  # no run
//
// KEYS.jsonl: the `aethex channel create` output lines ({"channel","stream_key",...}).
// --only: comma-separated row ids or id prefixes (`aiortc`, `chromium-vp8+opus`, `obs-h264`);
// --viewers: comma-separated columns, `impl`, `impl@site` or `@site` (`aiortc`, `chromium@edge`).
// Per row: start the publisher, wait (bounded) for it to be live, run all selected viewers of the
// row at once for --duration s, judge each (>= --min-frames decoded video frames, an audio frame
// when the row sends audio), stop the publisher. Prints `ok - ROW -> VIEWER@SITE N ms` /
// `not ok - ...: why` per cell, writes all results to --out, exits 0 only if every cell passed.
// A missing peer is a failed cell, never a skipped one.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { CHROMIUM, sleep, startChromium } from '../browser/lib.mjs';
import { VIEWER_IMPLS, SITES, writeDoc } from './table.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const rel = (p) => path.join(ROOT, p);

// ---- peers -------------------------------------------------------------------------------------
// Command-line peers follow the shared CLI contract (tests/peers/README.md): `publish --url
// --token --duration [--codec] [--no-audio]` prints {"event":"live"} then one result line;
// `view --url --duration --min-video-frames --expect-audio` prints one result line.
// `needs`: files that must exist for the peer to run at all (checked before the run).
const PEERS = {
  chromium: { module: 'tests/interop/chromium.mjs', needs: ['tests/interop/chromium.mjs', CHROMIUM] },
  aiortc: { cmd: ['.venv/bin/python', 'tests/peers/aiortc_peer.py'] },
  obs: { cmd: ['.venv312/bin/python', 'tests/peers/obs_peer.py'] },
  // webrtcbin's own DTLS certificate is RSA-2048, which the server's DTLS (str0m 0.25 / dimpl
  // 0.9) does not accept from a client: the publisher swaps in an ECDSA one (docs/interop.md).
  gst: { cmd: ['/usr/bin/python3', 'tests/peers/gst_peer.py'], publishArgs: () => ['--dtls-cert', 'ecdsa'] },
  'webrtc-rs': {
    // Built by scripts/test.sh into the shared target dir (CARGO_TARGET_DIR when set).
    cmd: [path.join(process.env.CARGO_TARGET_DIR || 'target', 'debug', 'webrtc-peer')],
    publishArgs: (tmp) => ['--clip', tmp.clip()],
    viewArgs: (tmp, cellId) => ['--dump-dir', tmp.dir(cellId)],
  },
};
for (const p of Object.values(PEERS)) {
  if (p.cmd) {
    p.cmd = p.cmd.map((c) => (c.startsWith('/') ? c : rel(c)));
    p.needs = p.cmd;
  }
}

// Rows: [id, peer, codec, simulcast, label]; each runs with Opus (`ID+opus`) and without (`ID`).
const BASE_ROWS = [
  ['chromium-vp8', 'chromium', 'vp8', false, 'Chromium VP8'],
  ['chromium-h264', 'chromium', 'h264', false, 'Chromium H.264'],
  ['chromium-vp8-simulcast', 'chromium', 'vp8', true, 'Chromium VP8 simulcast'],
  ['aiortc-vp8', 'aiortc', 'vp8', false, 'aiortc VP8'],
  ['aiortc-h264', 'aiortc', 'h264', false, 'aiortc H.264'],
  ['obs-h264', 'obs', 'h264', false, 'OBS stack (libdatachannel) H.264'],
  ['gst-vp8', 'gst', 'vp8', false, 'GStreamer VP8 (ECDSA certificate)'],
  ['webrtc-rs-vp8', 'webrtc-rs', 'vp8', false, 'webrtc-rs VP8'],
];
const ROWS = BASE_ROWS.flatMap(([id, peer, codec, simulcast, label]) => [true, false].map((audio) => ({
  id: audio ? `${id}+opus` : id,
  channel: audio ? `${id}-opus` : id,
  label: audio ? `${label} + Opus` : `${label}, no audio`,
  peer, codec, simulcast, audio,
})));
const COLUMNS = VIEWER_IMPLS.flatMap((impl) => SITES.map((site) => ({ id: `${impl}@${site}`, impl, site })));

// ---- options -----------------------------------------------------------------------------------
function parseArgs(argv) {
  const o = { out: rel('target/interop/matrix.json'), duration: 4, minFrames: 20, liveTimeout: 15 };
  const flags = { '--list-channels': 'listChannels' };
  const values = {
    '--origin': 'origin', '--edge': 'edge', '--keys': 'keys', '--only': 'only', '--viewers': 'viewers',
    '--out': 'out', '--write-doc': 'writeDoc', '--server-version': 'serverVersion',
    '--duration': 'duration', '--min-frames': 'minFrames', '--live-timeout': 'liveTimeout',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (flags[a]) o[flags[a]] = true;
    else if (values[a] && i + 1 < argv.length) o[values[a]] = argv[++i];
    else throw new Error(`unknown or incomplete option ${a} (see the header of tests/interop/matrix.mjs)`);
  }
  for (const k of ['duration', 'minFrames', 'liveTimeout']) {
    o[k] = Number(o[k]);
    if (!(o[k] > 0)) throw new Error(`--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} must be a positive number`);
  }
  return o;
}

const list = (s) => (s || '').split(',').map((x) => x.trim()).filter(Boolean);
const selectRows = (only) => {
  const toks = list(only);
  const rows = toks.length ? ROWS.filter((r) => toks.some((t) => r.id === t || r.id.startsWith(t))) : ROWS;
  if (toks.length && !rows.length) throw new Error(`--only ${only} matches no row (rows: ${ROWS.map((r) => r.id).join(', ')})`);
  return rows;
};
const selectColumns = (viewers) => {
  const toks = list(viewers);
  const cols = toks.length ? COLUMNS.filter((c) => toks.some((t) => t === c.id || t === c.impl || t === `@${c.site}`)) : COLUMNS;
  if (toks.length && !cols.length) throw new Error(`--viewers ${viewers} matches no column (columns: ${COLUMNS.map((c) => c.id).join(', ')})`);
  return cols;
};

// ---- child processes ---------------------------------------------------------------------------
const children = new Set(); // live child process groups, killed at the end whatever happens
const killGroup = (pid, sig) => { try { process.kill(-pid, sig); } catch (_) { /* gone */ } };

// Start `argv` in its own process group with a hard time limit. stdout must be JSON lines (each
// parsed object goes to `onJson`); stderr goes to `logFile` and a short tail kept for errors.
// `done` resolves to { code, signal, timedOut, json: [objects], garbage: [non-JSON lines], stderrTail }.
function runChild(argv, { timeoutMs, logFile, onJson }) {
  const proc = spawn(argv[0], argv.slice(1), { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc.pid);
  const log = fs.createWriteStream(logFile);
  log.write(`$ ${argv.join(' ')}\n`);
  const json = [];
  const garbage = [];
  let tail = '';
  let buf = '';
  let timedOut = false;
  proc.stdout.on('data', (d) => {
    buf += d.toString();
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      log.write(`[stdout] ${line}\n`);
      let obj;
      try { obj = JSON.parse(line); } catch (_) { garbage.push(line.slice(0, 200)); continue; }
      json.push(obj);
      if (onJson) onJson(obj);
    }
  });
  proc.stderr.on('data', (d) => { log.write(d); tail = (tail + d.toString()).slice(-4000); });
  const timer = setTimeout(() => { timedOut = true; killGroup(proc.pid, 'SIGKILL'); }, timeoutMs);
  const done = new Promise((resolve) => {
    let ended = false;
    const finish = (code, signal) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      killGroup(proc.pid, 'SIGKILL'); // whatever the peer left behind in its group
      children.delete(proc.pid);
      log.end(`[exit] code=${code} signal=${signal}${timedOut ? ' (hard time limit)' : ''}\n`);
      resolve({ code, signal, timedOut, json, garbage, stderrTail: tail.trim().split('\n').slice(-12).join('\n') });
    };
    proc.once('error', (e) => { tail += `\nspawn failed: ${e.message}`; finish(null, null); });
    proc.once('close', finish);
  });
  return { pid: proc.pid, done };
}

// Run a helper command (versions, the clip) to its end in its own process group, SIGKILLed at
// `timeoutMs`; resolves to { code, stdout, stderr } (code null if it could not start or was killed).
function capture(argv, timeoutMs = 15000) {
  return new Promise((resolve) => {
    const proc = spawn(argv[0], argv.slice(1), { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let ended = false;
    if (proc.pid) children.add(proc.pid);
    const timer = setTimeout(() => killGroup(proc.pid, 'SIGKILL'), timeoutMs);
    const finish = (code) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      if (proc.pid) { killGroup(proc.pid, 'SIGKILL'); children.delete(proc.pid); }
      resolve({ code, stdout: stdout.trim(), stderr: stderr.trim() });
    };
    proc.stdout.on('data', (d) => { stdout += d; });
    proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
    proc.once('error', (e) => { stderr += e.message; finish(null); });
    proc.once('close', (code) => finish(code));
  });
}
const cmdOut = async (argv) => { const r = await capture(argv); return r.code === 0 && r.stdout ? r.stdout.split('\n')[0] : null; };

// A contract result line: the last JSON object with an `ok` field.
const resultLine = (r) => [...r.json].reverse().find((o) => o && typeof o === 'object' && 'ok' in o) || null;
const exitText = (r) => (r.timedOut ? 'killed at the hard time limit' : `exit ${r.code ?? r.signal}`);
const oneLine = (s, n = 300) => String(s ?? '').replace(/\s+/g, ' ').trim().slice(0, n);
const withTimeout = (promise, ms, what) => Promise.race([
  promise,
  sleep(ms).then(() => { throw new Error(`${what}: no answer within ${ms / 1000} s`); }),
]);

// ---- publishers --------------------------------------------------------------------------------
// Returns { live: Promise (resolves when live, rejects with the reason), stop(): Promise<info> }.
function startPublisher(ctx, row, key) {
  const whipUrl = `${ctx.origin}/whip`;
  const peer = PEERS[row.peer];
  if (row.peer === 'chromium') {
    const pub = Promise.resolve().then(() => ctx.chromium.module.publish(ctx.chromium.context,
      { whipUrl, key, codec: row.codec, simulcast: row.simulcast, audio: row.audio }));
    return {
      live: pub.then((p) => p.live),
      stop: async () => {
        const p = await Promise.race([pub.catch(() => null), sleep(10000).then(() => null)]);
        if (!p) return { error: 'publish() did not resolve' };
        try { return { result: await withTimeout(Promise.resolve(p.stop()), 10000, 'chromium publisher stop()') }; } catch (e) { return { error: e.message }; }
      },
    };
  }
  // Runs until stopped (SIGTERM) well before --duration; the duration only bounds a lost child.
  const secs = ctx.opts.liveTimeout + ctx.opts.duration + 40;
  const argv = [...peer.cmd, 'publish', '--url', whipUrl, '--token', key, '--duration', String(secs),
    '--codec', row.codec, ...(row.audio ? [] : ['--no-audio']), ...(peer.publishArgs ? peer.publishArgs(ctx.tmp) : [])];
  let onLive;
  const liveEvt = new Promise((r) => { onLive = r; });
  const child = runChild(argv, {
    timeoutMs: (secs + 20) * 1000,
    logFile: path.join(ctx.logDir, `${row.channel}.publisher.log`),
    onJson: (o) => { if (o.event === 'live') onLive(); },
  });
  const live = Promise.race([liveEvt, child.done.then((r) => {
    const res = resultLine(r);
    throw new Error(`publisher ended before going live (${exitText(r)}): ${oneLine(res?.error || r.stderrTail)}`);
  })]);
  return {
    live,
    stop: async () => {
      killGroup(child.pid, 'SIGTERM');
      const r = await Promise.race([child.done, sleep(8000).then(() => null)]);
      if (!r) killGroup(child.pid, 'SIGKILL');
      const done = r || await child.done;
      const info = { result: resultLine(done), exit: exitText(done) };
      if (!r) info.error = 'did not exit within 8 s of SIGTERM';
      else if (!info.result) info.error = `no result line after SIGTERM (${exitText(done)})`;
      if (done.garbage.length) info.stdout_garbage = done.garbage.slice(0, 3);
      return info;
    },
  };
}

// ---- viewers -----------------------------------------------------------------------------------
// Resolves to { res (the peer's result object or null), error (string, when it had no result) }.
async function runViewer(ctx, row, col, cellId) {
  const whepUrl = `${col.site === 'edge' ? ctx.edge : ctx.origin}/whep/${row.channel}`;
  const { duration, minFrames } = ctx.opts;
  const hardMs = (duration + 25) * 1000;
  if (col.impl === 'chromium') {
    try {
      const res = await withTimeout(ctx.chromium.module.view(ctx.chromium.context,
        { whepUrl, durationMs: duration * 1000, expectAudio: row.audio ? 'yes' : 'no', minVideoFrames: minFrames }), hardMs, 'chromium view()');
      return { res };
    } catch (e) { return { res: null, error: oneLine(e.message, 500) }; }
  }
  const peer = PEERS[col.impl];
  const argv = [...peer.cmd, 'view', '--url', whepUrl, '--duration', String(duration),
    '--min-video-frames', String(minFrames), '--expect-audio', row.audio ? 'yes' : 'no',
    ...(peer.viewArgs ? peer.viewArgs(ctx.tmp, cellId) : [])];
  const r = await runChild(argv, { timeoutMs: hardMs, logFile: path.join(ctx.logDir, `${cellId}.log`) }).done;
  const res = resultLine(r);
  const out = { res, stderrTail: r.stderrTail };
  if (!res) out.error = `no result line (${exitText(r)})${r.stderrTail ? `: ${oneLine(r.stderrTail, 500)}` : ''}`;
  else if ((r.code === 0) !== (res.ok === true)) out.warning = `exit code ${r.code} disagrees with ok=${res.ok}`;
  if (r.garbage.length) out.warning = `non-JSON stdout: ${r.garbage[0]}`;
  return out;
}

// A cell passes when the peer says ok AND its own figures meet the bar (never trust `ok` alone).
function judge(row, col, v, minFrames) {
  const cell = { row: row.id, viewer: col.id, impl: col.impl, site: col.site, ok: false };
  const res = v.res;
  if (res) {
    Object.assign(cell, {
      first_frame_ms: res.first_frame_ms ?? null,
      video_frames: res.video_frames ?? null,
      audio_frames: row.audio ? (res.audio_frames ?? null) : '-',
      width: res.width ?? null, height: res.height ?? null,
    });
  }
  const why = [];
  if (!res) why.push(v.error);
  else {
    if (res.ok !== true) why.push(res.error || 'peer reported ok=false');
    if (!(res.video_frames >= minFrames)) why.push(`${res.video_frames ?? 0} video frames decoded (min ${minFrames})`);
    if (row.audio && !(res.audio_frames > 0)) why.push('no audio frame decoded');
  }
  cell.ok = why.length === 0;
  if (!cell.ok) {
    cell.error = oneLine([...new Set(why)].join('; '), 600);
    if (v.stderrTail) cell.stderr_tail = v.stderrTail;
  }
  if (v.warning) cell.warning = v.warning;
  return cell;
}

// ---- one row -----------------------------------------------------------------------------------
async function runRow(ctx, row, cols) {
  const rowInfo = { id: row.id, label: row.label, peer: row.peer, codec: row.codec, simulcast: row.simulcast, audio: row.audio, channel: row.channel };
  const failed = (col, why) => judge(row, col, { res: null, error: why }, ctx.opts.minFrames);
  const cannot = ctx.missing[row.peer] || (row.peer === 'webrtc-rs' && ctx.clipError);
  if (cannot) return { rowInfo, cells: cols.map((col) => failed(col, cannot)) };
  const key = ctx.keys[row.channel];
  if (!key) return { rowInfo, cells: cols.map((col) => failed(col, `no stream key for channel ${row.channel} in --keys`)) };

  const t0 = Date.now();
  let pub = null;
  let cells;
  try {
    pub = startPublisher(ctx, row, key);
    await withTimeout(pub.live, ctx.opts.liveTimeout * 1000, 'publisher live event');
    rowInfo.live_ms = Date.now() - t0;
    cells = await Promise.all(cols.map(async (col) => {
      if (ctx.missing[col.impl]) return failed(col, ctx.missing[col.impl]);
      const cellId = `${row.channel}.${col.impl}-${col.site}`;
      return judge(row, col, await runViewer(ctx, row, col, cellId), ctx.opts.minFrames);
    }));
  } catch (e) {
    rowInfo.error = `publisher not live: ${oneLine(e.message, 600)}`;
    console.log(`# ${row.id}: ${rowInfo.error}`);
    cells = cols.map((col) => failed(col, "publisher not live (see the row's error)"));
  }
  if (pub) rowInfo.publisher = await pub.stop();
  return { rowInfo, cells };
}

// ---- environment -------------------------------------------------------------------------------
async function versions(chromiumVersion) {
  const lock = (() => { try { return fs.readFileSync(rel('tests/peers/webrtc-rs/Cargo.lock'), 'utf8'); } catch (_) { return ''; } })();
  const webrtc = lock.match(/\[\[package\]\]\nname = "webrtc"\nversion = "([^"]+)"/);
  const pw = (() => { try { return JSON.parse(fs.readFileSync(rel('tests/browser/node_modules/playwright-core/package.json'), 'utf8')).version; } catch (_) { return null; } })();
  const [chromium, aiortc, ldc, gst] = await Promise.all([
    chromiumVersion || cmdOut([CHROMIUM, '--version']),
    cmdOut([PEERS.aiortc.cmd[0], '-c', 'import aiortc, av; print(aiortc.__version__, "(PyAV " + av.__version__ + ")")']),
    cmdOut([PEERS.obs.cmd[0], '-c', 'import importlib.metadata as m; print(m.version("libdatachannel-py"))']),
    cmdOut([PEERS.gst.cmd[0], '-c', 'import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst; Gst.init(None); print(Gst.version_string().replace("GStreamer ", ""))']),
  ]);
  return {
    chromium: ((chromium || '').match(/\d+(\.\d+)+/) || [null])[0],
    aiortc,
    'libdatachannel-py': ldc,
    gstreamer: gst,
    webrtc: webrtc ? webrtc[1] : null,
    node: process.version,
    'playwright-core': pw,
  };
}
async function machine() {
  const cpu = (() => { try { return (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m) || [])[1] || null; } catch (_) { return null; } })();
  return { nproc: Number(await cmdOut(['nproc'])) || os.availableParallelism(), cpu, kernel: `${os.type()} ${os.release()}` };
}

// Temporary files of the run: the webrtc-rs publisher's clip and the per-cell dump dirs.
function makeTmp() {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'aethex-interop-'));
  const clip = path.join(base, 'clip');
  return {
    base,
    // Made once before the rows when a webrtc-rs row is selected (make_clip.py, ~3 s); resolves
    // to null or the error.
    async makeClip() {
      const r = await capture([PEERS.aiortc.cmd[0], rel('tests/peers/make_clip.py'), clip], 60000);
      return r.code === 0 ? null : `make_clip.py failed (${r.code === null ? 'killed or not started' : `exit ${r.code}`}): ${oneLine(r.stderr, 400)}`;
    },
    clip: () => clip,
    dir(name) { const d = path.join(base, name); fs.mkdirSync(d, { recursive: true }); return d; },
    remove() { try { fs.rmSync(base, { recursive: true, force: true }); } catch (_) { /* ignore */ } },
  };
}

// ---- main --------------------------------------------------------------------------------------
async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.writeDoc) {
    writeDoc(opts.writeDoc, JSON.parse(fs.readFileSync(opts.out, 'utf8')));
    console.log(`# wrote the matrix of ${opts.out} into ${opts.writeDoc}`);
    return 0;
  }
  const rows = selectRows(opts.only);
  if (opts.listChannels) { rows.forEach((r) => console.log(r.channel)); return 0; }
  const cols = selectColumns(opts.viewers);
  if (!opts.origin || !opts.edge || !opts.keys) throw new Error('--origin, --edge and --keys are required (or use tests/interop/run.sh)');
  const keys = {};
  for (const line of fs.readFileSync(opts.keys, 'utf8').split('\n').filter((l) => l.trim())) {
    const j = JSON.parse(line);
    keys[j.channel] = j.stream_key;
  }
  const logDir = path.join(path.dirname(opts.out), 'logs');
  fs.rmSync(logDir, { recursive: true, force: true });
  fs.mkdirSync(logDir, { recursive: true });

  // Every peer used by the selection must be there: a missing one fails its cells.
  const used = [...new Set([...rows.map((r) => r.peer), ...cols.map((c) => c.impl)])];
  const missing = {};
  for (const p of used) {
    const absent = PEERS[p].needs.map((f) => (f.startsWith('/') ? f : rel(f))).filter((f) => !fs.existsSync(f));
    if (absent.length) missing[p] = `peer ${p} missing: ${absent.map((f) => path.relative(ROOT, f) || f).join(', ')} not found`;
  }
  Object.values(missing).forEach((m) => console.log(`# ${m}`));

  const ctx = { opts, origin: opts.origin.replace(/\/+$/, ''), edge: opts.edge.replace(/\/+$/, ''), keys, logDir, missing, tmp: makeTmp(), chromium: null };
  const out = {
    started: new Date().toISOString(), origin: ctx.origin, edge: ctx.edge, server: opts.serverVersion || null,
    params: { duration_s: opts.duration, min_video_frames: opts.minFrames, live_timeout_s: opts.liveTimeout },
    machine: null, rows: [], columns: cols.map((c) => c.id), cells: [],
  };
  let closeChromium = null;
  const shutdown = async () => {
    for (const pid of children) killGroup(pid, 'SIGKILL');
    if (closeChromium) await closeChromium();
    ctx.tmp.remove();
  };
  const save = () => {
    out.finished = new Date().toISOString();
    out.summary = { passed: out.cells.filter((c) => c.ok).length, failed: out.cells.filter((c) => !c.ok).length, missing_peers: Object.keys(missing) };
    fs.mkdirSync(path.dirname(opts.out), { recursive: true });
    fs.writeFileSync(opts.out, JSON.stringify(out, null, 2) + '\n');
  };
  // Bounded: a row needs at most live timeout + viewer hard limit + publisher stop. When the
  // budget is spent or a signal comes, the peers are killed (their cells fail with the reason),
  // the remaining rows are not run, and the process exits at the latest 30 s later.
  const budgetMs = 60000 + rows.length * (opts.liveTimeout + opts.duration + 45) * 1000;
  let stopReason = null;
  const exitNow = () => { save(); shutdown().finally(() => process.exit(1)); };
  const abort = (why) => {
    if (stopReason) { exitNow(); return; } // a second signal: do not wait for the row
    stopReason = why;
    console.log(`# ${why}: stopping`);
    for (const pid of children) killGroup(pid, 'SIGKILL');
    setTimeout(exitNow, 30000).unref();
  };
  const globalTimer = setTimeout(() => abort(`run budget of ${budgetMs / 1000} s exhausted`), budgetMs);
  process.on('SIGINT', () => abort('interrupted by SIGINT'));
  process.on('SIGTERM', () => abort('interrupted by SIGTERM'));

  try {
    // Chromium (one instance, a page per peer); if it cannot start, its cells fail with why.
    if (used.includes('chromium') && !missing.chromium) {
      try {
        const module = await import(pathToFileURL(rel(PEERS.chromium.module)).href);
        const chrome = await startChromium((close) => { closeChromium = close; });
        ctx.chromium = { context: chrome.context, module, version: chrome.browser.version() };
      } catch (e) {
        missing.chromium = `peer chromium unusable: ${oneLine(e.message, 400)}`;
        console.log(`# ${missing.chromium}`);
      }
    }
    [out.machine, out.versions] = await Promise.all([machine(), versions(ctx.chromium ? ctx.chromium.version : null)]);
    if (rows.some((r) => r.peer === 'webrtc-rs') && !missing['webrtc-rs']) {
      const err = await ctx.tmp.makeClip();
      if (err) ctx.clipError = `webrtc-rs publisher: ${err}`;
    }
    console.log(`# ${rows.length} rows x ${cols.length} viewers; origin ${ctx.origin}, edge ${ctx.edge}; ${out.machine.nproc} cpus (${out.machine.cpu})`);

    const report = (c) => {
      const ms = c.first_frame_ms != null ? ` ${Math.round(c.first_frame_ms)} ms` : '';
      console.log(c.ok ? `ok - ${c.row} -> ${c.viewer}${ms}` : `not ok - ${c.row} -> ${c.viewer}: ${c.error}`);
    };
    for (const row of rows) {
      if (stopReason) {
        const cells = cols.map((col) => judge(row, col, { res: null, error: `not run: ${stopReason}` }, opts.minFrames));
        cells.forEach(report);
        out.rows.push({ id: row.id, label: row.label, error: `not run: ${stopReason}` });
        out.cells.push(...cells);
        continue;
      }
      const t = Date.now();
      const { rowInfo, cells } = await runRow(ctx, row, cols);
      if (stopReason) cells.filter((c) => !c.ok).forEach((c) => { c.error = `${stopReason}: ${c.error}`; });
      cells.forEach(report);
      rowInfo.row_ms = Date.now() - t;
      out.rows.push(rowInfo);
      out.cells.push(...cells);
      save();
    }
  } finally {
    clearTimeout(globalTimer);
    save();
    await shutdown();
  }
  const { passed, failed } = out.summary;
  console.log(`# results: ${path.relative(process.cwd(), opts.out)}, peer logs: ${path.relative(process.cwd(), logDir)}`);
  console.log(`${passed} passed, ${failed} failed${Object.keys(missing).length ? `, missing peers: ${Object.keys(missing).join(', ')}` : ''}`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

main().then((code) => process.exit(code), (e) => {
  console.log(`not ok - matrix setup: ${oneLine(e && e.stack || e, 2000)}`);
  for (const pid of children) killGroup(pid, 'SIGKILL');
  process.exit(1);
});
