#!/usr/bin/env python3
"""Make the pre-encoded clip that `webrtc-peer publish` sends.

    .venv/bin/python tests/peers/make_clip.py DIR [--seconds 4]

Writes into DIR (created if missing):
  video.ivf      VP8 (libvpx), 640x360, 30 fps, a keyframe every 30 frames, no alt-ref frames
  video.h264     H.264 (libx264) Constrained Baseline, Annex B, no B-frames, IDR every 30
                 frames with SPS/PPS in front of each IDR, one slice per frame
  audio.opus.lp  Opus (libopus) 440 Hz tone, 48 kHz mono, 20 ms per packet, as length-prefixed
                 records: u32 big-endian payload length, u32 big-endian timestamp in 48 kHz
                 units, payload (the format webrtc-peer's viewer dumps too)
  clip.json      what was written (frames, keyframe positions, packets)

The picture moves (scrolling bars and a bouncing box with a frame counter), so a decoder that
shows a frozen or garbled picture is easy to spot in a dump. The publisher loops the clip; every
loop starts on a keyframe. Needs PyAV (tests/peers/requirements.txt) and numpy.
"""

import argparse
import fractions
import json
import math
import os
import struct
import sys

import av
import numpy as np

WIDTH, HEIGHT, FPS, KEYINT = 640, 360, 30, 30
AUDIO_RATE, AUDIO_SAMPLES = 48000, 960  # 20 ms

# 5x7 digits for the frame counter drawn into the picture
DIGITS = {
    "0": "01110100011001110101110011000101110", "1": "00100011000010000100001000010001110",
    "2": "01110100010000100010001000100011111", "3": "11111000100010000010000011000101110",
    "4": "00010001100101010010111110001000010", "5": "11111100001111000001000011000101110",
    "6": "00110010001000011110100011000101110", "7": "11111000010001000100010000100001000",
    "8": "01110100011000101110100011000101110", "9": "01110100011000101111000010001001100",
}


