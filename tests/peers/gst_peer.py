#!/usr/bin/python3
"""Independent WHIP publisher built on GStreamer's webrtcbin (PyGObject), for AeThex LIVE.

Run it with Debian's interpreter (the GStreamer Python bindings are Debian packages):

  /usr/bin/python3 tests/peers/gst_peer.py [-v|-vv] publish --url http://127.0.0.1:8080/whip \
      --token STREAM_KEY --duration 10 [--codec vp8|h264] [--no-audio] \
      [--dtls-cert gst|ecdsa] [--bundle-policy max-bundle|max-compat]

Video: videotestsrc (moving ball) 640x360@30, VP8 (vp8enc realtime, keyframe every 60 frames)
or H.264 (x264enc constrained baseline, no B-frames, IDR every 60 frames); audio: a 440 Hz sine
in Opus. A PLI/FIR from the server is left to GStreamer (rtpsession sends a force-key-unit
event upstream to the encoder); the result counts them (`video_pli_received`, ...).

stdout carries only JSON lines: `{"event":"live"}` once ICE+DTLS are connected, then one result
line `{"role":"publisher","ok":...,"connected_ms":...,...,"error":...}`. Logs go to stderr.
Exit code 0 iff ok. Hard time limit: duration + 60 s.

Flow: wait for on-negotiation-needed (caps on every sink pad), create the offer, set it local,
wait for ICE gathering to complete, POST the local description (it then holds the candidates),
set the answer, wait for connection-state "connected", run until --duration from the POST,
DELETE the Location (resolved against the POST URL).

There is no GLib main loop: webrtcbin runs ICE on its own thread and answers promises there, so
the flow below is a plain sequence of bounded waits on threading.Events set from its signals.
"""

import argparse
import base64
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import Gst, GstSdp, GstWebRTC  # noqa: E402

log = logging.getLogger("gst_peer")

LOOPBACK = "127.0.0.1"
VIDEO_PT = {"vp8": 96, "h264": 102}
AUDIO_PT = 111
FPS = 30
WIDTH, HEIGHT = 640, 360
KEYFRAME_INTERVAL = 2 * FPS  # frames


class PeerError(Exception):
    pass


# ---------------------------------------------------------------------------
# Output: exactly one result line, whoever gets there first (normal end or the hard limit).
# ---------------------------------------------------------------------------
_emit_lock = threading.Lock()
_result_done = False


def emit(obj, final=False):
    global _result_done
    with _emit_lock:
        if _result_done:
            return False
        if final:
            _result_done = True
        sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return True


def now_ms():
    return time.time() * 1000.0


