#!/usr/bin/env python3
"""A WHIP publisher that behaves like OBS 30.2-31's WHIP output, on OBS's own WebRTC stack.

OBS's WHIP output (plugins/obs-webrtc/whip-output.cpp) is libdatachannel; this script drives
libdatachannel through libdatachannel-py (cp312 wheel: run it with .venv312/bin/python) and
copies what whip-output.cpp does, step by step:

  - rtc::Configuration with disableAutoGathering and no ICE servers; audio track first
    (mid 0, addOpusCodec(111)), then video (mid 1, addH264Codec(96) = profile-level-id=42e01f),
    SSRC base / base+1, one random cname and msid; libdatachannel writes the rest of the offer
    (a=group:BUNDLE 0 1, a=group:LS 0 1, a=ice-options:ice2 trickle, no candidates);
  - OpusRtpPacketizer / H264RtpPacketizer(StartSequence, max fragment 1200), each followed by
    RtcpSrReporter and RtcpNackResponder (4000 packets on video), and a PacingHandler at
    bitrate * 10000 bit/s on video (OBS's own arithmetic); no PLI handler: PLI/FIR are ignored;
  - POST the offer as soon as the local description is set (no trickle, no PATCH), resolve a
    relative Location like OBS (scheme://host:port of the effective URL + the Location as path),
    set the answer, then gatherLocalCandidates(ICE servers from the Link headers);
  - encoders start once the POST returned; a frame is sent only while the track is open (OBS's
    Send() drops it otherwise: on loopback the first IDR was lost in 2 of 8 runs, and viewers
    then wait for the next one); the RTP timestamp advances by the encoder's dts delta; at the
    end close the PeerConnection, then DELETE.

Payload: libx264 High profile (x264's default; preset veryfast, tune zerolatency, no B-frames,
IDR every --keyint frames) while the SDP says 42e01f, as OBS does; 440 Hz Opus, 48 kHz stereo,
20 ms. The picture is aiortc_peer.py's: barcode.Picture, moving, with the glass-to-glass barcode.

  publish   the WHIP publisher (shared CLI contract of tests/peers)
  selftest  publisher -> an in-process libdatachannel receiver (no server): decodes the video,
            reads the barcode, sends PLIs and checks they are counted and ignored

stdout carries only JSON lines; logs go to stderr. Exit code 0 when ok.
"""

import argparse
import datetime
import fractions
import json
import logging
import math
import os
import random
import signal
import string
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import av
import libdatachannel as rtc
import numpy as np

# the glass-to-glass barcode and the synthetic picture aiortc_peer.py sends too (tests/peers/barcode.py)
from barcode import Picture, g2g_from_frame, self_check

log = logging.getLogger("obs_peer")

# --- constants of whip-output.cpp ----------------------------------------------------------
AUDIO_MID, AUDIO_PT = "0", 111
VIDEO_MID, VIDEO_PT = "1", 96
MAX_VIDEO_FRAGMENT_SIZE = 1200
VIDEO_NACK_BUFFER_SIZE = 4000  # "~3 seconds of 8.5 Megabit video"
ID_CHARS = string.digits + string.ascii_uppercase + string.ascii_lowercase
SENDONLY = rtc.Description.Direction.SendOnly


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# --- encoders (PyAV) -------------------------------------------------------------------------
def h264_encoder(a):
    c = av.CodecContext.create("libx264", "w")
    c.width, c.height, c.pix_fmt = a.width & ~1, a.height & ~1, "yuv420p"
    c.time_base = fractions.Fraction(1, 90000)
    c.framerate = fractions.Fraction(a.fps).limit_denominator(1001)
    c.bit_rate = a.bitrate * 1000
    c.gop_size = a.keyint
    c.max_b_frames = 0
    # No profile option: x264 picks High. scenecut=0 keeps IDRs on the --keyint grid only.
    c.options = {"preset": "veryfast", "tune": "zerolatency",
                 "x264-params": "keyint=%d:min-keyint=%d:scenecut=0:bframes=0" % (a.keyint, a.keyint)}
    c.open()
    return c


def opus_encoder():
    c = av.CodecContext.create("libopus", "w")
    c.sample_rate, c.layout, c.format, c.bit_rate = 48000, "stereo", "s16", 160000  # OBS default
    c.time_base = fractions.Fraction(1, 48000)
    c.options = {"frame_duration": "20", "application": "audio"}
    c.open()
    return c


