"""Glass-to-glass barcode shared by the Python peers (aiortc_peer.py, obs_peer.py), and the
synthetic moving picture that carries it.

A publisher draws the wallclock of a frame's production into the frame's luma plane; a viewer
reads it back from the decoded frame and takes glass-to-glass = wallclock at decode - stamp
(publisher and viewer on the same machine clock).

Layout: the stamp is `int(time.time() * 1000) & 0xFFFFFFFF`, 32 bits, most significant first, as
two rows of 32 square blocks of B x B pixels at the top of the frame, B = (width // 40) rounded
down to even (at least 2; 16 at 640 px), starting at x = 4B. Row 0 (y 0..B) holds the bits
(white = 1, black = 0), row 1 (y B..2B) the same bits inverted; the rest of both rows is black.
The caller keeps the chroma under the two rows neutral (128). A reading counts only when the
centre of every block of both rows is clearly black or white and the two rows are complementary.

`Picture` is the publishers' source: a scrolling texture that wraps seamlessly (a jump would look
like a scene cut to libx264 and make it insert an IDR on its own), a bouncing bright box below the
code, and the code stamped when a frame is produced.

numpy only (no PyAV import: `luma_of` and `g2g_from_frame` take a decoded av.VideoFrame by its
attributes), so it imports under both venvs. The peers live next to this file, so a plain
`import barcode` finds it when they are run as scripts.
"""

import math
import time

import numpy as np

BITS = 32


def barcode_block(width):
    """Block size B in pixels for a frame `width` pixels wide."""
    return max(2, (width // 40) & ~1)


def stamp_now():
    """The stamp of a frame produced now: wallclock ms as uint32."""
    return int(time.time() * 1000) & 0xFFFFFFFF


def barcode_draw(y_plane, stamp):
    """Write `stamp` (uint32) into the luma plane (h x w uint8 array) in place."""
    h, w = y_plane.shape
    b = barcode_block(w)
    x0 = 4 * b
    y_plane[0 : 2 * b, :] = 0
    for i in range(BITS):
        bit = (stamp >> (BITS - 1 - i)) & 1
        x = x0 + i * b
        y_plane[0:b, x : x + b] = 255 if bit else 0
        y_plane[b : 2 * b, x : x + b] = 0 if bit else 255


def barcode_read(y_plane, margin=30):
    """Return the uint32 stamp from a luma plane, or None if the code is not valid."""
    h, w = y_plane.shape
    b = barcode_block(w)
    x0 = 4 * b
    if x0 + BITS * b > w or 2 * b > h:
        return None
    q = max(1, b // 4)
    rows = y_plane[0 : 2 * b, x0 : x0 + BITS * b].astype(np.float32)
    # mean of the centre (b/2 x b/2) of every block
    rows = rows.reshape(2, b, BITS, b)[:, q : b - q, :, q : b - q]
    means = rows.mean(axis=(1, 3))  # shape (2, 32)
    if np.any(np.abs(means - 128.0) < margin):
        return None
    top = means[0] > 128.0
    bottom = means[1] > 128.0
    if not np.all(top != bottom):
        return None
    value = 0
    for bit in top:
        value = (value << 1) | int(bit)
    return value


def luma_of(frame):
    """Luma plane of a decoded av.VideoFrame as an (h, w) uint8 array."""
    if frame.format.name in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p", "nv12"):
        plane = frame.planes[0]
        arr = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        return arr[: frame.height, : frame.width]
    return frame.to_ndarray(format="gray")


def g2g_from_frame(frame, t_ms):
    """Glass-to-glass ms of a decoded av.VideoFrame decoded at wallclock `t_ms`, or None when
    it carries no valid code. The uint32 difference is taken as signed (a stamp from just before
    the 32-bit wrap still gives a small positive figure)."""
    stamp = barcode_read(luma_of(frame))
    if stamp is None:
        return None
    d = (int(t_ms) - stamp) & 0xFFFFFFFF
    if d >= 0x80000000:
        d -= 0x100000000
    return d


def self_check(width, height):
    """Draw and read back a few stamps on a width x height plane; raise AssertionError if a
    stamp does not survive or a blank (grey, black) plane reads as a code."""
    y = np.zeros((height, width), np.uint8)
    for v in (0, 1, 0xFFFFFFFF, 0x12345678, stamp_now()):
        barcode_draw(y, v)
        if barcode_read(y) != v:
            raise AssertionError("barcode: %#x read back as %r at %dx%d" % (v, barcode_read(y), width, height))
    for fill in (128, 0):
        if barcode_read(np.full((height, width), fill, np.uint8)) is not None:
            raise AssertionError("barcode: a plane of %d reads as a code" % fill)


class Picture:
    """The publishers' synthetic video: `frame(n)` is frame n as a yuv420p buffer
    ((height * 3 // 2) x width uint8: the luma plane, then U and V) with the barcode of now."""

    def __init__(self, width, height):
        self.width, self.height = w, h = width & ~1, height & ~1
        # A texture periodic in x with period w, stored twice as wide, so the horizontal
        # scroll wraps seamlessly.
        yy, xx = np.mgrid[0:h, 0:w]
        k = 2 * math.pi / w
        tex = 128 + 60 * np.sin(xx * k * 28) * np.cos(yy / 17.0) + 40 * np.sin(xx * k * 15 + yy / 41.0)
        tex += np.random.default_rng(1).integers(-12, 13, size=tex.shape)
        tex = np.clip(tex, 16, 235).astype(np.uint8)
        self._tex = np.concatenate([tex, tex], axis=1)
        cy, cx = np.mgrid[0 : h // 2, 0 : w // 2]
        u = (128 + 50 * np.sin(cx * (2 * math.pi / (w // 2)) * 5)).astype(np.uint8)
        v = (128 + 50 * np.cos(cy / 13.0) + 0 * cx).astype(np.uint8)
        self._u, self._v = np.concatenate([u, u], axis=1), np.concatenate([v, v], axis=1)

    def frame(self, n):
        w, h, b = self.width, self.height, barcode_block(self.width)
        buf = np.empty((h * 3 // 2, w), np.uint8)
        y = buf[:h]
        off = (n * 6) % w
        y[:] = self._tex[:, off : off + w]
        bs = max(8, h // 6)
        bx = int((w - bs) * (0.5 + 0.5 * math.sin(n / 20.0)))
        by = int(2 * b + (h - 2 * b - bs) * (0.5 + 0.5 * math.cos(n / 27.0)))
        y[by : by + bs, bx : bx + bs] = 235
        coff = (n * 3) % (w // 2)
        chroma = buf[h:].reshape(2, h // 2, w // 2)
        chroma[0] = self._u[:, coff : coff + w // 2]
        chroma[1] = self._v[:, coff : coff + w // 2]
        chroma[:, :b] = 128  # neutral chroma under the two barcode rows
        barcode_draw(y, stamp_now())  # the stamp is the moment the frame is produced
        return buf
