//! The relay protocol's wire format, sans-IO: control frames (length-prefixed JSON on the
//! control stream), media datagrams (a 4-byte header before an RTP packet) and the cluster-secret
//! handshake. `docs/relay-protocol.md` is the specification; this file follows it.
//!
//! Every decoder is total: any bytes give a value or an error, never a panic (property tests
//! below, and the fuzz target in `edge/fuzz`).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Protocol version spoken by this build.
pub const VERSION: u16 = 1;
/// ALPN of relay connections.
pub const ALPN: &[u8] = b"aethex-relay/1";
/// TLS exporter label for the handshake's channel binding (RFC 5705).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-aethex-relay";
/// Largest control frame body.
pub const MAX_FRAME: usize = 64 * 1024;
/// Most sequence numbers in one `nack`.
pub const MAX_NACK: usize = 256;
/// Media datagram header length.
pub const DATAGRAM_HEADER: usize = 4;

/// Errors decoding the relay protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A control frame longer than [`MAX_FRAME`].
    #[error("control frame of {0} bytes is over the 64 KiB limit")]
    FrameTooLarge(usize),
    /// A control frame whose JSON is not a known message with valid fields.
    #[error("malformed control frame: {0}")]
    Malformed(String),
    /// A datagram shorter than its header, of another version or kind.
    #[error("unusable datagram: {0}")]
    BadDatagram(&'static str),
}

/// One track of a relayed channel (`tracks` message): an audio track, or one video layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    /// Connection-wide track id, used in datagrams, `keyframe` and `nack`.
    pub id: u16,
    /// `audio` or `video`.
    pub kind: String,
}

/// One negotiated codec of a relayed channel: the payload types its RTP packets carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Codec {
    /// Payload type in the relayed RTP packets.
    pub pt: u8,
    /// Encoding name as in SDP (`VP8`, `H264`, `opus`, ...).
    pub name: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Audio channels (absent for video).
    #[serde(default)]
    pub channels: Option<u8>,
    /// The `a=fmtp` parameters, as in SDP.
    #[serde(default)]
    pub fmtp: String,
    /// RTX payload type, if negotiated.
    #[serde(default)]
    pub rtx: Option<u8>,
    /// RED payload type, if negotiated.
    #[serde(default)]
    pub red: Option<u8>,
}

impl From<&sfu::RelayCodec> for Codec {
    fn from(c: &sfu::RelayCodec) -> Self {
        Self {
            pt: c.pt,
            name: c.name.clone(),
            clock_rate: c.clock_rate,
            channels: c.channels,
            fmtp: c.fmtp.clone(),
            rtx: c.rtx,
            red: c.red,
        }
    }
}

impl From<&Codec> for sfu::RelayCodec {
    fn from(c: &Codec) -> Self {
        Self {
            pt: c.pt,
            name: c.name.clone(),
            clock_rate: c.clock_rate,
            channels: c.channels,
            fmtp: c.fmtp.clone(),
            rtx: c.rtx,
            red: c.red,
        }
    }
}

/// One participant of a relayed stage (`stage` message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageMember {
    /// Its stream: the channel's for the host, `{channel}~{guest}` for a guest.
    pub stream: String,
    /// Its display name (the guest's invite name; the channel's name for the host).
    pub name: String,
}