# --- RTCP feedback counter --------------------------------------------------------------------
class FeedbackCounter:
    """Counts the RTCP a track receives (Track.on_message gets what the handler chain let
    through); it never asks the encoder for a keyframe, as OBS never does.

    Not a PyMediaHandler in the chain: with one there, libdatachannel-py 2026.1.0 sometimes
    leaves the GIL held by an idle RTC worker thread right after Connected and the process
    hangs (8 of 40 selftest runs; 0 of 85 without it)."""

    def __init__(self, stats, kind):
        self.stats, self.kind = stats, kind

    def __call__(self, b):
        if isinstance(b, bytes):
            pos = 0
            while pos + 4 <= len(b):
                fmt, pt = b[pos] & 0x1F, b[pos + 1]
                if pt == 206 and fmt == 1:
                    self.stats.bump("pli_received", self.kind)
                elif pt == 206 and fmt == 4:
                    self.stats.bump("fir_received", self.kind)
                elif pt == 206 and fmt == 15:
                    self.stats.bump("remb_received", self.kind)
                elif pt == 205 and fmt == 1:
                    self.stats.bump("nack_received", self.kind)
                elif not 192 <= pt <= 223:
                    break  # not RTCP
                pos += 4 * (((b[pos + 2] << 8) | b[pos + 3]) + 1)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def bump(self, name, kind=None, n=1):
        with self.lock:
            self.c[name] = self.c.get(name, 0) + n
            if kind:
                self.c["%s_%s" % (kind, name)] = self.c.get("%s_%s" % (kind, name), 0) + n

    def get(self, name):
        with self.lock:
            return self.c.get(name, 0)