# ---------------------------------------------------------------------------
# HTTP (urllib; every request bounded by a timeout)
# ---------------------------------------------------------------------------
def http(method, url, body=None, headers=None, timeout=10.0):
    """Returns (status, headers with lower-case names, body bytes)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        data = e.read() if e.fp else b""
        return e.code, {k.lower(): v for k, v in (e.headers or {}).items()}, data


# ---------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------
def video_branch(codec):
    """gst-launch description of the video source -> RTP payloader, ending at webrtcbin."""
    src = (
        "videotestsrc is-live=true pattern=ball animation-mode=running-time ! "
        "video/x-raw,format=I420,width=%d,height=%d,framerate=%d/1 ! queue max-size-buffers=2 ! "
        % (WIDTH, HEIGHT, FPS)
    )
    pt = VIDEO_PT[codec]
    if codec == "vp8":
        enc = (
            "vp8enc name=venc deadline=1 cpu-used=8 threads=2 end-usage=cbr target-bitrate=1500000 "
            "keyframe-max-dist=%d error-resilient=partitions lag-in-frames=0 ! "
            "rtpvp8pay name=vpay pt=%d mtu=1200 picture-id-mode=15-bit ! "
            "application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=%d ! "
            % (KEYFRAME_INTERVAL, pt, pt)
        )
    else:
        # Constrained baseline, no B-frames, SPS/PPS before every IDR. The payloader derives
        # profile-level-id from the SPS x264 writes (constraint flags c0, level 3.1 forced
        # here: 42c01f) and webrtcbin copies it, with sprop-parameter-sets, into the fmtp.
        enc = (
            "x264enc name=venc tune=zerolatency speed-preset=ultrafast bitrate=1500 bframes=0 "
            "key-int-max=%d option-string=level=3.1 ! video/x-h264,profile=constrained-baseline ! "
            "rtph264pay name=vpay pt=%d mtu=1200 config-interval=-1 aggregate-mode=zero-latency ! "
            "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=%d,"
            "packetization-mode=(string)1 ! "
            % (KEYFRAME_INTERVAL, pt, pt)
        )
    return src + enc + "webrtc."


AUDIO_BRANCH = (
    "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample ! "
    "queue max-size-time=100000000 ! opusenc bitrate=64000 frame-size=20 ! "
    "rtpopuspay name=apay pt=%d ! "
    "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=%d ! webrtc."
    % (AUDIO_PT, AUDIO_PT)
)


def configure_loopback_ice(webrtc):
    """Make libnice gather exactly one host candidate: UDP on 127.0.0.1.

    What was needed, and why (GStreamer 1.22 / libnice 0.1.21 on Debian 12):
    - libnice enumerates the interfaces with nice_interfaces_get_local_ips(FALSE) and so never
      gathers a loopback address on a machine that has another interface; the server's only
      candidate is 127.0.0.1. The GstWebRTCICE action signal `add-local-ip-address` (a wrapper of
      nice_agent_add_local_address) gives libnice an explicit address list, and once one is set it
      gathers only those, so 127.0.0.1 becomes the only host candidate.
    - `ice-tcp=false` on the GstWebRTCNice object: only UDP is wanted on loopback; TCP
      candidates only add pairs.
    - `upnp=false` on the NiceAgent: with UPnP on, libnice holds gathering open for its
      `upnp-timeout` (200 ms) looking for a router; with it off gathering completes at once
      (no STUN/TURN server is set either, so it is host-only).
    Returns the ICE object: the caller must keep it. webrtcbin 1.22 never sinks the floating
    reference of its GstWebRTCNice, so PyGObject's wrapper sinks it and owns it; dropping the
    wrapper would destroy the agent under webrtcbin (criticals, then a segfault).
    """
    ice = webrtc.get_property("ice-agent")
    ice.set_property("ice-tcp", False)
    ice.get_property("agent").set_property("upnp", False)
    if not ice.emit("add-local-ip-address", LOOPBACK):
        raise PeerError("webrtcbin ICE agent refused local address %s" % LOOPBACK)
    return ice


# ---------------------------------------------------------------------------
# DTLS certificate. GStreamer's dtls elements make one RSA-2048 certificate per process. The
# server's DTLS stack (dimpl 0.9, str0m 0.25's default) sends a CertificateRequest that allows
# ECDSA only, so OpenSSL (GStreamer's client) sends no certificate and the server aborts with
# "no client certificate received". That is the server's limitation and the default here stays
# GStreamer's own certificate; `--dtls-cert ecdsa` swaps in an ECDSA P-256 certificate to get
# past it (what a GStreamer application can do with the transport's `certificate` property).
# ---------------------------------------------------------------------------
def make_ecdsa_pem():
    """A self-signed ECDSA P-256 certificate + key as one PEM string (certificate first)."""
    with tempfile.TemporaryDirectory() as d:
        cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "30", "-subj", "/CN=gst-peer", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=20)
        with open(cert) as c, open(key) as k:
            return c.read() + k.read()


def pem_fingerprint(pem):
    """sha-256 fingerprint (SDP form) of the first certificate in `pem`."""
    m = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem, re.S)
    digest = hashlib.sha256(base64.b64decode("".join(m.group(1).split()))).digest()
    return ":".join("%02X" % b for b in digest)


def session_description(sdp_type, text):
    ok, msg = GstSdp.SDPMessage.new_from_text(text)
    if ok != GstSdp.SDPResult.OK:
        raise PeerError("unparseable SDP %s" % sdp_type.value_nick)
    return GstWebRTC.WebRTCSessionDescription.new(sdp_type, msg)


class Publisher:
    def __init__(self, a):
        self.a = a
        self.t_post = None
        self.states = []  # [ms since POST (or None before it), "what=state"]
        self.candidates = []  # (mline index, candidate line) gathered by libnice
        self.connected = threading.Event()
        self.failed = threading.Event()
        self.gathered = threading.Event()
        self.negotiation_needed = threading.Event()
        self.stop = threading.Event()  # SIGTERM / SIGINT: end the session early, cleanly
        self.errors = []
        self.frames = 0
        self.keyframes = 0
        self.keyframe_at_ms = []
        self.n_transceivers = 0
        self.fingerprint = None  # set when our own certificate replaces GStreamer's
        self._lock = threading.Lock()

        desc = "webrtcbin name=webrtc bundle-policy=%s %s" % (a.bundle_policy, video_branch(a.codec))
        if not a.no_audio:
            desc += " " + AUDIO_BRANCH
        log.info("pipeline: %s", desc)
        self.pipe = Gst.parse_launch(desc)
        self.webrtc = self.pipe.get_by_name("webrtc")
        self.ice = configure_loopback_ice(self.webrtc)
        self.webrtc.connect("on-ice-candidate", self._on_candidate)
        self.webrtc.connect("on-negotiation-needed", lambda _w: self.negotiation_needed.set())
        for prop in ("connection-state", "ice-connection-state", "ice-gathering-state"):
            self.webrtc.connect("notify::" + prop, self._on_state)
        # Count encoded video frames and keyframes at the encoder's output.
        venc_src = self.pipe.get_by_name("venc").get_static_pad("src")
        venc_src.add_probe(Gst.PadProbeType.BUFFER, self._on_encoded)
        self.bus = self.pipe.get_bus()  # no main loop: drained by poll_bus()

    # --- callbacks (webrtcbin / streaming threads) -------------------------------------------
    def _on_candidate(self, _webrtc, mline, cand):
        log.debug("local candidate m=%d %s", mline, cand)
        with self._lock:
            self.candidates.append((mline, cand))

    def _on_state(self, webrtc, pspec):
        value = webrtc.get_property(pspec.name)
        nick = value.value_nick
        t = round(now_ms() - self.t_post, 1) if self.t_post else None
        with self._lock:
            self.states.append([t, "%s=%s" % (pspec.name, nick)])
        log.info("%s -> %s (t=%s ms)", pspec.name, nick, t)
        if pspec.name == "ice-gathering-state" and value == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            self.gathered.set()
        elif pspec.name == "connection-state":
            if value == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
                self.connected.set()
            elif value in (GstWebRTC.WebRTCPeerConnectionState.FAILED,
                           GstWebRTC.WebRTCPeerConnectionState.CLOSED):
                self.failed.set()
        elif pspec.name == "ice-connection-state" and value == GstWebRTC.WebRTCICEConnectionState.FAILED:
            self.failed.set()

    def _on_encoded(self, _pad, info):
        buf = info.get_buffer()
        with self._lock:
            self.frames += 1
            if not buf.has_flags(Gst.BufferFlags.DELTA_UNIT):
                self.keyframes += 1
                if self.t_post and len(self.keyframe_at_ms) < 50:
                    self.keyframe_at_ms.append(round(now_ms() - self.t_post, 1))
        return Gst.PadProbeReturn.OK

    # --- helpers -----------------------------------------------------------------------------
    def poll_bus(self):
        """Drain pending bus messages; an ERROR fails the session."""
        while True:
            msg = self.bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.WARNING)
            if msg is None:
                return
            if msg.type == Gst.MessageType.ERROR:
                err, dbg = msg.parse_error()
                self.errors.append("%s: %s" % (msg.src.get_name(), err.message))
                log.error("pipeline error from %s: %s (%s)", msg.src.get_name(), err.message, dbg)
                self.failed.set()
            else:
                w, dbg = msg.parse_warning()
                log.warning("pipeline warning from %s: %s", msg.src.get_name(), w.message)

    def wait(self, evt, timeout):
        """Wait for `evt` for at most `timeout` s, draining the bus meanwhile. Returns early
        (False) on a failure or a stop signal."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll_bus()
            if evt.is_set():
                return True
            if (self.failed.is_set() and evt is not self.failed) or self.stop.is_set():
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            evt.wait(min(0.05, left))

    def promise(self, signal, *args, take=None, timeout=5.0):
        """Emit a webrtcbin action signal that takes a Gst.Promise and wait for the reply.

        Returns take(reply) (or None). `take` runs while the promise is alive: the reply
        structure belongs to the promise, and a boxed value read from it (the offer's
        GstWebRTCSessionDescription) is only borrowed by PyGObject, so using it after the promise
        is gone reads freed memory (a segfault in gst_sdp_message_copy)."""
        done = threading.Event()
        p = Gst.Promise.new_with_change_func(lambda _p: done.set())
        self.webrtc.emit(signal, *args, p)
        if not done.wait(timeout):
            p.interrupt()
            raise PeerError("%s: no reply in %.0f s" % (signal, timeout))
        if p.wait() != Gst.PromiseResult.REPLIED:
            raise PeerError("%s: promise %s" % (signal, p.wait().value_nick))
        reply = p.get_reply()
        if reply is not None and reply.has_field("error"):
            raise PeerError("%s: %s" % (signal, reply.get_value("error").message))
        return take(reply) if take else None

    def set_directions(self):
        """Every transceiver sends only (webrtcbin creates them sendrecv for the request pads)."""
        n = 0
        while True:
            tr = self.webrtc.emit("get-transceiver", n)
            if tr is None:
                break
            tr.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
            n += 1
        return n

    def check_stop(self):
        if self.stop.is_set():
            raise PeerError("stopped by a signal before the session was live")

    def dtls_states(self):
        """State of each distinct DTLS transport ("new", "connecting", "failed", ...)."""
        transports = {self.webrtc.emit("get-transceiver", i).get_property("sender").get_property("transport")
                      for i in range(self.n_transceivers)}
        return sorted(t.get_property("state").value_nick for t in transports if t is not None)

    def install_certificate(self, pem):
        """Make the (bundled) DTLS transport use `pem`; call after set-local-description.

        webrtcbin 1.22 creates the transport in create-offer, with GStreamer's certificate.
        Setting the transport's `certificate` (the `pem` of its dtlsdec) makes dtlsdec build a
        new DTLS connection; dtlsenc is still held in NULL until the answer sets the DTLS role,
        and picks that new connection up when it starts. dtlsdec connected its key and
        peer-certificate callbacks to the old connection on NULL->READY, so it is cycled through
        NULL once (nothing flows before the answer, so nothing is lost). webrtcbin's own
        fingerprint of a PEM that also holds a key is wrong (it hashes every base64 line, the
        key's too), so offer_sdp() rewrites a=fingerprint."""
        transports = {self.webrtc.emit("get-transceiver", i).get_property("sender").get_property("transport")
                      for i in range(self.n_transceivers)}
        for t in transports:
            t.set_property("certificate", pem)
        decoders = []
        it = self.webrtc.iterate_recurse()
        while True:
            res, el = it.next()
            if res != Gst.IteratorResult.OK:
                break
            if el.get_factory() and el.get_factory().get_name() == "dtlsdec":
                decoders.append(el)
        for el in decoders:
            el.set_state(Gst.State.NULL)
            el.sync_state_with_parent()
        log.info("DTLS certificate replaced on %d transport(s), %d dtlsdec restarted: sha-256 %s",
                 len(transports), len(decoders), pem_fingerprint(pem))
        self.fingerprint = pem_fingerprint(pem)

    def offer_sdp(self):
        """The local description after gathering.

        webrtcbin's offer comes without candidates; once gathering is complete, the local
        description it keeps has the gathered candidates in their m-sections (webrtcbin adds each
        candidate to it as libnice reports it) and `a=end-of-candidates`."""
        local = self.webrtc.get_property("local-description")  # a copy we own
        sdp = local.sdp.as_text()
        if "a=candidate:" not in sdp:
            raise PeerError("local description has no candidates after gathering (gathered: %s)"
                            % self.candidates)
        if self.fingerprint:
            sdp = re.sub(r"(?m)^a=fingerprint:.*$", "a=fingerprint:sha-256 " + self.fingerprint, sdp)
        return sdp

    def stats(self):
        """Outbound-rtp counters per kind ("video_packets_sent", ...) from webrtcbin's get-stats.

        The kind is taken from the codec row with the same ssrc: in 1.22 the outbound-rtp rows'
        own `kind`/`codec-id` can name the wrong transceiver when two share a transport."""
        def take(reply):
            rows = []
            reply.foreach(lambda _fid, v: rows.append(v) or True)
            rows = [r for r in rows if isinstance(r, Gst.Structure)]
            kind_of = {r.get_value("ssrc"): r.get_value("mime-type").split("/")[0]
                       for r in rows if r.get_value("type") == GstWebRTC.WebRTCStatsType.CODEC
                       and r.has_field("ssrc") and r.has_field("mime-type")}
            out = {}
            for r in rows:
                if r.get_value("type") != GstWebRTC.WebRTCStatsType.OUTBOUND_RTP or not r.has_field("ssrc"):
                    continue
                kind = kind_of.get(r.get_value("ssrc"), "unknown")
                for f, name in (("packets-sent", "packets_sent"), ("bytes-sent", "bytes_sent"),
                                ("pli-count", "pli_received"), ("fir-count", "fir_received"),
                                ("nack-count", "nack_received")):
                    if r.has_field(f):
                        key = "%s_%s" % (kind, name)
                        out[key] = out.get(key, 0) + r.get_value(f)
            return out

        try:
            return self.promise("get-stats", None, take=take, timeout=3.0)
        except PeerError as e:
            log.warning("get-stats failed: %s", e)
            return {}

    # --- the session -------------------------------------------------------------------------
    def run(self):
        a = self.a
        result = {"role": "publisher", "impl": "gstreamer-webrtcbin", "gst": Gst.version_string(),
                  "ok": False, "codec": a.codec, "audio": not a.no_audio, "dtls_cert": a.dtls_cert}
        auth = {"Authorization": "Bearer %s" % a.token} if a.token else {}
        location = None
        try:
            self.n_transceivers = result["transceivers"] = self.set_directions()
            if self.pipe.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
                raise PeerError("pipeline refused to start")
            # webrtcbin signals negotiation-needed once every sink pad has caps. An offer made
            # earlier uses the capsfilter's caps for a pad that has none yet: no ssrc, so that
            # m-section gets no a=ssrc line (the video one, its encoder starts last).
            if not self.wait(self.negotiation_needed, a.gather_timeout):
                self.check_stop()
                raise PeerError("no on-negotiation-needed after %.1f s (no caps on a sink pad?)" % a.gather_timeout)
            offer = self.promise("create-offer", None, take=lambda r: r.get_value("offer").sdp.as_text())
            self.promise("set-local-description", session_description(GstWebRTC.WebRTCSDPType.OFFER, offer))
            if a.dtls_cert == "ecdsa":
                self.install_certificate(make_ecdsa_pem())
            if not self.wait(self.gathered, a.gather_timeout):
                self.check_stop()
                raise PeerError("ICE gathering not complete after %.1f s (candidates: %s)"
                                % (a.gather_timeout, self.candidates))
            sdp = self.offer_sdp()
            log.debug("offer:\n%s", sdp)

            headers = {"Content-Type": "application/sdp"}
            headers.update(auth)
            self.t_post = now_ms()
            status, rh, body = http("POST", a.url, sdp.encode(), headers)
            if status != 201:
                raise PeerError("POST %s -> HTTP %d: %s" % (a.url, status, body[:300].decode("utf-8", "replace")))
            if "location" not in rh:
                raise PeerError("201 without Location header")
            location = urllib.parse.urljoin(a.url, rh["location"])
            result["location"] = location
            answer = body.decode("utf-8", "replace")
            log.debug("answer:\n%s", answer)
            self.promise("set-remote-description", session_description(GstWebRTC.WebRTCSDPType.ANSWER, answer))

            if not self.wait(self.connected, a.connect_timeout):
                self.check_stop()
                # ICE "completed" with DTLS stuck in "connecting" is what a refused handshake
                # looks like from here (the server may already have closed the session).
                raise PeerError("not connected after %.1f s (dtls: %s, states: %s)"
                                % (a.connect_timeout, self.dtls_states(), self.states))
            result["connected_ms"] = round(now_ms() - self.t_post, 1)
            emit({"event": "live"})

            left = a.duration - (now_ms() - self.t_post) / 1000.0
            if left > 0:
                self.wait(self.failed, left)  # a stop signal ends it early, still ok
            result["stopped_by_signal"] = self.stop.is_set()
            if self.failed.is_set():
                raise PeerError("connection ended early: %s %s" % (self.errors, self.states))
            result["ok"] = True
        except PeerError as e:
            self.poll_bus()
            result["error"] = str(e) + ("; pipeline errors: %s" % self.errors if self.errors else "")
        except Exception as e:  # a bug or a binding surprise: report it, do not hang
            result["error"] = repr(e)
        finally:
            if not result["ok"]:
                log.error("publish failed: %s", result.get("error"))
            result["duration_s"] = round((now_ms() - self.t_post) / 1000.0, 2) if self.t_post else 0
            with self._lock:
                result["frames_encoded"] = self.frames
                result["keyframes"] = self.keyframes
                result["keyframe_at_ms"] = list(self.keyframe_at_ms)
                result["states"] = list(self.states)
            result.update(self.stats())
            if location:
                try:
                    status, _, body = http("DELETE", location, None, auth, timeout=5.0)
                    result["delete_status"] = status
                    if status not in (200, 204):
                        log.warning("DELETE %s -> HTTP %d: %s", location, status, body[:200])
                except Exception as e:
                    log.warning("DELETE %s failed: %r", location, e)
                    result["delete_status"] = None
            self.pipe.set_state(Gst.State.NULL)
        emit(result, final=True)
        return 0 if result["ok"] else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: info logs (states), -vv: debug (incl. SDP offer and answer)")
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("publish", help="WHIP publisher")
    pp.add_argument("--url", required=True, help="WHIP endpoint URL")
    pp.add_argument("--token", default="", help="stream key (sent as Bearer token)")
    pp.add_argument("--duration", type=float, required=True, help="seconds, from the POST")
    pp.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    pp.add_argument("--no-audio", action="store_true", help="video only")
    pp.add_argument("--dtls-cert", choices=["gst", "ecdsa"], default="gst",
                    help="gst: GStreamer's own RSA-2048 certificate (default); ecdsa: a P-256 one")
    pp.add_argument("--bundle-policy", choices=["max-bundle", "max-compat"], default="max-bundle",
                    help="max-bundle (default): sections after the first are a=bundle-only with port 0; "
                         "max-compat: every section has a port (and its own transport if not bundled)")
    pp.add_argument("--gather-timeout", type=float, default=5.0)
    pp.add_argument("--connect-timeout", type=float, default=10.0)
    a = p.parse_args()

    level = logging.WARNING if a.verbose == 0 else logging.INFO if a.verbose == 1 else logging.DEBUG
    logging.basicConfig(stream=sys.stderr, level=level,
                        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    Gst.init(None)

    hard_limit = a.duration + 60

    def _hard_limit():
        emit({"role": "publisher", "ok": False, "error": "hard time limit %.0f s exceeded" % hard_limit},
             final=True)
        sys.stdout.flush()
        os._exit(1)

    timer = threading.Timer(hard_limit, _hard_limit)
    timer.daemon = True
    timer.start()
    try:
        pub = Publisher(a)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: pub.stop.set())
        rc = pub.run()
    except Exception as e:  # pipeline construction failed (missing plugin, ...)
        emit({"role": "publisher", "ok": False, "error": repr(e)}, final=True)
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)  # do not wait for GStreamer's threads


if __name__ == "__main__":
    main()