/// A control message. Unknown `type`s decode as [`Control::Unknown`] (ignored and counted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Edge -> upstream, first frame.
    Hello {
        /// Highest version the edge speaks.
        version: u16,
        /// The edge's node id.
        node_id: String,
        /// Region name.
        region: String,
        /// Base URL viewers reach the edge at.
        public_url: String,
        /// Viewers the edge accepts.
        capacity: u32,
        /// [`auth_tag`] for the edge role.
        auth: String,
        /// The edge reads stamped media datagrams ([`KIND_RTP_STAMPED`]): its lateness check
        /// then judges the relay path on the upstream's clock, not on the media time a late
        /// publisher skews. Absent (false) from an older edge, which gets plain ones.
        #[serde(default)]
        stamps: bool,
        /// The edge reads media datagrams too large for the path's current QUIC datagram size
        /// from unidirectional streams, one datagram per stream ("Datagrams too large for
        /// the path" in docs/relay-protocol.md). Absent (false) from an older edge: such
        /// datagrams are dropped for it (counted; NACK cannot repair them).
        #[serde(default)]
        large: bool,
    },
    /// Upstream -> edge: accepted.
    Welcome {
        /// Version both speak.
        version: u16,
        /// The upstream's node id.
        node_id: String,
        /// [`auth_tag`] for the upstream role.
        auth: String,
        /// The upstream's public base URL (an edge sends viewers there while it drains).
        #[serde(default)]
        public_url: String,
    },
    /// Either side, before closing.
    Error {
        /// Stable code: `unauthorized`, `version`, `protocol`, `frame_too_large`, ...
        code: String,
        /// Human-readable detail.
        message: String,
    },
    /// Edge -> upstream: the edge has viewers for `channel`.
    Subscribe {
        /// Channel name.
        channel: String,
    },
    /// Upstream -> edge: the channel's tracks and codecs now.
    Tracks {
        /// Channel name.
        channel: String,
        /// Publisher generation (increments when the publisher changes).
        generation: u64,
        /// Its tracks (audio, and one per video layer).
        tracks: Vec<Track>,
        /// The codecs the publisher negotiated.
        codecs: Vec<Codec>,
        /// Viewers need a playback token (checked by the edge, offline).
        #[serde(default)]
        private: bool,
    },
    /// Upstream -> edge: a subscribed channel's privacy changed (made private: the edge
    /// closes its viewers without a playback token).
    Privacy {
        /// Channel name.
        channel: String,
        /// Viewers need a playback token now.
        private: bool,
    },
    /// Upstream -> edge: a subscribed channel's stage now, sent when it changes (and at
    /// subscribe when a stage runs). No participants: the stage ended. The participants'
    /// streams and the mix are subscribed like channels, by their stream names
    /// (`{channel}~{guest}`, `{channel}~~mix`).
    Stage {
        /// Channel name.
        channel: String,
        /// Who is on the stage, the host first.
        participants: Vec<StageMember>,
        /// The featured participant's stream.
        #[serde(default)]
        featured: Option<String>,
        /// The streams of the participants speaking now.
        #[serde(default)]
        speaking: Vec<String>,
    },
    /// Upstream -> edge: no publisher at the moment.
    Offline {
        /// Channel name.
        channel: String,
    },
    /// Upstream -> edge: no such channel.
    NotFound {
        /// Channel name.
        channel: String,
    },
    /// Edge -> upstream: no viewers left.
    Unsubscribe {
        /// Channel name.
        channel: String,
    },
    /// Edge -> upstream: a keyframe is needed on `track`.
    Keyframe {
        /// Track id.
        track: u16,
    },
    /// Edge -> upstream: packets lost on the relay.
    Nack {
        /// Track id.
        track: u16,
        /// RTP sequence numbers (at most [`MAX_NACK`]).
        seqs: Vec<u16>,
    },
    /// Either side, every second.
    Keepalive {
        /// Sender's clock in ms.
        t: u64,
    },
    /// Echo of a keepalive.
    KeepaliveAck {
        /// The echoed `t`.
        t: u64,
    },
    /// Edge -> upstream, every 2 s: load for routing.
    Load {
        /// Viewers in total.
        viewers: u32,
        /// Capacity in viewers.
        capacity: u32,
        /// Viewers per channel.
        channels: BTreeMap<String, u32>,
        /// Shutting down: route no new viewers here.
        #[serde(default)]
        draining: bool,
        /// WHEP viewers per channel at this edge and at every edge below it (relays not
        /// counted), so each viewer is counted once at the origin.
        #[serde(default)]
        audience: BTreeMap<String, u32>,
    },
    /// A `type` this build does not know.
    #[serde(other)]
    Unknown,
}