# --- the publisher --------------------------------------------------------------------------
class ObsPublisher:
    def __init__(self, a, stats):
        self.a, self.stats = a, stats
        self.stop = threading.Event()
        self.connected, self.ended = threading.Event(), threading.Event()
        self.states, self.t0, self.connected_ms = [], None, None
        self.keep = []  # the handler objects live as long as the PeerConnection
        cfg = rtc.Configuration()
        cfg.disable_auto_gathering = True  # OBS >= 30.2: the offer goes out before gathering
        if a.bind_address:
            cfg.bind_address = a.bind_address
        self.pc = rtc.PeerConnection(cfg)
        self.pc.on_state_change(self._on_state)
        base_ssrc = random.getrandbits(32)
        msid = "".join(random.choice(ID_CHARS) for _ in range(16))
        cname = "".join(random.choice(ID_CHARS) for _ in range(16))
        self.audio = None if a.no_audio else self._audio_track(base_ssrc, msid, cname)
        self.video = self._video_track((base_ssrc + 1) & 0xFFFFFFFF, msid, cname)
        self.pc.set_local_description()
        # obs_output_initialize_encoders happens in Start(), before the POST: encoders are
        # ready, and the first frame is encoded right after the answer (begin_data_capture)
        self.source, self.venc = Picture(a.width, a.height), h264_encoder(a)
        self.aenc = None if a.no_audio else opus_encoder()

    def _on_state(self, state):
        ms = round((time.time() - self.t0) * 1000.0, 1) if self.t0 else 0.0
        self.states.append("%s@%.0f" % (state.name, ms))
        log.info("PeerConnection state is now: %s (%.0f ms)", state.name, ms)
        if state == rtc.PeerConnection.State.Connected and self.connected_ms is None:
            self.connected_ms = ms
            self.connected.set()
        elif state in (rtc.PeerConnection.State.Disconnected, rtc.PeerConnection.State.Failed,
                       rtc.PeerConnection.State.Closed):
            self.ended.set()  # OBS stops its output on Disconnected and Failed

    def _chain(self, track, packetizer, cfg, nack, kind, pacing=None):
        sr = rtc.RtcpSrReporter(cfg)
        handlers = [sr, rtc.RtcpNackResponder(nack)] + ([pacing] if pacing else [])
        for h in handlers:
            packetizer.add_to_chain(h)
        track.set_media_handler(packetizer)
        track.on_message(FeedbackCounter(self.stats, kind))
        self.keep += [packetizer, cfg] + handlers
        return {"track": track, "cfg": cfg, "last_dts_us": 0}

    def _audio_track(self, ssrc, msid, cname):
        d = rtc.Description.Audio(AUDIO_MID, SENDONLY)
        d.add_opus_codec(AUDIO_PT)
        d.add_ssrc(ssrc, cname, msid, msid + "-audio")
        track = self.pc.add_track(d)
        cfg = rtc.RtpPacketizationConfig(ssrc, cname, AUDIO_PT, rtc.OpusRtpPacketizer.DEFAULT_CLOCK_RATE)
        return self._chain(track, rtc.OpusRtpPacketizer(cfg), cfg, rtc.RtcpNackResponder.DEFAULT_MAX_SIZE, "audio")

    def _video_track(self, ssrc, msid, cname):
        d = rtc.Description.Video(VIDEO_MID, SENDONLY)
        d.add_ssrc(ssrc, cname, msid, msid + "-video")
        cfg = rtc.RtpPacketizationConfig(ssrc, cname, VIDEO_PT, rtc.H264RtpPacketizer.CLOCK_RATE)
        d.add_h264_codec(VIDEO_PT)
        pk = rtc.H264RtpPacketizer(rtc.NalUnit.Separator.StartSequence, cfg, MAX_VIDEO_FRAGMENT_SIZE)
        pacing = rtc.PacingHandler(float(self.a.bitrate * 10000), datetime.timedelta(milliseconds=5))
        track = self.pc.add_track(d)
        return self._chain(track, pk, cfg, VIDEO_NACK_BUFFER_SIZE, "video", pacing)

    def offer(self):
        sdp = str(self.pc.local_description())
        lines = [l for l in sdp.splitlines() if not l.startswith(("a=candidate", "a=end-of-candidates"))]
        return "\r\n".join(lines) + "\r\n"

    def send(self, media, data, dts_us):
        """OBS's Data()+Send(): advance the RTP timestamp by the dts delta, send if open.
        (Opus's first dts is negative, the encoder's pre-skip: never step backwards.)"""
        duration_us, media["last_dts_us"] = max(0, dts_us - media["last_dts_us"]), dts_us
        track, cfg = media["track"], media["cfg"]
        if not track.is_open():
            return False
        cfg.timestamp = (cfg.timestamp + cfg.seconds_to_timestamp(duration_us / 1e6)) & 0xFFFFFFFF
        try:
            track.send(data)
        except Exception as e:  # OBS logs and goes on
            log.error("send failed: %s", e)
            return False
        self.stats.bump("bytes_sent", n=len(data))  # OBS's total_bytes_sent: payload bytes
        return True

    def video_loop(self):
        src, enc = self.source, self.venc
        step, start = 90000 / self.a.fps, time.monotonic()
        n = 0
        while not self.stop.is_set():
            wait = start + n / self.a.fps - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                break
            frame = av.VideoFrame.from_ndarray(src.frame(n), format="yuv420p")
            frame.pts, frame.time_base = int(n * step), enc.time_base
            for pkt in enc.encode(frame):
                key = bool(pkt.is_keyframe)
                self.stats.bump("frames_encoded")
                self.stats.bump("keyframes_encoded", n=int(key))
                if self.send(self.video, bytes(pkt), int(pkt.dts * 1e6 / 90000)):
                    self.stats.bump("frames_sent")
                    if key:
                        self.stats.bump("keyframes")
                        log.info("keyframe sent (encoded frame %d)", n)
                    # frames a viewer can decode: from the first keyframe that left on
                    self.stats.bump("decodable_frames_sent", n=int(self.stats.get("keyframes") > 0))
            n += 1

    def audio_loop(self):
        enc, start, n = self.aenc, time.monotonic(), 0
        while not self.stop.is_set():
            wait = start + n * 0.02 - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                break
            t = (np.arange(960) + n * 960) / 48000.0
            pcm = (0.3 * 32767 * np.sin(2 * math.pi * 440.0 * t)).astype(np.int16)
            fr = av.AudioFrame.from_ndarray(np.repeat(pcm, 2)[None, :], format="s16", layout="stereo")
            fr.sample_rate, fr.pts, fr.time_base = 48000, n * 960, enc.time_base
            for pkt in enc.encode(fr):
                self.stats.bump("audio_frames")
                if self.send(self.audio, bytes(pkt), int(pkt.pts * 1e6 / 48000)):
                    self.stats.bump("audio_packets")
            n += 1

    def start_media(self):
        loops = [self.video_loop] + ([self.audio_loop] if self.audio else [])
        self.threads = [threading.Thread(target=f, daemon=True) for f in loops]
        for t in self.threads:
            t.start()

    def close(self):
        self.stop.set()
        for t in getattr(self, "threads", []):
            t.join(5)
        # No reset_callbacks() after close: that made 2 of 30 selftest runs hang on the GIL
        # (libdatachannel-py 2026.1.0); the process ends with os._exit anyway.
        self.pc.close()

    def result(self):
        with self.stats.lock:
            c = dict(self.stats.c)
        keys = ("frames_encoded", "frames_sent", "decodable_frames_sent", "keyframes_encoded", "keyframes",
                "audio_frames", "audio_packets", "bytes_sent", "pli_received", "fir_received", "nack_received", "remb_received")
        res = {k: c.get(k, 0) for k in keys}
        res.update({k: v for k, v in c.items() if k.startswith(("video_", "audio_")) and k not in res})
        res.update(connected_ms=self.connected_ms, states=self.states)
        return res


