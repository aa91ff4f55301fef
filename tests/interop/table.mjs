// The interop matrix as Markdown, from the JSON that tests/interop/matrix.mjs writes: rows are
// publishers, columns viewers at the origin and at the edge, each cell `pass N ms` (first decoded
// video frame after the viewer's POST) or `FAIL`, then the failures' reasons, the run's date,
// machine and peer versions.
//
//   node tests/interop/table.mjs RESULTS.json              # print the Markdown
//   node tests/interop/table.mjs RESULTS.json docs/interop.md  # replace the part between markers
//
// (`node tests/interop/matrix.mjs --write-doc docs/interop.md` does the second.)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const VIEWER_IMPLS = ['chromium', 'aiortc', 'webrtc-rs'];
export const SITES = ['origin', 'edge'];
export const BEGIN = '<!-- matrix:begin -->';
export const END = '<!-- matrix:end -->';

const IMPL_LABEL = { chromium: 'Chromium', aiortc: 'aiortc', 'webrtc-rs': 'webrtc-rs' };
const VERSION_LABEL = {
  chromium: 'Chromium', aiortc: 'aiortc', 'libdatachannel-py': 'libdatachannel-py', gstreamer: 'GStreamer',
  webrtc: 'webrtc crate', node: 'node', 'playwright-core': 'playwright-core',
};
const cellText = (c) => (!c ? 'not run' : c.ok ? `pass ${Math.round(c.first_frame_ms)} ms` : 'FAIL');
const esc = (s) => String(s ?? '').replace(/\|/g, '\\|').replace(/\s+/g, ' ').trim();

export function renderTable(res) {
  const cols = res.columns;
  const byKey = new Map(res.cells.map((c) => [`${c.row}|${c.viewer}`, c]));
  const colLabel = (id) => { const [impl, site] = id.split('@'); return `${IMPL_LABEL[impl] || impl} @${site}`; };
  const lines = [];
  const passed = res.cells.filter((c) => c.ok).length;
  lines.push(`${passed} of ${res.cells.length} cells pass. Cell: \`pass N ms\` = time from the viewer's WHEP POST to its first ` +
    `decoded video frame; a cell passes with >= ${res.params.min_video_frames} decoded video frames in ` +
    `${res.params.duration_s} s, and at least one decoded audio frame when the publisher sends Opus.`);
  lines.push('');
  lines.push(`| publisher \\ viewer | ${cols.map(colLabel).join(' | ')} |`);
  lines.push(`|---|${cols.map(() => '---').join('|')}|`);
  for (const row of res.rows) {
    lines.push(`| ${esc(row.label || row.id)} | ${cols.map((col) => cellText(byKey.get(`${row.id}|${col}`))).join(' | ')} |`);
  }
  // Failures, one line per way of failing: the rows and viewers that failed with the same message
  // (figures aside); a row whose publisher never went live counts for every viewer.
  const groups = new Map();
  const add = (rowId, viewers, error) => {
    const k = `${viewers.join(',')}|${String(error).replace(/[\d.]+/g, '#')}`;
    if (!groups.has(k)) groups.set(k, { rows: [], viewers, error });
    groups.get(k).rows.push(rowId);
  };
  for (const row of res.rows) {
    if (row.error) { add(row.id, ['every viewer'], row.error); continue; }
    const byError = new Map();
    for (const c of res.cells.filter((x) => x.row === row.id && !x.ok)) {
      const k = String(c.error).replace(/[\d.]+/g, '#');
      if (!byError.has(k)) byError.set(k, { viewers: [], error: c.error });
      byError.get(k).viewers.push(c.viewer);
    }
    for (const g of byError.values()) add(row.id, g.viewers, g.error);
  }
  if (groups.size) {
    lines.push('', 'Failures (the first message of each kind):', '');
    for (const g of groups.values()) lines.push(`- ${g.rows.map((r) => `\`${r}\``).join(', ')} -> ${g.viewers.join(', ')}: ${esc(g.error).slice(0, 300)}`);
  }
  lines.push('');
  const m = res.machine || {};
  const when = String(res.started).replace('T', ' ').replace(/:\d\d(\.\d+)?Z$/, ' UTC');
  lines.push(`Run ${when}${res.finished ? ` (${Math.round((Date.parse(res.finished) - Date.parse(res.started)) / 1000)} s)` : ''}` +
    ` on ${m.nproc} CPUs (${m.cpu || 'unknown CPU'}), ${m.kernel || ''}${res.server ? `; server ${esc(res.server)}` : ''}.`);
  const v = res.versions || {};
  lines.push('Versions: ' + Object.keys(VERSION_LABEL).map((k) => `${VERSION_LABEL[k]} ${v[k] ? esc(v[k]) : 'not installed'}`).join(', ') + '.');
  return lines.join('\n');
}

// Replace what is between the markers of `docFile` (which must have both) with the table.
export function writeDoc(docFile, res) {
  const doc = fs.readFileSync(docFile, 'utf8');
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  if (a < 0 || b < a) throw new Error(`${docFile} lacks the ${BEGIN} / ${END} markers`);
  fs.writeFileSync(docFile, `${doc.slice(0, a + BEGIN.length)}\n${renderTable(res)}\n${doc.slice(b)}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [results, doc] = process.argv.slice(2);
  if (!results) { console.error('usage: node tests/interop/table.mjs RESULTS.json [DOC.md]'); process.exit(2); }
  const res = JSON.parse(fs.readFileSync(results, 'utf8'));
  if (doc) writeDoc(doc, res); else console.log(renderTable(res));
}