impl Control {
    /// Encode as one control frame (length prefix + JSON).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these types cannot fail (no maps with non-string keys, no floats).
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decode one frame body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Control, ProtoError> {
        if body.len() > MAX_FRAME {
            return Err(ProtoError::FrameTooLarge(body.len()));
        }
        let msg: Control =
            serde_json::from_slice(body).map_err(|e| ProtoError::Malformed(e.to_string()))?;
        if let Control::Nack { seqs, .. } = &msg {
            if seqs.len() > MAX_NACK {
                return Err(ProtoError::Malformed(format!(
                    "nack with {} sequence numbers (at most {MAX_NACK})",
                    seqs.len()
                )));
            }
        }
        Ok(msg)
    }
}

/// Reassembles control frames from a byte stream (the control stream's reads, in any chunks).
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if one is buffered. An oversized length is an error (the
    /// connection must close: the stream cannot be resynchronised).
    pub fn next_frame(&mut self) -> Result<Option<Control>, ProtoError> {
        let Some(len) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_FRAME {
            return Err(ProtoError::FrameTooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = Control::decode(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        msg.map(Some)
    }
}

/// Kind of media datagram: a plain RTP packet.
pub const KIND_RTP: u8 = 0;
/// Kind of media datagram: an RTP packet stamped with the upstream's clock.
pub const KIND_RTP_STAMPED: u8 = 1;
/// A stamped datagram's header: the plain header and the stamp.
pub const STAMPED_HEADER: usize = DATAGRAM_HEADER + 4;

/// One decoded media datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The relay track id.
    pub track: u16,
    /// When the packet entered the upstream, in ms of the upstream's clock (wrapping); `None`
    /// in a plain datagram.
    pub stamp: Option<u32>,
    /// The RTP packet.
    pub rtp: &'a [u8],
}

/// `at` on the stamp clock: milliseconds since this process first asked (wrapping after 49
/// days; the edge compares stamps only with each other).
pub fn stamp_of(at: std::time::Instant) -> u32 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    at.saturating_duration_since(epoch).as_millis() as u32
}

/// Prefix an RTP packet with the stamped datagram header for `track`.
pub fn encode_stamped(track: u16, stamp: u32, rtp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(STAMPED_HEADER + rtp.len());
    out.push(VERSION as u8);
    out.push(KIND_RTP_STAMPED);
    out.extend_from_slice(&track.to_be_bytes());
    out.extend_from_slice(&stamp.to_be_bytes());
    out.extend_from_slice(rtp);
    out
}

/// Prefix an RTP packet with the datagram header for `track`.
pub fn encode_datagram(track: u16, rtp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DATAGRAM_HEADER + rtp.len());
    out.push(VERSION as u8);
    out.push(KIND_RTP);
    out.extend_from_slice(&track.to_be_bytes());
    out.extend_from_slice(rtp);
    out
}

/// Split a media datagram (plain or stamped) into its track id, stamp and RTP packet.
pub fn decode_datagram(datagram: &[u8]) -> Result<Datagram<'_>, ProtoError> {
    let Some(header) = datagram.get(..DATAGRAM_HEADER) else {
        return Err(ProtoError::BadDatagram("shorter than its header"));
    };
    if u16::from(header[0]) != VERSION {
        return Err(ProtoError::BadDatagram("unknown version"));
    }
    let track = u16::from_be_bytes([header[2], header[3]]);
    let (stamp, rtp) = match header[1] {
        KIND_RTP => (None, &datagram[DATAGRAM_HEADER..]),
        KIND_RTP_STAMPED => {
            let Some(s) = datagram.get(DATAGRAM_HEADER..STAMPED_HEADER) else {
                return Err(ProtoError::BadDatagram("shorter than its header"));
            };
            let stamp = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
            (Some(stamp), &datagram[STAMPED_HEADER..])
        }
        _ => return Err(ProtoError::BadDatagram("unknown kind")),
    };
    if rtp.len() < 12 {
        return Err(ProtoError::BadDatagram("RTP packet shorter than 12 bytes"));
    }
    Ok(Datagram { track, stamp, rtp })
}

/// Which side computes an authentication tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The connecting edge (`hello`).
    Edge,
    /// The accepting upstream (`welcome`).
    Upstream,
}