# --- WHIP HTTP, the way OBS's curl calls behave -----------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)
USER_AGENT = "Mozilla/5.0 (OBS-Studio/31.0.0; Linux x86_64) obs_peer.py"


def http(method, url, body=None, headers=None, timeout=8.0):
    """One request (OBS: CURLOPT_TIMEOUT 8 s) -> (status, headers list, body bytes)."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}, **{"User-Agent": USER_AGENT}))
    try:
        with _opener.open(req, timeout=timeout) as r:
            return r.status, r.getheaders(), r.read()
    except urllib.error.HTTPError as e:
        return e.code, list(e.headers.items()), e.read()


def whip_post(url, token, offer):
    """POST like curl with FOLLOWLOCATION (307/308 keep the POST; 301-303 turn into GET) and
    UNRESTRICTED_AUTH; returns (answer, resource URL, ICE servers from Link headers)."""
    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = "Bearer " + token
    method, body = "POST", offer.encode()
    for _ in range(6):
        status, hdrs, data = http(method, url, body, headers)
        loc = [v for k, v in hdrs if k.lower() == "location"]
        if status in (301, 302, 303, 307, 308) and loc:
            url = urllib.parse.urljoin(url, loc[-1])
            if status in (301, 302, 303):
                method, body = "GET", None
            log.info("redirect %d -> %s", status, url)
            continue
        break
    if status != 201:
        raise PeerError("HTTP endpoint returned response code %d: %s" % (status, data[:200].decode("utf-8", "replace")))
    if not data:
        raise PeerError("no data returned from HTTP endpoint request")
    if not loc:
        raise PeerError("WHIP server did not provide a resource URL via the Location header")
    # OBS: a Location not starting with "http" is put verbatim as the path of the effective URL
    # (curl_url_set PATH, which adds a missing leading "/"), whose own query is cleared. This is
    # not RFC 3986 resolution: "res/1" becomes /res/1 even when the POST went to /whip/x.
    last = loc[-1]
    if last.startswith("http"):
        resource = last
    else:
        u = urllib.parse.urlsplit(url)
        resource = "%s://%s%s%s" % (u.scheme, u.netloc, "" if last.startswith("/") else "/", last)
    ice = [parse_link(link) for k, v in hdrs if k.lower() == "link" for link in v.split(",")]
    text = data.decode("utf-8", "replace")
    return text[text.find("v=0"):], resource, [s for s in ice if s is not None]


def parse_link(value):
    """OBS's ParseLinkHeader: <stun:...>/<turn:...>; username="..."; credential="..."."""
    url = user = cred = ""
    for tok in value.split(";"):
        tok = tok.strip()
        if tok.startswith(("<stun:", "<turn:")):
            url = tok[1 : tok.find(">")]
        elif "username=" in tok:
            user = tok.split("=", 1)[1].strip('"')
        elif "credential=" in tok:
            cred = tok.split("=", 1)[1].strip('"')
    if not url:
        return None
    try:
        server = rtc.IceServer(url)
        server.username, server.password = user, cred
        return server
    except Exception as e:
        log.warning("failed to construct ICE server from %s: %s", value, e)
        return None


class PeerError(Exception):
    pass


# Set by SIGTERM or SIGINT: the publisher stops streaming early (the interop matrix ends its
# rows this way).
STOP = threading.Event()


