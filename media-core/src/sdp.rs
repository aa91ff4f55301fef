//! A small, total sniffer for the media sections of an SDP offer (RFC 8866).
//!
//! The WebRTC engine does the real negotiation. The SFU sniffs first so it can refuse offers
//! that cannot work with a clear reason (a WHIP offer without media, a WHEP offer that cannot
//! receive) and so it knows each mid's kind before the engine reports the media.

/// The kind of an `m=` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `m=audio`
    Audio,
    /// `m=video`
    Video,
    /// `m=application` (data channels)
    Application,
    /// Anything else.
    Other,
}

/// Direction attribute of a media section (RFC 8866 section 6.7); `sendrecv` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv`
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

impl Direction {
    /// The offerer sends media in this section.
    pub fn offerer_sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    /// The offerer receives media in this section.
    pub fn offerer_receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// One `m=` section as sniffed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// Media kind from the `m=` line.
    pub kind: Kind,
    /// `a=mid` value, if present.
    pub mid: Option<String>,
    /// Direction, `SendRecv` if absent.
    pub direction: Direction,
    /// True when the port is 0 (a rejected or stopped section) without `a=bundle-only`.
    pub disabled: bool,
    /// The section has an `a=simulcast:` line (RFC 8853): several encodings, told apart by rid.
    pub simulcast: bool,
}

/// Why an SDP could not be sniffed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpSniffError {
    /// The text does not start with `v=0`.
    #[error("not an SDP document: it must start with \"v=0\"")]
    NotSdp,
    /// An `m=` line is missing its fields.
    #[error("malformed m= line {line}")]
    BadMediaLine {
        /// 1-based line number.
        line: usize,
    },
}