/// The handshake tag: `hex(HMAC-SHA256(secret, role || exporter || node_id))`, where `exporter`
/// is the connection's TLS keying material (channel binding: a relay by a third party has
/// different keying material on each side and cannot reuse a tag).
pub fn auth_tag(secret: &[u8], role: Role, exporter: &[u8], node_id: &str) -> String {
    hex::encode(mac(secret, role, exporter, node_id))
}

/// Check a peer's tag in constant time.
pub fn verify_auth(secret: &[u8], role: Role, exporter: &[u8], node_id: &str, tag: &str) -> bool {
    let Ok(given) = hex::decode(tag) else {
        return false;
    };
    let want = mac(secret, role, exporter, node_id);
    given.len() == want.len() && bool::from(given.ct_eq(&want))
}

fn mac(secret: &[u8], role: Role, exporter: &[u8], node_id: &str) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
        return Vec::new();
    };
    m.update(match role {
        Role::Edge => b"edge",
        Role::Upstream => b"upstream",
    });
    m.update(exporter);
    m.update(node_id.as_bytes());
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(msg: Control) {
        let mut r = FrameReader::new();
        let bytes = msg.encode();
        // Fed one byte at a time: frames reassemble from any chunking.
        for b in &bytes {
            r.push(std::slice::from_ref(b));
        }
        assert_eq!(r.next_frame().unwrap(), Some(msg));
        assert_eq!(r.next_frame().unwrap(), None);
    }

    #[test]
    fn every_message_round_trips_through_the_frame_reader() {
        roundtrip(Control::Hello {
            version: VERSION,
            node_id: "edge-1".into(),
            region: "eu".into(),
            public_url: "http://edge:8080".into(),
            capacity: 500,
            auth: "ab".into(),
            stamps: true,
            large: true,
        });
        roundtrip(Control::Tracks {
            channel: "demo".into(),
            generation: 3,
            tracks: vec![Track {
                id: 1,
                kind: "video".into(),
            }],
            codecs: vec![Codec {
                pt: 96,
                name: "VP8".into(),
                clock_rate: 90_000,
                channels: None,
                fmtp: String::new(),
                rtx: Some(97),
                red: None,
            }],
            private: true,
        });
        roundtrip(Control::Nack {
            track: 1,
            seqs: vec![1, 2, 65535],
        });
        roundtrip(Control::Load {
            viewers: 3,
            capacity: 10,
            channels: [("demo".to_string(), 3)].into(),
            draining: true,
            audience: [("demo".to_string(), 7)].into(),
        });
        roundtrip(Control::KeepaliveAck { t: 42 });
        roundtrip(Control::Stage {
            channel: "duo".into(),
            participants: vec![
                StageMember {
                    stream: "duo".into(),
                    name: "duo".into(),
                },
                StageMember {
                    stream: "duo~g1".into(),
                    name: "Ann".into(),
                },
            ],
            featured: Some("duo~g1".into()),
            speaking: vec!["duo".into()],
        });
    }

    #[test]
    fn a_stage_message_from_a_terse_upstream_means_no_one_featured_or_speaking() {
        assert_eq!(
            Control::decode(br#"{"type":"stage","channel":"duo","participants":[]}"#),
            Ok(Control::Stage {
                channel: "duo".into(),
                participants: Vec::new(),
                featured: None,
                speaking: Vec::new(),
            })
        );
    }

    #[test]
    fn the_wire_form_is_the_documented_json() {
        let bytes = Control::Subscribe {
            channel: "demo".into(),
        }
        .encode();
        assert_eq!(&bytes[..4], &(bytes.len() as u32 - 4).to_be_bytes());
        assert_eq!(&bytes[4..], br#"{"type":"subscribe","channel":"demo"}"#);
    }

    #[test]
    fn unknown_types_and_fields_are_tolerated_known_types_must_be_complete() {
        assert_eq!(
            Control::decode(br#"{"type":"future_thing","x":1}"#),
            Ok(Control::Unknown)
        );
        assert_eq!(
            Control::decode(br#"{"type":"keyframe","track":2,"extra":true}"#),
            Ok(Control::Keyframe { track: 2 })
        );
        // Fields added after version 1 shipped default when an older peer leaves them out.
        assert_eq!(
            Control::decode(br#"{"type":"load","viewers":1,"capacity":2,"channels":{}}"#),
            Ok(Control::Load {
                viewers: 1,
                capacity: 2,
                channels: BTreeMap::new(),
                draining: false,
                audience: BTreeMap::new(),
            })
        );
        assert!(Control::decode(br#"{"type":"keyframe"}"#).is_err());
        assert!(Control::decode(br#"{"type":"keyframe","track":"two"}"#).is_err());
        assert!(Control::decode(b"not json").is_err());
    }

    #[test]
    fn oversized_frames_and_nacks_are_refused() {
        let mut r = FrameReader::new();
        r.push(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert_eq!(
            r.next_frame(),
            Err(ProtoError::FrameTooLarge(MAX_FRAME + 1))
        );
        let seqs: Vec<u16> = (0..300).collect();
        let body = serde_json::to_vec(&Control::Nack { track: 1, seqs }).unwrap();
        assert!(matches!(
            Control::decode(&body),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn datagrams_carry_the_track_id_and_reject_other_versions() {
        let rtp = [0x80u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7, 0xaa];
        let d = encode_datagram(513, &rtp);
        let plain = Datagram {
            track: 513,
            stamp: None,
            rtp: &rtp[..],
        };
        assert_eq!(decode_datagram(&d), Ok(plain));
        let stamped = encode_stamped(513, 0xdead_beef, &rtp);
        let want = Datagram {
            stamp: Some(0xdead_beef),
            ..plain
        };
        assert_eq!(decode_datagram(&stamped), Ok(want));
        assert!(decode_datagram(&stamped[..STAMPED_HEADER + 11]).is_err());
        // An older edge's hello (no `stamps`) asks for plain datagrams.
        let old = br#"{"type":"hello","version":1,"node_id":"e","region":"eu","public_url":"http://e","capacity":1,"auth":"ab"}"#;
        assert!(matches!(
            Control::decode(old),
            Ok(Control::Hello {
                stamps: false,
                large: false,
                ..
            })
        ));
        let mut v2 = d.clone();
        v2[0] = 2;
        assert!(decode_datagram(&v2).is_err());
        let mut other = d.clone();
        other[1] = 9;
        assert!(decode_datagram(&other).is_err());
        assert!(decode_datagram(&d[..10]).is_err());
    }

    #[test]
    fn auth_tags_bind_role_secret_and_connection() {
        let tag = auth_tag(b"s3cret", Role::Edge, b"exporter-1", "edge-1");
        assert!(verify_auth(
            b"s3cret",
            Role::Edge,
            b"exporter-1",
            "edge-1",
            &tag
        ));
        assert!(!verify_auth(
            b"other",
            Role::Edge,
            b"exporter-1",
            "edge-1",
            &tag
        ));
        assert!(!verify_auth(
            b"s3cret",
            Role::Upstream,
            b"exporter-1",
            "edge-1",
            &tag
        ));
        assert!(!verify_auth(
            b"s3cret",
            Role::Edge,
            b"exporter-2",
            "edge-1",
            &tag
        ));
        assert!(!verify_auth(
            b"s3cret",
            Role::Edge,
            b"exporter-1",
            "edge-2",
            &tag
        ));
        assert!(!verify_auth(
            b"s3cret",
            Role::Edge,
            b"exporter-1",
            "edge-1",
            "zz"
        ));
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_datagram(&bytes);
            let _ = Control::decode(&bytes);
            let mut r = FrameReader::new();
            r.push(&bytes);
            for _ in 0..10 {
                match r.next_frame() {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }

        #[test]
        fn frames_split_anywhere_reassemble(channel in "[a-z0-9_-]{1,32}", cut in 0usize..60) {
            let msg = Control::Subscribe { channel };
            let bytes = msg.encode();
            let cut = cut.min(bytes.len());
            let mut r = FrameReader::new();
            r.push(&bytes[..cut]);
            let early = r.next_frame().unwrap();
            r.push(&bytes[cut..]);
            let msg_back = if cut == bytes.len() { early } else { r.next_frame().unwrap() };
            prop_assert_eq!(msg_back, Some(msg));
        }
    }
}
