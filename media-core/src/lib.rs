//! Sans-IO media primitives for AeThex LIVE.
//!
//! Nothing in this crate reads a clock, spawns a task or touches a socket: time comes in as an
//! argument (`std::time::Instant` values chosen by the caller), bytes come in as slices, and
//! every function is total over its input (no panics on any bytes; property-tested).
//!
//! - [`demux`]: classify a datagram on the shared media port (RFC 7983) and pull the ICE ufrag
//!   out of a STUN Binding request, so the SFU can route new addresses to the right peer.
//! - [`routes`]: the demux table (5-tuple and ufrag to session) built on [`demux`].
//! - [`rtp`]: zero-copy RTP header parsing, in-place rewriting, per-subscriber sequence
//!   mapping, and receiver-side sequence accounting.
//! - [`red`]: the primary block of an RFC 2198 redundant-audio payload.
//! - [`keyframe_start`]: whether an RTP payload (VP8, VP9, H.264, AV1) begins a keyframe.
//! - [`sdp`]: sniff the media sections (kind, mid, direction) of an SDP offer before the WebRTC
//!   engine sees it, so the HTTP layer can refuse impossible offers with a clear error.
//! - [`sdp_codecs`]: the payload formats of each media section, and the edits around the
//!   engine's negotiation (reject a section, complete a rejected answer section, find payload
//!   types without `a=rtpmap`).
//! - [`timeline`]: keep an outgoing RTP timeline continuous when the publisher behind it changes
//!   (OBS reconnects with the same key).
//! - [`layers`]: simulcast layer choice per viewer (bandwidth estimate with hysteresis, or a
//!   pin) and the per-layer bitrate meter.
//! - [`vp8ids`]: keep VP8 picture ids continuous when a viewer's source changes.
//! - [`keyframe`]: coalesce keyframe requests (PLI/FIR) so at most one per interval reaches
//!   the publisher, without ever losing one.
#![warn(missing_docs)]

pub mod demux;
pub mod keyframe;
pub mod keyframe_start;
pub mod layers;
pub mod red;
pub mod routes;
pub mod rtp;
pub mod sdp;
pub mod sdp_codecs;
pub mod timeline;
pub mod vp8ids;