def cmd_publish(a):
    if a.codec != "h264":
        emit({"role": "publisher", "ok": False, "error": "OBS's WHIP output sends H.264, AV1 or HEVC, never %s" % a.codec})
        return 1
    stats = Stats()
    pub = ObsPublisher(a, stats)
    offer = pub.offer()
    log.debug("offer:\n%s", offer)
    result = {"role": "publisher", "ok": False, "implementation": "libdatachannel (OBS WHIP output)",
              "video_mid": VIDEO_MID, "offer_candidates": offer.count("a=candidate")}
    resource = None
    auth = {"Authorization": "Bearer " + a.token} if a.token else {}
    pub.t0 = time.time()
    try:
        answer, resource, ice = whip_post(a.url, a.token, offer)
        result["location"] = resource
        log.debug("answer:\n%s", answer)
        pub.pc.set_remote_description(rtc.Description(answer, "answer"))
        pub.pc.gather_local_candidates(ice)
        if not a.start_after_connect:
            pub.start_media()  # obs_output_begin_data_capture
        if not pub.connected.wait(a.connect_timeout):
            raise PeerError("not connected after %.1f s (states: %s)" % (a.connect_timeout, pub.states))
        if a.start_after_connect:
            pub.start_media()
        emit({"event": "live"})
        local, remote = rtc.Candidate(), rtc.Candidate()
        if pub.pc.get_selected_candidate_pair(local, remote):
            result["selected_pair"] = "%s:%s -> %s:%s" % (local.address(), local.port(), remote.address(), remote.port())
        end = pub.t0 + a.duration
        while time.time() < end and not pub.ended.is_set() and not STOP.is_set():
            STOP.wait(min(0.1, max(0.0, end - time.time())))
        if pub.ended.is_set():
            raise PeerError("connection ended early: %s" % pub.states)
        result["stopped_early"] = STOP.is_set()
        result["ok"] = True
    except Exception as e:
        result["error"] = str(e) if isinstance(e, PeerError) else repr(e)
        log.error("publish failed: %s", result["error"])
    finally:
        result["duration_s"] = round(time.time() - pub.t0, 2)
        pub.close()  # OBS StopThread: close the PeerConnection first, then DELETE
        result.update(pub.result())
        if resource:
            status, _, _ = http("DELETE", resource, None, auth)
            result["delete_status"] = status
    emit(result)
    return 0 if result["ok"] else 1


# --- selftest: publisher -> in-process libdatachannel receiver, no server, no HTTP ------------
class Receiver:
    """A libdatachannel answerer that decodes what it gets and sends a PLI every 500 ms."""

    def __init__(self):
        self.pc = rtc.PeerConnection(rtc.Configuration())
        self.lock = threading.Lock()
        self.tracks, self.keep = {}, []
        self.video_frames = self.audio_frames = self.pli_sent = 0
        self.g2g = []
        self.vdec, self.adec = av.CodecContext.create("h264", "r"), av.CodecContext.create("opus", "r")
        self.pc.on_track(self._on_track)

    def _on_track(self, track):
        video = track.description().type() == "video"
        dep = rtc.H264RtpDepacketizer(rtc.NalUnit.Separator.LongStartSequence) if video else rtc.OpusRtpDepacketizer()
        session = rtc.RtcpReceivingSession()
        dep.add_to_chain(session)
        track.set_media_handler(dep)
        track.on_frame(lambda data, info: self._on_frame(video, data))
        self.keep += [track, dep, session]
        self.tracks["video" if video else "audio"] = track

    def _on_frame(self, video, data):
        try:
            frames = (self.vdec if video else self.adec).decode(av.Packet(bytes(data)))
        except av.error.FFmpegError as e:  # e.g. P-frames before the first IDR
            log.debug("decode error: %s", e)
            return
        now = int(time.time() * 1000)
        with self.lock:
            for f in frames:
                if not video:
                    self.audio_frames += 1
                    continue
                self.video_frames += 1
                d = g2g_from_frame(f, now)
                if d is not None:
                    self.g2g.append(d)

    def answer(self, offer, timeout=5.0):
        self.pc.set_remote_description(rtc.Description(offer, "offer"))
        end = time.time() + timeout
        while self.pc.gathering_state() != rtc.PeerConnection.GatheringState.Complete and time.time() < end:
            time.sleep(0.02)
        return str(self.pc.local_description())

    def send_pli(self):
        if "video" in self.tracks and self.tracks["video"].is_open() and self.tracks["video"].request_keyframe():
            self.pli_sent += 1