def picture(n):
    """yuv420p frame n as one (h*3/2, w) uint8 array."""
    w, h = WIDTH, HEIGHT
    buf = np.empty((h * 3 // 2, w), np.uint8)
    y = buf[:h]
    xx = np.arange(w)[None, :]
    yy = np.arange(h)[:, None]
    y[:] = (128 + 70 * np.sin((xx + 8 * n) * (2 * math.pi / 80)) * np.cos(yy / 23.0)).astype(np.uint8)
    bs = 60
    bx = int((w - bs) * (0.5 + 0.5 * math.sin(n / 9.0)))
    by = int((h - bs) * (0.5 + 0.5 * math.cos(n / 13.0)))
    y[by:by + bs, bx:bx + bs] = 235
    # frame counter, 5x7 digits scaled by 6, top left
    for i, ch in enumerate(f"{n:04d}"):
        bits = np.array([int(b) for b in DIGITS[ch]], np.uint8).reshape(7, 5)
        glyph = np.kron(bits, np.ones((6, 6), np.uint8)) * 219 + 16
        y[10:10 + 42, 10 + i * 36:10 + i * 36 + 30] = glyph
    chroma = buf[h:].reshape(2, h // 2, w // 2)
    cx = np.arange(w // 2)[None, :]
    cy = np.arange(h // 2)[:, None]
    chroma[0] = (128 + 40 * np.sin((cx + 4 * n) / 25.0) + 0 * cy).astype(np.uint8)
    chroma[1] = (128 + 40 * np.cos(cy / 19.0 + n / 15.0) + 0 * cx).astype(np.uint8)
    return buf


def video_frames(count):
    for n in range(count):
        frame = av.VideoFrame.from_ndarray(picture(n), format="yuv420p")
        frame.pts = n
        frame.time_base = fractions.Fraction(1, FPS)
        # force the keyframe positions: libvpx/libx264 then also keep to them
        frame.pict_type = av.video.frame.PictureType.I if n % KEYINT == 0 else av.video.frame.PictureType.NONE
        yield frame


def encoder(name, options):
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height = WIDTH, HEIGHT
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = fractions.Fraction(1, FPS)
    ctx.framerate = fractions.Fraction(FPS, 1)
    ctx.gop_size = KEYINT
    ctx.bit_rate = 1_200_000
    ctx.options = options
    return ctx


def encode_all(ctx, count):
    packets = []
    for frame in video_frames(count):
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    return packets


def write_vp8(path, count):
    ctx = encoder("libvpx", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                             "auto-alt-ref": "0", "error-resilient": "0", "kf-max-dist": str(KEYINT)})
    packets = encode_all(ctx, count)
    keys = []
    with open(path, "wb") as f:
        # IVF file header: signature, version 0, header size 32, fourcc, size, time base, frames
        f.write(struct.pack("<4sHH4sHHIII4x", b"DKIF", 0, 32, b"VP80", WIDTH, HEIGHT, FPS, 1, len(packets)))
        for i, p in enumerate(packets):
            data = bytes(p)
            if data[0] & 1 == 0:  # VP8 frame tag: bit 0 clear = keyframe
                keys.append(i)
            f.write(struct.pack("<IQ", len(data), i))
            f.write(data)
    return {"frames": len(packets), "keyframes_at": keys}


def write_h264(path, count):
    ctx = encoder("libx264", {
        "preset": "veryfast", "profile": "baseline",
        "x264-params": f"keyint={KEYINT}:min-keyint={KEYINT}:scenecut=0:bframes=0:rc-lookahead=0:"
                       "threads=1:sliced-threads=0:slices=1:repeat-headers=1",
    })
    packets = encode_all(ctx, count)
    keys = []
    with open(path, "wb") as f:
        for i, p in enumerate(packets):
            data = bytes(p)
            if p.is_keyframe:
                keys.append(i)
            f.write(data)  # libx264 without global header: Annex B with SPS/PPS in band
    return {"frames": len(packets), "keyframes_at": keys}


def write_opus(path, seconds):
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = AUDIO_RATE
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.bit_rate = 48000
    ctx.time_base = fractions.Fraction(1, AUDIO_RATE)
    ctx.options = {"application": "audio", "frame_duration": "20"}
    count = int(seconds * AUDIO_RATE / AUDIO_SAMPLES)
    packets = []
    for n in range(count):
        t = (np.arange(AUDIO_SAMPLES) + n * AUDIO_SAMPLES) / AUDIO_RATE
        pcm = (0.3 * 32767 * np.sin(2 * math.pi * 440.0 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = n * AUDIO_SAMPLES
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    packets = packets[:count]  # the same length as the video, so loops stay in step
    with open(path, "wb") as f:
        for i, p in enumerate(packets):
            data = bytes(p)
            f.write(struct.pack(">II", len(data), (i * AUDIO_SAMPLES) & 0xFFFFFFFF))
            f.write(data)
    return {"packets": len(packets), "packet_ms": 1000 * AUDIO_SAMPLES // AUDIO_RATE}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--seconds", type=float, default=4.0)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    count = int(a.seconds * FPS)
    info = {
        "width": WIDTH, "height": HEIGHT, "fps": FPS, "keyint": KEYINT,
        "vp8": write_vp8(os.path.join(a.dir, "video.ivf"), count),
        "h264": write_h264(os.path.join(a.dir, "video.h264"), count),
        "opus": write_opus(os.path.join(a.dir, "audio.opus.lp"), a.seconds),
    }
    with open(os.path.join(a.dir, "clip.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))
    want = list(range(0, count, KEYINT))
    for codec in ("vp8", "h264"):
        if info[codec]["frames"] != count or info[codec]["keyframes_at"] != want:
            print(f"make_clip: {codec}: {info[codec]} (wanted {count} frames, keyframes at {want})",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
