#!/usr/bin/env python3
"""Decode what `webrtc-peer view` dumped and count the decoded frames.

    .venv/bin/python tests/peers/decode_dump.py DIR

Reads DIR/video.ivf (VP8) or DIR/video.h264 (H.264 Annex B), and DIR/audio.opus.lp (Opus
packets, length-prefixed: u32 big-endian length, u32 big-endian timestamp, payload; the format
tests/peers/make_clip.py writes too). Prints one JSON line:

    {"video_frames":N, "audio_frames":M, "width":W, "height":H, "codec":"vp8"|"h264"|null,
     "video_errors":E, "audio_errors":F}

counting frames the decoder (PyAV / FFmpeg) actually produced; packets it rejected are counted
as errors and skipped. A missing file counts 0. Exit code 0 unless a file could not be read.
"""

import json
import os
import struct
import sys

import av


def ivf_frames(path):
    """Yield the frame payloads of an IVF file."""
    with open(path, "rb") as f:
        head = f.read(32)
        if len(head) < 32 or head[:4] != b"DKIF":
            raise ValueError(f"{path}: not an IVF file")
        header_size = struct.unpack_from("<H", head, 6)[0]
        f.seek(header_size)
        while True:
            fh = f.read(12)
            if len(fh) < 12:
                return
            size = struct.unpack_from("<I", fh, 0)[0]
            data = f.read(size)
            if len(data) < size:
                return  # truncated last frame (the viewer was stopped mid-write)
            yield data


def lp_packets(path):
    """Yield the payloads of a length-prefixed packet file."""
    with open(path, "rb") as f:
        while True:
            head = f.read(8)
            if len(head) < 8:
                return
            size = struct.unpack(">I", head[:4])[0]
            data = f.read(size)
            if len(data) < size:
                return
            yield data


class Counter:
    def __init__(self, codec_name):
        self.ctx = av.CodecContext.create(codec_name, "r")
        self.frames = 0
        self.errors = 0
        self.width = None
        self.height = None

    def decode(self, packet):
        try:
            frames = self.ctx.decode(packet)
        except av.error.FFmpegError:
            self.errors += 1
            return
        for frame in frames:
            self.frames += 1
            if isinstance(frame, av.VideoFrame):
                self.width, self.height = frame.width, frame.height


def decode_video(d):
    ivf = os.path.join(d, "video.ivf")
    h264 = os.path.join(d, "video.h264")
    if os.path.exists(ivf):
        c = Counter("vp8")
        for data in ivf_frames(ivf):
            c.decode(av.Packet(data))
        c.decode(None)
        return "vp8", c
    if os.path.exists(h264):
        c = Counter("h264")
        with open(h264, "rb") as f:
            stream = f.read()
        # the parser splits the Annex B stream into access units
        for packet in c.ctx.parse(stream):
            c.decode(packet)
        for packet in c.ctx.parse(None):
            c.decode(packet)
        c.decode(None)
        return "h264", c
    return None, None


def decode_audio(d):
    path = os.path.join(d, "audio.opus.lp")
    if not os.path.exists(path):
        return None
    c = Counter("opus")
    c.ctx.sample_rate = 48000
    for data in lp_packets(path):
        c.decode(av.Packet(data))
    return c


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    d = sys.argv[1]
    av.logging.set_level(av.logging.PANIC)  # corrupt-frame chatter would flood stderr
    codec, video = decode_video(d)
    audio = decode_audio(d)
    print(json.dumps({
        "video_frames": video.frames if video else 0,
        "audio_frames": audio.frames if audio else 0,
        "width": video.width if video else None,
        "height": video.height if video else None,
        "codec": codec,
        "video_errors": video.errors if video else 0,
        "audio_errors": audio.errors if audio else 0,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