def cmd_selftest(a):
    self_check(a.width, a.height)
    stats = Stats()
    pub, rx = ObsPublisher(a, stats), Receiver()
    pub.t0 = time.time()
    res = {"role": "selftest", "ok": False}
    offer = pub.offer()
    try:
        pub.pc.set_remote_description(rtc.Description(rx.answer(offer), "answer"))
        pub.pc.gather_local_candidates([])
        pub.start_media()
        if not pub.connected.wait(a.connect_timeout):
            raise PeerError("not connected after %.1f s (states: %s)" % (a.connect_timeout, pub.states))
        end = pub.t0 + a.duration
        while time.time() < end and not pub.ended.is_set():
            time.sleep(0.5)
            rx.send_pli()
        time.sleep(0.3)  # let the last PLI arrive
        res["ok"] = True
    except Exception as e:
        res["error"] = str(e) if isinstance(e, PeerError) else repr(e)
    finally:
        pub.close()
        rx.pc.close()
    res.update(pub.result())
    g = sorted(rx.g2g)
    res.update(offer_candidates=offer.count("a=candidate"), rx_video_frames=rx.video_frames,
               rx_audio_frames=rx.audio_frames, rx_pli_sent=rx.pli_sent, g2g_samples=len(g),
               g2g_ms_p50=g[len(g) // 2] if g else None)
    # x264 makes IDRs on the --keyint grid only; a PLI that made one would show up here
    grid = math.ceil(res["frames_encoded"] / a.keyint)
    checks = {
        "no candidates in the offer": res["offer_candidates"] == 0,
        "video decoded": rx.video_frames >= res["decodable_frames_sent"] - 2 > 0,
        "audio decoded": a.no_audio or rx.audio_frames >= 0.5 * res["audio_packets"] > 0,
        "barcode read, sane delay": bool(g) and 0 <= g[len(g) // 2] < 500,
        "PLIs counted": rx.pli_sent > 0 and res.get("video_pli_received", 0) >= rx.pli_sent - 1,
        "PLIs ignored": res["keyframes_encoded"] == grid,
    }
    failed = [k for k, ok in checks.items() if not ok]
    if res["ok"] and failed:
        res.update(ok=False, error="selftest checks failed: " + ", ".join(failed))
    emit(res)
    return 0 if res["ok"] else 1


# ---------------------------------------------------------------------------------------------
def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug (SDP)")
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("publish", help="WHIP publisher, like OBS")
    pp.add_argument("--url", required=True, help="WHIP endpoint URL")
    pp.add_argument("--token", default="", help="stream key (Bearer token)")
    pp.add_argument("--start-after-connect", action="store_true",
                    help="start the encoders once connected (not OBS: its first IDR may be lost)")
    ps = sub.add_parser("selftest", help="publisher -> in-process libdatachannel receiver")
    for q in (pp, ps):
        q.add_argument("--duration", type=float, required=(q is pp), default=4.0, help="seconds from the POST")
        q.add_argument("--codec", choices=["h264", "vp8"], default="h264", help="h264 only (vp8: an error line)")
        q.add_argument("--no-audio", action="store_true", help="video only (OBS numbering: video stays mid 1)")
        q.add_argument("--width", type=int, default=640)
        q.add_argument("--height", type=int, default=360)
        q.add_argument("--fps", type=float, default=30)
        q.add_argument("--keyint", type=int, default=60, help="IDR interval in frames (OBS: keyint_sec 2)")
        q.add_argument("--bitrate", type=int, default=2500, help="video kbit/s (OBS default 2500)")
        q.add_argument("--bind-address", default=None, help="libdatachannel Configuration.bind_address")
        q.add_argument("--connect-timeout", type=float, default=10.0)
    a = p.parse_args()
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S",
                        level=logging.WARNING if a.verbose == 0 else logging.INFO if a.verbose == 1 else logging.DEBUG)
    hard_limit = a.duration + 60

    def watchdog():  # a hard time limit whatever the native library does
        emit({"role": a.cmd, "ok": False, "error": "hard time limit %.0f s exceeded" % hard_limit})
        os._exit(1)

    # SIGTERM / SIGINT: end now like OBS's Stop Streaming (close, DELETE, result line).
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    timer = threading.Timer(hard_limit, watchdog)
    timer.daemon = True
    timer.start()
    signal.alarm(int(hard_limit) + 5)  # default action kills us even if the GIL is stuck
    try:
        rc = {"publish": cmd_publish, "selftest": cmd_selftest}[a.cmd](a)
    except Exception as e:  # never fall through to the native destructors (they abort)
        log.exception("unexpected error")
        emit({"role": a.cmd, "ok": False, "error": repr(e)})
        rc = 1
    sys.stderr.flush()
    os._exit(rc)  # skip native destructors at interpreter exit


if __name__ == "__main__":
    main()
