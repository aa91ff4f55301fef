#!/usr/bin/env python3
"""Independent WebRTC peer (aiortc) for AeThex LIVE end-to-end tests and measurements.

Subcommands:
  publish   WHIP publisher: synthetic video (moving pattern + wallclock barcode) and an
            Opus sine (440 Hz, or --tone HZ); counts encoder keyframes and the ones forced
            by PLI/FIR.
  view      WHEP viewer: counts decoded frames, time to first frame, reads the barcode of
            every decoded video frame and reports glass-to-glass latency. Offers one video
            and one audio recvonly section, or several (--video-sections / --audio-sections,
            for co-streaming stages) and reports every track on its own ("tracks"), with the
            dominant audio frequencies on request (--tones).
  selftest  publisher -> viewer inside one process (no server), to prove the barcode
            survives VP8 / H264 encoding.

stdout carries only JSON lines (`{"event":"live"}` for the publisher, then one final
result line); all logs go to stderr. Exit code 0 when ok, 1 otherwise.
"""

import argparse
import asyncio
import collections
import fractions
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

import aioice.ice
import av
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtcpPsfbPacket, RtcpRtpfbPacket

# the glass-to-glass barcode and the synthetic picture (tests/peers/barcode.py, next to this file)
from barcode import Picture, g2g_from_frame, self_check

log = logging.getLogger("aiortc_peer")

# ---------------------------------------------------------------------------
# Loopback: aioice never gathers 127.0.0.1 on its own. The server and all peers live on
# 127.0.0.1, so make it the only host address aioice enumerates.
# ---------------------------------------------------------------------------
LOOPBACK = "127.0.0.1"


def _loopback_only(use_ipv4=True, use_ipv6=False):
    return [LOOPBACK] if use_ipv4 else []


aioice.ice.get_host_addresses = _loopback_only


def rtc_config(max_bundle=False):
    # An empty list: otherwise aiortc adds a public STUN server.
    if not max_bundle:
        return RTCConfiguration(iceServers=[])
    # Several sections of one kind (view --video-sections/--audio-sections > 1): aiortc's
    # default "balanced" policy puts the 2nd audio section on the 1st audio section's
    # transport and marks it bundled already; when the answer's BUNDLE group arrives aiortc
    # moves only the not-yet-bundled sections to the first transport and stops the others,
    # so the 2nd audio section (and any later one) would sit on a stopped transport and
    # never receive (aiortc 1.16). max-bundle puts every section on the first transport.
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def now_ms():
    return time.time() * 1000.0


def emit(obj, stats_out=None):
    line = json.dumps(obj, separators=(",", ":"))
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if stats_out:
        with open(stats_out, "w") as f:
            f.write(line + "\n")


# ---------------------------------------------------------------------------
# Synthetic tracks
# ---------------------------------------------------------------------------
VIDEO_CLOCK = 90000


class BarcodeVideoTrack(MediaStreamTrack):
    """Moving pattern + wallclock barcode, yuv420p, paced at `fps`."""

    kind = "video"

    def __init__(self, width=640, height=360, fps=30):
        super().__init__()
        self.width = width & ~1
        self.height = height & ~1
        self.fps = fps
        self.frames = 0
        self._start = None
        self._pts = 0
        self._picture = Picture(width, height)
        self.width, self.height = self._picture.width, self._picture.height

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        step = VIDEO_CLOCK / self.fps
        if self._start is None:
            self._start = time.time()
            self._pts = 0
        else:
            self._pts += step
            wait = self._start + self._pts / VIDEO_CLOCK - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        # the barcode's stamp is the moment the frame is produced (handed to the encoder)
        buf = self._picture.frame(self.frames)
        frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
        frame.pts = int(self._pts)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frames += 1
        return frame