/// Sniff every media section of `sdp`.
pub fn media_sections(sdp: &str) -> Result<Vec<MediaSection>, SdpSniffError> {
    let mut lines = sdp.lines().map(|l| l.trim_end_matches('\r'));
    if lines.next().map(str::trim) != Some("v=0") {
        return Err(SdpSniffError::NotSdp);
    }
    let mut out: Vec<MediaSection> = Vec::new();
    for (idx, line) in lines.enumerate() {
        if let Some(rest) = line.strip_prefix("m=") {
            let mut fields = rest.split_ascii_whitespace();
            let (Some(kind), Some(port), Some(_proto)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(SdpSniffError::BadMediaLine { line: idx + 2 });
            };
            let kind = match kind {
                "audio" => Kind::Audio,
                "video" => Kind::Video,
                "application" => Kind::Application,
                _ => Kind::Other,
            };
            let disabled = port.split('/').next() == Some("0");
            out.push(MediaSection {
                kind,
                mid: None,
                direction: Direction::SendRecv,
                disabled,
                simulcast: false,
            });
            continue;
        }
        let Some(section) = out.last_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = Some(mid.trim().to_string());
        } else if line == "a=bundle-only" {
            // RFC 8843 section 6: port 0 with bundle-only is a bundled section, not a rejected
            // one (GStreamer's max-bundle offers).
            section.disabled = false;
        } else if line.starts_with("a=simulcast:") {
            section.simulcast = true;
        } else {
            match line {
                "a=sendrecv" => section.direction = Direction::SendRecv,
                "a=sendonly" => section.direction = Direction::SendOnly,
                "a=recvonly" => section.direction = Direction::RecvOnly,
                "a=inactive" => section.direction = Direction::Inactive,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Whether the media section with `a=mid:{mid}` has an `a=rtpmap:` for `encoding` (e.g.
/// `red/48000`, case-insensitive).
pub fn offers_codec(sdp: &str, mid: &str, encoding: &str) -> bool {
    let mut in_section = false;
    let want = encoding.to_ascii_lowercase();
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            in_section = false;
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            in_section = m.trim() == mid;
        }
        if in_section {
            if let Some(map) = line.strip_prefix("a=rtpmap:") {
                let name = map.split_whitespace().nth(1).unwrap_or("");
                if name.to_ascii_lowercase().starts_with(&want) {
                    return true;
                }
            }
        }
    }
    false
}

/// Repeat every `a=candidate` line in every media section and close each section with
/// `a=end-of-candidates`.
///
/// An ICE-lite answer knows all its candidates up front. Some peers (aiortc) read candidates
/// only from the last bundled section, others want end-of-candidates: listing them everywhere
/// is valid (RFC 8839) and works with all of them. Rejected sections (port 0) get them too:
/// aiortc takes the candidates of the last section even when it is rejected, and other peers
/// ignore candidates there.
pub fn spread_candidates(sdp: &str) -> String {
    let lines: Vec<&str> = sdp
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    let candidates: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    let mut out = String::with_capacity(sdp.len() + candidates.len() * 80);
    let mut in_media = false;
    let close_section = |out: &mut String| {
        for c in &candidates {
            out.push_str(c);
            out.push_str("\r\n");
        }
        out.push_str("a=end-of-candidates\r\n");
    };
    for line in lines {
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("m=") {
            if in_media {
                close_section(&mut out);
            }
            in_media = true;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if in_media {
        close_section(&mut out);
    }
    out
}

/// Render sections back to a minimal SDP (used by round-trip tests and tools).
pub fn render_minimal(sections: &[MediaSection]) -> String {
    let mut s = String::from("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
    for m in sections {
        let kind = match m.kind {
            Kind::Audio => "audio",
            Kind::Video => "video",
            Kind::Application => "application",
            Kind::Other => "text",
        };
        let port = if m.disabled { 0 } else { 9 };
        s.push_str(&format!("m={kind} {port} UDP/TLS/RTP/SAVPF 96\r\n"));
        if let Some(mid) = &m.mid {
            s.push_str(&format!("a=mid:{mid}\r\n"));
        }
        let dir = match m.direction {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        };
        s.push_str(&format!("a={dir}\r\n"));
        if m.simulcast {
            s.push_str("a=rid:q send\r\na=rid:f send\r\na=simulcast:send q;f\r\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OBS_LIKE: &str =
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 H264/90000\r\n";

    #[test]
    fn sniffs_kinds_mids_and_directions() {
        let s = media_sections(OBS_LIKE).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].kind, s[0].mid.as_deref(), s[0].direction),
            (Kind::Audio, Some("0"), Direction::SendOnly)
        );
        assert_eq!(
            (s[1].kind, s[1].mid.as_deref(), s[1].direction),
            (Kind::Video, Some("1"), Direction::SendOnly)
        );
    }

    #[test]
    fn a_bundle_only_section_with_port_zero_is_not_disabled() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:video0\r\n\
m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=bundle-only\r\na=mid:audio1\r\n\
m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:gone\r\n";
        let s = media_sections(sdp).unwrap();
        assert_eq!(
            s.iter().map(|m| m.disabled).collect::<Vec<_>>(),
            vec![false, false, true]
        );
    }

    #[test]
    fn garbage_is_not_sdp() {
        assert_eq!(media_sections("hello"), Err(SdpSniffError::NotSdp));
        assert_eq!(media_sections(""), Err(SdpSniffError::NotSdp));
        assert_eq!(
            media_sections("v=0\nm=video\n"),
            Err(SdpSniffError::BadMediaLine { line: 2 })
        );
    }

    #[test]
    fn candidates_are_repeated_in_every_section() {
        let answer = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
        let spread = spread_candidates(answer);
        let sections: Vec<&str> = spread.split("m=").skip(1).collect();
        assert_eq!(sections.len(), 2);
        for s in sections {
            assert_eq!(s.matches("a=candidate:1 1 udp").count(), 1, "{s}");
            assert!(s.contains("a=end-of-candidates\r\n"));
        }
        assert_eq!(media_sections(&spread).unwrap().len(), 2);
    }

    fn section() -> impl Strategy<Value = MediaSection> {
        (
            prop_oneof![
                Just(Kind::Audio),
                Just(Kind::Video),
                Just(Kind::Application),
                Just(Kind::Other)
            ],
            proptest::option::of("[a-z0-9]{1,8}"),
            prop_oneof![
                Just(Direction::SendRecv),
                Just(Direction::SendOnly),
                Just(Direction::RecvOnly),
                Just(Direction::Inactive)
            ],
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(kind, mid, direction, disabled, simulcast)| MediaSection {
                kind,
                mid,
                direction,
                disabled,
                simulcast,
            })
    }

    #[test]
    fn offered_codecs_are_found_per_media_section() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=rtpmap:111 opus/48000/2\r\na=mid:0\r\na=rtpmap:63 red/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(offers_codec(sdp, "0", "red/48000"));
        assert!(!offers_codec(sdp, "1", "red/48000"));
        assert!(offers_codec(sdp, "1", "vp8/90000"));
        assert!(!offers_codec(sdp, "2", "opus"));
    }

    proptest! {
        #[test]
        fn round_trips(sections in proptest::collection::vec(section(), 0..6)) {
            let text = render_minimal(&sections);
            prop_assert_eq!(media_sections(&text).unwrap(), sections);
        }

        #[test]
        fn never_panics_on_any_text(text in "\\PC{0,400}") {
            let _ = spread_candidates(&text);
            let _ = media_sections(&text);
            let _ = media_sections(&format!("v=0\r\n{text}"));
        }
    }
}