class SineAudioTrack(MediaStreamTrack):
    """Sine at `freq` Hz (440 by default, `publish --tone`) at `volume` of full scale (0.3 by
    default, `publish --volume`), 48 kHz mono s16, 20 ms frames."""

    kind = "audio"
    RATE = 48000
    SAMPLES = 960

    def __init__(self, freq=440.0, volume=0.3):
        super().__init__()
        self.freq = freq
        self.volume = volume
        self.frames = 0
        self._start = None
        self._pts = 0

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
            self._pts = 0
        else:
            self._pts += self.SAMPLES
            wait = self._start + self._pts / self.RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        t = (np.arange(self.SAMPLES) + self._pts) / self.RATE
        pcm = (self.volume * 32767 * np.sin(2 * math.pi * self.freq * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.RATE)
        self.frames += 1
        return frame


# ---------------------------------------------------------------------------
# Keyframe accounting: wrap the aiortc encoders (aiortc 1.16: encode(frame, force_keyframe)
# runs in the default executor). A keyframe is detected in the packetized output, so it
# covers encoder start, forced (PLI/FIR) and self-made (libx264 GOP, rebuild on REMB).
# ---------------------------------------------------------------------------
class KeyframeStats:
    def __init__(self):
        self.lock = threading.Lock()
        self.encoded = 0
        self.keyframes = 0
        self.forced_requests = 0  # encode() calls with force_keyframe=True
        self.forced_keyframes = 0  # ... that did produce a keyframe
        self.unforced_keyframes = 0
        self.encoder_builds = 0
        self.keyframe_frame_index = []  # encoded-frame index of each keyframe
        self.keyframe_wall_ms = []  # wallclock ms when each keyframe left the encoder
        self.pli_fir_received = 0
        self.remb_received = 0
        self.nack_received = 0


KF = KeyframeStats()


def _vp8_is_key(payloads):
    if not payloads:
        return False
    try:
        descr, rest = VpxPayloadDescriptor.parse(payloads[0])
    except Exception:
        return False
    # first partition start: P bit (bit 0 of first byte) == 0 means key frame
    return bool(descr.partition_start and descr.partition_id == 0 and rest and not (rest[0] & 1))


def _h264_is_key(payloads):
    for p in payloads:
        if not p:
            continue
        t = p[0] & 0x1F
        if t == 5:
            return True
        if t == 28 and len(p) > 1 and (p[1] & 0x80) and (p[1] & 0x1F) == 5:
            return True
        if t == 24:
            pos = 1
            while pos + 2 < len(p):
                n = (p[pos] << 8) | p[pos + 1]
                if pos + 2 < len(p) and (p[pos + 2] & 0x1F) == 5:
                    return True
                pos += 2 + n
    return False


def _wrap_encoder(cls, is_key):
    orig = cls.encode

    def encode(self, frame, force_keyframe=False):
        before = getattr(self, "codec", None)
        payloads, ts = orig(self, frame, force_keyframe)
        after = getattr(self, "codec", None)
        key = is_key(payloads)
        with KF.lock:
            idx = KF.encoded
            KF.encoded += 1
            if after is not None and after is not before:
                KF.encoder_builds += 1
            if force_keyframe:
                KF.forced_requests += 1
            if key:
                KF.keyframes += 1
                KF.keyframe_frame_index.append(idx)
                KF.keyframe_wall_ms.append(now_ms())
                if force_keyframe:
                    KF.forced_keyframes += 1
                else:
                    KF.unforced_keyframes += 1
        if key:
            log.info("keyframe #%d at encoded frame %d (forced=%s)", KF.keyframes, idx, force_keyframe)
        return payloads, ts

    cls.encode = encode


_wrap_encoder(Vp8Encoder, _vp8_is_key)
_wrap_encoder(H264Encoder, _h264_is_key)

_orig_handle_rtcp = RTCRtpSender._handle_rtcp_packet
IGNORE_REMB = False  # --ignore-remb: drop REMB so the encoder is never rebuilt by it
IGNORE_PLI = False  # --ignore-pli: a publisher that never answers keyframe requests

# --keyint N (H264 only): libx264's periodic IDR interval. aiortc leaves it at x264's default
# (250 frames) and sets no gop_size, so a gop_size set right after the context is created
# survives; aiortc's VP8 encoder sets gop_size=3000 itself (kf_max_dist), not overridable here.
H264_KEYINT = None


class _AvShim:
    """Stands in for the `av` module inside aiortc.codecs.h264 to set gop_size on creation."""

    def __getattr__(self, name):
        return getattr(av, name)

    class CodecContext:
        @staticmethod
        def create(*args, **kwargs):
            ctx = av.CodecContext.create(*args, **kwargs)
            if H264_KEYINT is not None and args and args[0] == "libx264":
                ctx.gop_size = H264_KEYINT
            return ctx


import aiortc.codecs.h264 as _aiortc_h264  # noqa: E402

_aiortc_h264.av = _AvShim()


async def _counting_handle_rtcp(self, packet):
    try:
        if isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (1, 4):  # PLI, FIR
                if self.kind == "video":
                    KF.pli_fir_received += 1
                if IGNORE_PLI:
                    return None
            elif packet.fmt == 15:  # APP: REMB
                KF.remb_received += 1
                if IGNORE_REMB:
                    return None
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == 1:  # generic NACK
            KF.nack_received += 1
    except Exception:  # counting must never break the transport
        pass
    return await _orig_handle_rtcp(self, packet)


RTCRtpSender._handle_rtcp_packet = _counting_handle_rtcp

# Viewer side: when aiortc sends PLIs (jitter buffer gaps, decoder errors before the first
# keyframe), relative to the viewer's t0.
PLI_SENT_AT = []  # wallclock ms
_orig_send_pli = RTCRtpReceiver._send_rtcp_pli


async def _counting_send_pli(self, media_ssrc):
    PLI_SENT_AT.append(now_ms())
    return await _orig_send_pli(self, media_ssrc)


RTCRtpReceiver._send_rtcp_pli = _counting_send_pli


# ---------------------------------------------------------------------------
# HTTP (urllib in a thread)
# ---------------------------------------------------------------------------
class HttpResult:
    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        # header names are case-insensitive (hyper sends them lower-case)
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        try:
            return json.loads(self.body)
        except Exception:
            return None


def _http(method, url, body=None, headers=None, timeout=10.0):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return HttpResult(r.status, r.read(), dict(r.headers.items()))
    except urllib.error.HTTPError as e:
        try:
            data = e.read()
        except Exception:
            data = b""
        return HttpResult(e.code, data, dict(e.headers.items()) if e.headers else {})


async def http(method, url, body=None, headers=None, timeout=10.0):
    return await asyncio.wait_for(
        asyncio.to_thread(_http, method, url, body, headers, timeout), timeout + 2
    )


class PeerError(Exception):
    pass


def sdp_candidate_summary(sdp):
    """[(kind, mid, n_candidates, end_of_candidates)] per m-section, for diagnostics."""
    out = []
    cur = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            cur = [line[2:].split(" ")[0], None, 0, False]
            out.append(cur)
        elif cur is not None:
            if line.startswith("a=mid:"):
                cur[1] = line[6:]
            elif line.startswith("a=candidate:"):
                cur[2] += 1
            elif line.startswith("a=end-of-candidates"):
                cur[3] = True
    return [tuple(x) for x in out]


def check_answer(sdp):
    summary = sdp_candidate_summary(sdp)
    log.info("answer m-sections (kind, mid, candidates, end-of-candidates): %s", summary)
    if summary and summary[-1][2] == 0:
        log.warning(
            "answer: last m-section has no a=candidate lines; aiortc with BUNDLE keeps only the "
            "last section's candidates, ICE will likely not start"
        )
    return summary


# URLs a WHIP/WHEP POST was redirected to (307/308), in order; reported in the result.
REDIRECTS = []
REDIRECT_MS = []


async def signal_exchange(pc, url, headers, t_post_box, retry_offline_s=0.0):
    """Create the offer, POST it, apply the answer. Returns (location_abs, answer_sdp)."""
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    log.debug("offer:\n%s", offer)
    h = {"Content-Type": "application/sdp"}
    h.update(headers)
    deadline = time.monotonic() + retry_offline_s
    first_post = now_ms()
    retries = 0
    while True:
        # t0 of the measurements: just before the POST that got the answer
        t_post_box[:] = [now_ms()]
        res = await http("POST", url, offer.encode(), h)
        if res.status in (307, 308) and len(REDIRECTS) < 3:
            # Region routing: the same POST again at the edge the server names (urllib does
            # not replay a POST on 307 by itself).
            target = res.headers.get("location") or res.headers.get("Location")
            if not target:
                raise PeerError("%d without Location header" % res.status)
            url = urllib.parse.urljoin(url, target)
            REDIRECTS.append(url)
            log.info("redirected (%d) to %s", res.status, url)
            continue
        if res.status == 404 and retry_offline_s > 0 and time.monotonic() < deadline:
            j = res.json() or {}
            if j.get("code") == "offline":
                retries += 1
                log.info("channel offline, retrying in 500 ms")
                await asyncio.sleep(0.5)
                continue
        break
    if REDIRECTS:
        # From the first POST to the POST that was answered: what following redirects cost.
        REDIRECT_MS.append(round(t_post_box[0] - first_post, 1))
    if retries:
        t_post_box.append({"offline_retries": retries,
                           "offline_wait_ms": round(t_post_box[0] - first_post, 1)})
    if res.status != 201:
        raise PeerError("POST %s -> HTTP %d: %s" % (url, res.status, res.text()[:500]))
    ctype = res.headers.get("content-type", "")
    if "application/sdp" not in ctype:
        log.warning("answer Content-Type is %r, expected application/sdp", ctype)
    loc = res.headers.get("location")
    if not loc:
        raise PeerError("201 without Location header")
    answer = res.text()
    log.debug("answer:\n%s", answer)
    check_answer(answer)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    except Exception as e:
        log.error("setRemoteDescription failed; answer was:\n%s", answer)
        raise PeerError("bad answer: %r" % (e,))
    return urllib.parse.urljoin(url, loc), answer


async def http_delete(location, headers):
    try:
        res = await http("DELETE", location, None, headers, timeout=5.0)
        if res.status not in (200, 204):
            log.warning("DELETE %s -> HTTP %d: %s", location, res.status, res.text()[:300])
        return res.status
    except Exception as e:
        log.warning("DELETE %s failed: %r", location, e)
        return None


def track_states(pc, t0_box, states, connected_evt, failed_evt):
    @pc.on("connectionstatechange")
    async def _on_state():
        t = round(now_ms() - t0_box[0], 1) if t0_box else None
        states.append([t, pc.connectionState])
        log.info("connectionState -> %s (t=%s ms, ice=%s)", pc.connectionState, t, pc.iceConnectionState)
        if pc.connectionState == "connected":
            connected_evt.set()
        elif pc.connectionState in ("failed", "closed"):
            failed_evt.set()

    @pc.on("iceconnectionstatechange")
    async def _on_ice():
        log.info("iceConnectionState -> %s", pc.iceConnectionState)


def connected_at(states):
    """ms from t0 to the 'connected' state change (recorded in the callback)."""
    for t, st in states:
        if st == "connected":
            return t
    return None


async def wait_connected(connected_evt, failed_evt, timeout):
    done, pending = await asyncio.wait(
        [asyncio.ensure_future(connected_evt.wait()), asyncio.ensure_future(failed_evt.wait())],
        timeout=timeout,
        return_when=asyncio.FIRST_COMPLETED,
    )
    for p in pending:
        p.cancel()
    return connected_evt.is_set()


async def close_pc(pc):
    try:
        await asyncio.wait_for(pc.close(), 5.0)
    except Exception as e:
        log.warning("pc.close(): %r", e)


def install_stop_signals(stop_evt):
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(s, stop_evt.set)
        except (NotImplementedError, RuntimeError):
            pass


def set_codec_prefs(transceiver, kind, names):
    """Restrict a transceiver to codecs whose mimeType is kind/<name> (in `names` order)."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    prefs = []
    for name in names:
        prefs += [c for c in caps if c.mimeType.lower() == ("%s/%s" % (kind, name)).lower()]
    if not prefs:
        raise PeerError("no %s codec among %s" % (kind, names))
    transceiver.setCodecPreferences(prefs)


def video_codec_names(codec):
    return {"vp8": ["VP8"], "h264": ["H264"], "any": ["VP8", "H264"]}[codec]


async def rtp_stats(pc, want):
    """want: 'outbound-rtp' (publisher) or 'inbound-rtp' (viewer)."""
    out = {}
    try:
        report = await asyncio.wait_for(pc.getStats(), 3.0)
    except Exception:
        return out
    for s in report.values():
        kind = getattr(s, "kind", None)
        if s.type != want:
            continue
        # Summed per kind: a viewer with several sections of a kind has one stream each.
        if s.type == "outbound-rtp":
            fields = {"packets_sent": s.packetsSent, "bytes_sent": s.bytesSent}
        else:
            fields = {"packets_received": s.packetsReceived, "packets_lost": s.packetsLost}
        for name, value in fields.items():
            key = "%s_%s" % (kind, name)
            out[key] = out.get(key, 0) + (value or 0)
    return out


# ---------------------------------------------------------------------------
# Viewer consumption (shared by `view` and `selftest`)
# ---------------------------------------------------------------------------
# Band the tone analysis looks at, and how much PCM it keeps per audio track.
TONE_BAND_HZ = (100.0, 4000.0)
TONE_WINDOW_S = 1.0


def tone_key(hz):
    """JSON key of a --tones frequency: 440 -> "440", 440.5 -> "440.5"."""
    return "%g" % hz


def tone_analysis(pcm, rate, tones):
    """(peak_hz, {"<hz>": relative power}) of mono PCM.

    Hann-windowed FFT of the whole buffer (1 s -> 1 Hz bins). peak_hz is the strongest bin in
    TONE_BAND_HZ; a tone's power is the strongest bin within +-5 Hz of it (Opus and the window
    smear a sine over a few bins) divided by the mean bin power of the band. A lone sine gives
    a few thousand at its frequency and well under 1 elsewhere; silence gives None / 0."""
    powers = {tone_key(t): 0.0 for t in tones}
    n = len(pcm)
    if not rate or n < rate * 0.1:  # under 100 ms: 10 Hz bins, nothing worth reporting
        return None, powers
    x = pcm - pcm.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(n))) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    band = (freqs >= TONE_BAND_HZ[0]) & (freqs <= TONE_BAND_HZ[1])
    mean = float(spec[band].mean()) if band.any() else 0.0
    if mean <= 0.0:
        return None, powers
    peak_hz = float(freqs[band][int(np.argmax(spec[band]))])
    tol = max(5.0, 2.0 * rate / n)
    for t in tones:
        near = np.abs(freqs - t) <= tol
        if near.any():
            powers[tone_key(t)] = float("%.4g" % (float(spec[near].max()) / mean))
    return round(peak_hz, 1), powers


def mono_pcm(frame):
    """A decoded AudioFrame as one float array (channels averaged; aiortc decodes Opus to
    packed s16 stereo, planar layouts are handled too)."""
    arr = frame.to_ndarray().astype(np.float32)
    channels = max(1, len(frame.layout.channels))
    if frame.format.is_planar:
        arr = arr.reshape(channels, -1).mean(axis=0)
    else:
        arr = arr.reshape(-1, channels).mean(axis=1)
    if frame.format.name.startswith("s16"):
        arr /= 32768.0
    return arr


class TrackStats:
    """What one received m-section decoded. `view` makes one per transceiver, in m-line
    order, before any media flows, so a section the answer left inactive (or rejected) still
    appears, with 0 frames and answered=false."""

    def __init__(self, kind, mid, t0_ms, answered=True, tones=None):
        self.kind = kind
        self.mid = mid
        self.t0 = t0_ms
        self.answered = answered
        self.transceiver = None  # set by ViewerStats.track_for (per-track packet counts)
        self.frames = 0
        self.first_frame_ms = None
        self.sizes = {}
        self.last_ms = None
        self.max_gap_ms = 0.0
        # None: no PCM kept. A list of Hz (may be empty): keep the last TONE_WINDOW_S of
        # decoded audio for tone_analysis at the end (only audio, only with --tones).
        self.tones = tones if kind == "audio" else None
        self._pcm = collections.deque()
        self._pcm_len = 0
        self._rate = None

    def on_frame(self, frame, t):
        if self.first_frame_ms is None:
            self.first_frame_ms = round(t - self.t0, 1)
        self.frames += 1
        if self.kind == "video":
            size = "%dx%d" % (frame.width, frame.height)
            self.sizes[size] = self.sizes.get(size, 0) + 1
            if self.last_ms is not None:
                self.max_gap_ms = max(self.max_gap_ms, t - self.last_ms)
            self.last_ms = t
        elif self.tones is not None:
            try:
                self._add_pcm(mono_pcm(frame), frame.sample_rate)
            except Exception as e:  # an odd frame must not kill the viewer
                log.debug("audio frame not analysed: %r", e)

    def _add_pcm(self, pcm, rate):
        if rate != self._rate:  # a rate change would mix two time scales: start over
            self._pcm.clear()
            self._pcm_len = 0
            self._rate = rate
        self._pcm.append(pcm)
        self._pcm_len += len(pcm)
        keep = int(rate * TONE_WINDOW_S)
        while self._pcm and self._pcm_len - len(self._pcm[0]) >= keep:
            self._pcm_len -= len(self._pcm.popleft())

    def result(self):
        r = {"kind": self.kind, "mid": self.mid, "answered": self.answered,
             "frames": self.frames, "first_frame_ms": self.first_frame_ms}
        if self.kind == "video":
            r["sizes"] = self.sizes
            r["max_gap_ms"] = round(self.max_gap_ms, 1)
        elif self.tones is not None:
            pcm = np.concatenate(list(self._pcm)) if self._pcm else np.zeros(0, np.float32)
            r["peak_hz"], r["tone_power"] = tone_analysis(pcm, self._rate, self.tones)
        return r


class ViewerStats:
    """Decoded media of one viewer: the aggregate fields of the result line (over all tracks,
    as they always were) plus one TrackStats per received section ("tracks")."""

    def __init__(self, t0_ms, tones=None):
        self.t0 = t0_ms
        self.tones = tones
        self.first_frame_ms = None
        self.first_audio_ms = None
        self.video_frames = 0
        self.audio_frames = 0
        self.width = None
        self.height = None
        self.g2g = []
        # Decoded frames per picture size: two publishers of different sizes tell apart
        # whose media a viewer got.
        self.sizes = {}
        self.tracks = []  # TrackStats in m-line order

    def add_sections(self, pc, answer_sdp):
        """One TrackStats per transceiver of `pc` (the offerer: creation order = m-line
        order), answered or not according to the answer."""
        sections = sdp_sections(answer_sdp)
        by_mid = {s["mid"]: s for s in sections if s["mid"] is not None}
        for i, tr in enumerate(pc.getTransceivers()):
            s = by_mid.get(tr.mid) or (sections[i] if i < len(sections) else None)
            ts = TrackStats(tr.kind, tr.mid, self.t0, answered=section_answered(s),
                            tones=self.tones)
            ts.transceiver = tr
            self.tracks.append(ts)

    def track_for(self, pc, track):
        """The TrackStats of a remote track (by its transceiver), made on the spot for a
        track of a section add_sections did not know (selftest: the answerer's side)."""
        tr = next((t for t in pc.getTransceivers() if t.receiver.track is track), None)
        for ts in self.tracks:
            if tr is not None and ts.transceiver is tr:
                return ts
        ts = TrackStats(track.kind, tr.mid if tr is not None else None, self.t0, tones=self.tones)
        ts.transceiver = tr
        self.tracks.append(ts)
        return ts

    async def consume(self, track, stop_evt, ts=None):
        """Decode one track until stop_evt; every track has a task of its own."""
        if ts is None:
            ts = TrackStats(track.kind, None, self.t0, tones=self.tones)
            self.tracks.append(ts)
        while not stop_evt.is_set():
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            except asyncio.CancelledError:
                return
            t = now_ms()
            ts.on_frame(frame, t)
            if track.kind == "video":
                if self.first_frame_ms is None:
                    self.first_frame_ms = round(t - self.t0, 1)
                    log.info("first decoded video frame after %.1f ms (%dx%d %s, mid %s)",
                             self.first_frame_ms, frame.width, frame.height,
                             frame.format.name, ts.mid)
                self.video_frames += 1
                self.width, self.height = frame.width, frame.height
                size = "%dx%d" % (frame.width, frame.height)
                self.sizes[size] = self.sizes.get(size, 0) + 1
                try:
                    d = g2g_from_frame(frame, t)
                except Exception as e:  # never let one odd frame kill the viewer
                    log.debug("barcode read failed: %r", e)
                    d = None
                if d is not None:
                    if -1000 < d < 60000:
                        self.g2g.append(d)
                    else:
                        log.warning("implausible barcode reading: g2g=%d ms (ignored)", d)
            else:
                if self.first_audio_ms is None:
                    self.first_audio_ms = round(t - self.t0, 1)
                    log.info("first decoded audio frame after %.1f ms (mid %s)",
                             self.first_audio_ms, ts.mid)
                self.audio_frames += 1

    def result(self):
        g = sorted(self.g2g)

        def pct(p):
            if not g:
                return None
            k = min(len(g) - 1, max(0, int(math.ceil(p / 100.0 * len(g))) - 1))
            return g[k]

        return {
            "role": "viewer",
            "ok": True,
            "first_frame_ms": self.first_frame_ms,
            "first_audio_ms": self.first_audio_ms,
            "video_frames": self.video_frames,
            "audio_frames": self.audio_frames,
            "width": self.width,
            "height": self.height,
            "sizes": self.sizes,
            "g2g_ms_p50": pct(50),
            "g2g_ms_p95": pct(95),
            "g2g_ms_max": g[-1] if g else None,
            # Median of the last 30 frames in arrival order: the delay once any catch-up
            # (an SFU replaying its keyframe cache) is over.
            "g2g_ms_last30_p50": sorted(self.g2g[-30:])[len(self.g2g[-30:]) // 2] if self.g2g else None,
            "g2g_samples": len(g),
            # the longest gap between two decoded frames of the same track (interleaved
            # tracks would hide one another's stalls)
            "max_video_gap_ms": round(max([t.max_gap_ms for t in self.tracks
                                           if t.kind == "video"] or [0.0]), 1),
            "pli_sent": len(PLI_SENT_AT),
            "pli_sent_at_ms": [round(t - self.t0, 1) for t in PLI_SENT_AT[:20]],
            "tracks": [t.result() for t in self.tracks],
        }


async def add_track_packets(vs, tracks_out):
    """RTP packets received per section (from its receiver), next to its decoded frames: a
    track with packets and no frames is a decoding problem, none at all a forwarding one."""
    for ts, out in zip(vs.tracks, tracks_out):
        if ts.transceiver is None:
            continue
        try:
            report = await asyncio.wait_for(ts.transceiver.receiver.getStats(), 2.0)
        except Exception:
            continue
        out["packets"] = sum(s.packetsReceived or 0 for s in report.values()
                             if s.type == "inbound-rtp")


def section_kinds(video_sections, audio_sections):
    """m-line kinds of the viewer's offer: video 0, audio 0, video 1, audio 1, ... while
    both remain, then the rest. 1 + 1 is the offer the viewer always made (video, audio)."""
    kinds = []
    for i in range(max(video_sections, audio_sections)):
        if i < video_sections:
            kinds.append("video")
        if i < audio_sections:
            kinds.append("audio")
    return kinds


def add_recv_transceivers(pc, codec, video_sections=1, audio_sections=1):
    """recvonly transceivers in section_kinds order; returns them."""
    out = []
    for kind in section_kinds(video_sections, audio_sections):
        t = pc.addTransceiver(kind, direction="recvonly")
        if kind == "audio":
            set_codec_prefs(t, "audio", ["opus"])
        elif codec != "any":
            set_codec_prefs(t, "video", video_codec_names(codec))
        out.append(t)
    return out


def add_send_tracks(pc, codec, width, height, fps, audio=True, tone=440.0, volume=0.3):
    """Video track (and the Opus sine at `tone` Hz, `volume` of full scale, unless `audio` is
    false); returns (vtrack, atrack|None)."""
    vtrack = BarcodeVideoTrack(width, height, fps)
    tv = pc.addTransceiver(vtrack, direction="sendonly")
    set_codec_prefs(tv, "video", video_codec_names(codec))
    atrack = None
    if audio:
        atrack = SineAudioTrack(tone, volume)
        ta = pc.addTransceiver(atrack, direction="sendonly")
        set_codec_prefs(ta, "audio", ["opus"])
    return vtrack, atrack


def sdp_sections(sdp):
    """Per m-section: kind, port, mid, rtpmap (has an a=rtpmap line), direction
    (a=sendrecv/sendonly/recvonly/inactive; None if absent)."""
    sections, cur = [], None
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            cur = {"kind": parts[0] if parts else "", "port": parts[1] if len(parts) > 1 else "0",
                   "mid": None, "rtpmap": False, "direction": None}
            sections.append(cur)
        elif cur is not None:
            if line.startswith("a=rtpmap:"):
                cur["rtpmap"] = True
            elif line.startswith("a=mid:"):
                cur["mid"] = line[6:]
            elif line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
                cur["direction"] = line[2:]
    return sections


def section_answered(section):
    """False for a section of the answer that can carry no media to us: missing, rejected
    (port 0), a=inactive, or a=recvonly (the answerer would only receive). Port 0 and
    inactive are how an SFU answers the sections of a stage it has no participant for."""
    if section is None:
        return False
    return section["port"] != "0" and section["direction"] not in ("inactive", "recvonly")


def answer_has_audio(sdp):
    """True if the SDP has an audio m-section that carries media: port != 0, at least one
    a=rtpmap line and not a=inactive (what `view --expect-audio auto` expects audio from)."""
    return any(m["kind"] == "audio" and m["port"] != "0" and m["rtpmap"]
               and m["direction"] != "inactive" for m in sdp_sections(sdp))


def publisher_keyframe_fields():
    with KF.lock:
        return {
            "encoded_frames": KF.encoded,
            "keyframes": KF.keyframes,
            "forced_keyframes": KF.forced_keyframes,
            "forced_requests": KF.forced_requests,
            "unforced_keyframes": KF.unforced_keyframes,
            "keyframe_at_frames": KF.keyframe_frame_index[:50],
            "encoder_builds": KF.encoder_builds,
            "pli_fir_received": KF.pli_fir_received,
            "remb_received": KF.remb_received,
            "nack_received": KF.nack_received,
        }


# ---------------------------------------------------------------------------
# publish
# ---------------------------------------------------------------------------
def new_session(a, max_bundle=False):
    """A peer connection with its stop event, state log and the Bearer header of `a.token`."""
    stop_evt = asyncio.Event()
    install_stop_signals(stop_evt)
    pc = RTCPeerConnection(rtc_config(max_bundle))
    t0, states = [], []
    connected, failed = asyncio.Event(), asyncio.Event()
    track_states(pc, t0, states, connected, failed)
    auth = {"Authorization": "Bearer %s" % a.token} if a.token else {}
    return stop_evt, pc, t0, states, connected, failed, auth


async def cmd_publish(a):
    stop_evt, pc, t0, states, connected, failed, auth = new_session(a)
    vtrack, atrack = add_send_tracks(pc, a.codec, a.width, a.height, a.fps,
                                     audio=not a.no_audio, tone=a.tone, volume=a.volume)
    location = None
    result = {"role": "publisher", "ok": False, "codec": a.codec, "audio": not a.no_audio}
    if not a.no_audio:
        result["tone_hz"] = a.tone
    try:
        location, _ = await signal_exchange(pc, a.url, auth, t0)
        result["location"] = location
        if not await wait_connected(connected, failed, a.connect_timeout):
            raise PeerError("not connected after %.1f s (states: %s, ice: %s)"
                            % (a.connect_timeout, states, pc.iceConnectionState))
        result["connected_ms"] = connected_at(states)
        emit({"event": "live"})
        remaining = a.duration - (now_ms() - t0[0]) / 1000.0
        if remaining > 0:
            await wait_connected(stop_evt, failed, remaining)
        if failed.is_set():
            raise PeerError("connection ended early: %s" % states)
        result["ok"] = True
    except Exception as e:
        result["error"] = str(e) if isinstance(e, PeerError) else repr(e)
        log.error("publish failed: %s", result["error"])
    finally:
        result["duration_s"] = round((now_ms() - t0[0]) / 1000.0, 2) if t0 else 0
        result["frames_sent"] = vtrack.frames
        result["audio_frames_sent"] = atrack.frames if atrack else 0
        result.update(publisher_keyframe_fields())
        if t0:
            result["keyframe_at_ms"] = [round(t - t0[0], 1) for t in KF.keyframe_wall_ms[:50]]
        result.update(await rtp_stats(pc, "outbound-rtp"))
        result["states"] = states
        if location:
            result["delete_status"] = await http_delete(location, auth)
        await close_pc(pc)
    emit(result, a.stats_out)
    return 0 if result["ok"] else 1


# ---------------------------------------------------------------------------
# view
# ---------------------------------------------------------------------------
async def cmd_view(a):
    # the default 1 + 1 keeps aiortc's default policy: the offer stays exactly as it was
    stop_evt, pc, t0, states, connected, failed, auth = new_session(
        a, max_bundle=a.video_sections > 1 or a.audio_sections > 1)
    add_recv_transceivers(pc, a.codec, a.video_sections, a.audio_sections)
    vs = None
    tasks = []
    pending_tracks = []

    def start(track):
        # one decoding task per track: several sections of a kind are consumed side by side
        tasks.append(asyncio.ensure_future(vs.consume(track, stop_evt, vs.track_for(pc, track))))

    @pc.on("track")
    def _on_track(track):
        log.info("remote track: %s", track.kind)
        if vs is None:
            # aiortc fires "track" inside setRemoteDescription, before the answer is known here
            pending_tracks.append(track)
        else:
            start(track)

    location = None
    result = {"role": "viewer", "ok": False}
    try:
        # t0 is taken inside signal_exchange just before the (first) POST
        location, answer = await signal_exchange(pc, a.url, auth, t0, retry_offline_s=a.offline_retry)
        expect_audio = a.expect_audio == "yes" or (a.expect_audio == "auto" and answer_has_audio(answer))
        vs = ViewerStats(t0[0], tones=a.tones)
        vs.add_sections(pc, answer)
        retry_info = t0[1] if len(t0) > 1 else {"offline_retries": 0, "offline_wait_ms": 0}
        for tr in pending_tracks:
            start(tr)
        if not await wait_connected(connected, failed, a.connect_timeout):
            raise PeerError("not connected after %.1f s (states: %s, ice: %s)"
                            % (a.connect_timeout, states, pc.iceConnectionState))
        connected_ms = connected_at(states)
        remaining = a.duration - (now_ms() - t0[0]) / 1000.0
        if remaining > 0:
            await wait_connected(stop_evt, failed, remaining)
        stop_evt.set()
        result = vs.result()
        result["connected_ms"] = connected_ms
        result["expect_audio"] = expect_audio
        result["redirects"] = REDIRECTS
        if REDIRECT_MS:
            result["redirect_ms"] = REDIRECT_MS[0]
        result.update(retry_info)
        # Only answered sections must deliver: a stage with fewer participants than
        # sections answers the rest inactive or rejected.
        short = [t for t in vs.tracks if t.kind == "video" and t.answered
                 and t.frames < a.min_frames_per_video_track]
        if failed.is_set():
            result["ok"] = False
            result["error"] = "connection ended early: %s" % states
        elif vs.video_frames < a.min_video_frames or (expect_audio and vs.audio_frames == 0):
            result["ok"] = False
            result["error"] = "too few frames: video %d (min %d), audio %d (%s)" % (
                vs.video_frames, a.min_video_frames, vs.audio_frames,
                "expected" if expect_audio else "not expected")
        elif short:
            result["ok"] = False
            result["error"] = "too few frames on answered video track(s): %s (min %d per track)" % (
                ", ".join("mid %s: %d" % (t.mid, t.frames) for t in short),
                a.min_frames_per_video_track)
    except Exception as e:
        if vs is not None:
            result = vs.result()
        result["ok"] = False
        result["error"] = str(e) if isinstance(e, PeerError) else repr(e)
        log.error("view failed: %s", result["error"])
    finally:
        stop_evt.set()
        for t in tasks:
            t.cancel()
        result.update(await rtp_stats(pc, "inbound-rtp"))
        if vs is not None and "tracks" in result:
            await add_track_packets(vs, result["tracks"])
        result["states"] = states
        if location:
            result["delete_status"] = await http_delete(location, auth)
        await close_pc(pc)
    emit(result, a.stats_out)
    return 0 if result["ok"] else 1


# ---------------------------------------------------------------------------
# selftest: aiortc publisher -> aiortc viewer, same process, no HTTP
# ---------------------------------------------------------------------------
async def selftest_one(codec, duration, width, height, fps):
    for k in list(vars(KF)):
        if k != "lock":
            setattr(KF, k, [] if isinstance(getattr(KF, k), list) else 0)
    pub = RTCPeerConnection(rtc_config())
    sub = RTCPeerConnection(rtc_config())
    add_send_tracks(pub, codec, width, height, fps)
    stop_evt = asyncio.Event()
    tasks = []
    t0 = now_ms()
    vs = ViewerStats(t0)

    @sub.on("track")
    def _on_track(track):
        tasks.append(asyncio.ensure_future(vs.consume(track, stop_evt, vs.track_for(sub, track))))

    await pub.setLocalDescription(await pub.createOffer())
    await sub.setRemoteDescription(pub.localDescription)
    await sub.setLocalDescription(await sub.createAnswer())
    check_answer(sub.localDescription.sdp)
    await pub.setRemoteDescription(sub.localDescription)
    end = t0 + duration * 1000.0
    while now_ms() < end:
        await asyncio.sleep(0.05)
    stop_evt.set()
    for t in tasks:
        t.cancel()
    res = vs.result()
    res["codec"] = codec
    res["publisher"] = publisher_keyframe_fields()
    res["answer_candidates"] = sdp_candidate_summary(sub.localDescription.sdp)
    await close_pc(pub)
    await close_pc(sub)
    g = res["g2g_samples"] > 0 and 0 <= res["g2g_ms_p50"] <= 500 and res["g2g_ms_p95"] <= 500
    if not (res["video_frames"] > 0 and res["audio_frames"] > 0 and g):
        res["ok"] = False
        res["error"] = "selftest: no frames or no sane barcode readings"
    return res


async def cmd_selftest(a):
    # barcode unit check without any codec
    self_check(a.width, a.height)
    ok = True
    codecs = ["vp8", "h264"] if a.codec == "both" else [a.codec]
    for c in codecs:
        res = await asyncio.wait_for(
            selftest_one(c, a.duration, a.width, a.height, a.fps), a.duration + 30)
        emit(res, None)
        ok = ok and res["ok"]
    return 0 if ok else 1


# ---------------------------------------------------------------------------
def parse_tones(text):
    """--tones "440,1200" -> [440.0, 1200.0] (argparse type)."""
    try:
        tones = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected Hz values separated by commas: %r" % text)
    if any(t <= 0 for t in tones):
        raise argparse.ArgumentTypeError("frequencies must be > 0: %r" % text)
    return tones


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: info logs, -vv: debug (incl. SDP), -vvv: aiortc/aioice debug")
    sub = p.add_subparsers(dest="cmd", required=True)

    pp = sub.add_parser("publish", help="WHIP publisher")
    pp.add_argument("--url", required=True, help="WHIP endpoint URL")
    pp.add_argument("--token", default="", help="stream key (sent as Bearer token)")
    pp.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    pp.add_argument("--duration", type=float, required=True, help="seconds, from the POST")
    pp.add_argument("--fps", type=float, default=30)
    pp.add_argument("--width", type=int, default=640)
    pp.add_argument("--height", type=int, default=360)
    pp.add_argument("--connect-timeout", type=float, default=10.0)
    pp.add_argument("--keyint", type=int, default=None,
                    help="H264: periodic IDR interval in frames (libx264 default 250)")
    pp.add_argument("--ignore-remb", action="store_true",
                    help="drop REMB (aiortc rebuilds the encoder = new keyframe on >10%% change)")
    pp.add_argument("--ignore-pli", action="store_true",
                    help="never answer PLI/FIR (a deaf publisher: late viewers need the SFU's cache)")
    pp.add_argument("--no-audio", action="store_true", help="send the video track only (no Opus)")
    pp.add_argument("--tone", type=float, default=440.0,
                    help="frequency of the Opus sine in Hz (default 440), so that a viewer of "
                         "several publishers (view --tones) can tell them apart by ear")
    pp.add_argument("--volume", type=float, default=0.3,
                    help="amplitude of the sine as a share of full scale (default 0.3): on a "
                         "stage the loudest participant is the active speaker")
    pp.add_argument("--stats-out")

    pv = sub.add_parser("view", help="WHEP viewer")
    pv.add_argument("--url", required=True, help="WHEP endpoint URL")
    pv.add_argument("--token", default="", help="optional Bearer token")
    pv.add_argument("--codec", choices=["any", "vp8", "h264"], default="any",
                    help="video codecs offered (default: VP8 and H264)")
    pv.add_argument("--duration", type=float, required=True, help="seconds, from the POST")
    pv.add_argument("--min-video-frames", type=int, default=1)
    pv.add_argument("--expect-audio", choices=["yes", "no", "auto"], default="yes",
                    help="require a decoded audio frame: yes (default), no, or auto (iff the "
                         "answer has an active audio m-section with an rtpmap)")
    pv.add_argument("--video-sections", type=int, default=1, metavar="K",
                    help="recvonly video m-sections to offer (default 1; a co-streaming stage "
                         "sends one participant per section)")
    pv.add_argument("--audio-sections", type=int, default=1, metavar="M",
                    help="recvonly audio m-sections to offer (default 1, also with "
                         "--expect-audio no, as always). Order: video 0, audio 0, video 1, "
                         "audio 1, ... while both remain, then the rest")
    pv.add_argument("--min-frames-per-video-track", type=int, default=0, metavar="N",
                    help="when > 0, every answered (not inactive, not rejected) video section "
                         "must decode at least N frames")
    pv.add_argument("--tones", type=parse_tones, nargs="?", const=[], default=None,
                    metavar="HZ[,HZ...]",
                    help="analyse the last second of each audio track: report peak_hz (strongest "
                         "FFT bin in 100-4000 Hz) and, for each listed frequency, tone_power "
                         "(its power relative to the band's mean); without a list, peak_hz only")
    pv.add_argument("--offline-retry", type=float, default=10.0,
                    help="retry a 404 offline answer every 500 ms for this many seconds")
    pv.add_argument("--connect-timeout", type=float, default=10.0)
    pv.add_argument("--stats-out")

    ps = sub.add_parser("selftest", help="in-process publisher -> viewer, no server")
    ps.add_argument("--codec", choices=["vp8", "h264", "both"], default="both")
    ps.add_argument("--duration", type=float, default=3.0)
    ps.add_argument("--fps", type=float, default=30)
    ps.add_argument("--width", type=int, default=640)
    ps.add_argument("--height", type=int, default=360)
    ps.add_argument("--keyint", type=int, default=None)
    ps.add_argument("--ignore-remb", action="store_true")

    a = p.parse_args()
    if a.cmd == "view":
        if a.video_sections < 0 or a.audio_sections < 0 or a.video_sections + a.audio_sections < 1:
            p.error("--video-sections and --audio-sections must be >= 0, together >= 1")
    level = logging.WARNING if a.verbose == 0 else logging.INFO if a.verbose == 1 else logging.DEBUG
    logging.basicConfig(stream=sys.stderr, level=level,
                        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    if a.verbose < 3:
        for name in ("aiortc", "aioice"):
            logging.getLogger(name).setLevel(max(level, logging.INFO))
    global H264_KEYINT, IGNORE_REMB, IGNORE_PLI
    H264_KEYINT = getattr(a, "keyint", None)
    IGNORE_REMB = getattr(a, "ignore_remb", False)
    IGNORE_PLI = getattr(a, "ignore_pli", False)
    fn = {"publish": cmd_publish, "view": cmd_view, "selftest": cmd_selftest}[a.cmd]
    hard_limit = getattr(a, "duration", 10) + 60
    try:
        rc = asyncio.run(asyncio.wait_for(fn(a), hard_limit))
    except asyncio.TimeoutError:
        emit({"role": {"publish": "publisher", "view": "viewer"}.get(a.cmd, a.cmd), "ok": False, "error": "hard time limit %.0f s exceeded" % hard_limit})
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
