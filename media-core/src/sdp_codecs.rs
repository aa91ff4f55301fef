//! The payload formats of each media section (RFC 8866 `m=` format list, `a=rtpmap`, `a=fmtp`),
//! and the edits the SFU makes around the WebRTC engine's negotiation: rejecting sections it
//! cannot serve (port 0, out of the BUNDLE group, RFC 8843 section 7.3.3), completing the
//! answer's rejected sections with a real format, and checking that an answer never lists a
//! payload type without its `a=rtpmap`.
//!
//! Everything here is total over any text: unknown lines are ignored, never an error.

/// One payload format of a media section, as the SDP states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// RTP payload type (0..=127).
    pub pt: u8,
    /// Encoding name from `a=rtpmap` in lower case (`opus`, `h264`, `rtx`, `red`), or the
    /// static name of a static payload type without one (`pcmu`); empty when unknown.
    pub encoding: String,
    /// Clock rate in Hz (0 when unknown).
    pub clock_rate: u32,
    /// Channel count from `a=rtpmap` (audio), if stated.
    pub channels: Option<u8>,
    /// The `a=fmtp` parameters, verbatim (`profile-level-id=42e01f;packetization-mode=1`).
    pub fmtp: Option<String>,
    /// Whether the section had an `a=rtpmap` line for this payload type.
    pub mapped: bool,
    /// That line's value as written (`H264/90000`), for copying it verbatim.
    pub rtpmap: String,
}

impl Format {
    /// The value of one `a=fmtp` parameter (`apt`, `profile-level-id`), case-insensitive key.
    pub fn fmtp_param(&self, key: &str) -> Option<&str> {
        let fmtp = self.fmtp.as_deref()?;
        fmtp.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
        })
    }

    /// For `rtx`: the payload type it repairs (`apt=`).
    pub fn rtx_for(&self) -> Option<u8> {
        (self.encoding == "rtx")
            .then(|| self.fmtp_param("apt")?.parse().ok())
            .flatten()
    }

    /// For `red` (RFC 2198): the payload type it carries (`a=fmtp:63 111/111` gives 111).
    pub fn red_for(&self) -> Option<u8> {
        if self.encoding != "red" {
            return None;
        }
        self.fmtp.as_deref()?.split('/').next()?.trim().parse().ok()
    }
}

/// The formats of every `m=` section of `sdp`, in section order and, within a section, in the
/// order of the `m=` line (the offerer's preference).
pub fn section_formats(sdp: &str) -> Vec<Vec<Format>> {
    let mut out: Vec<Vec<Format>> = Vec::new();
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(rest) = line.strip_prefix("m=") {
            let formats = rest
                .split_ascii_whitespace()
                .skip(3)
                .filter_map(|f| f.parse::<u8>().ok())
                .filter(|pt| *pt < 128)
                .map(static_format)
                .collect();
            out.push(formats);
            continue;
        }
        let Some(formats) = out.last_mut() else {
            continue;
        };
        if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let mut parts = map.split_ascii_whitespace();
            let (Some(pt), Some(desc)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(f) = pt.parse::<u8>().ok().and_then(|pt| find(formats, pt)) else {
                continue;
            };
            let mut fields = desc.split('/');
            f.encoding = fields.next().unwrap_or("").to_ascii_lowercase();
            f.clock_rate = fields.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            f.channels = fields.next().and_then(|c| c.parse().ok());
            f.mapped = true;
            f.rtpmap = desc.to_string();
        } else if let Some(fmtp) = line.strip_prefix("a=fmtp:") {
            let (pt, params) = fmtp.split_once(' ').unwrap_or((fmtp, ""));
            if let Some(f) = pt.parse::<u8>().ok().and_then(|pt| find(formats, pt)) {
                f.fmtp = Some(params.trim().to_string());
            }
        }
    }
    out
}

fn find(formats: &mut [Format], pt: u8) -> Option<&mut Format> {
    formats.iter_mut().find(|f| f.pt == pt)
}

/// A format as the `m=` line alone gives it: named when the payload type is static (RFC 3551).
fn static_format(pt: u8) -> Format {
    let (encoding, clock_rate, channels) = match pt {
        0 => ("pcmu", 8000, Some(1)),
        8 => ("pcma", 8000, Some(1)),
        9 => ("g722", 8000, Some(1)),
        _ => ("", 0, None),
    };
    Format {
        pt,
        encoding: encoding.to_string(),
        clock_rate,
        channels,
        fmtp: None,
        mapped: false,
        rtpmap: String::new(),
    }
}

/// `offer` with the sections at `indexes` rejected: port 0 on their `m=` line and their mids
/// taken out of every `a=group:BUNDLE` line. The engine then answers them rejected too.
pub fn reject_sections(offer: &str, indexes: &[usize]) -> String {
    if indexes.is_empty() {
        return offer.to_string();
    }
    let lines: Vec<&str> = offer.lines().map(|l| l.trim_end_matches('\r')).collect();
    // The mids of the rejected sections.
    let mut mids = Vec::new();
    let mut section = None::<usize>;
    for line in &lines {
        if line.starts_with("m=") {
            section = Some(section.map_or(0, |s| s + 1));
        } else if let (Some(s), Some(mid)) = (section, line.strip_prefix("a=mid:")) {
            if indexes.contains(&s) {
                mids.push(mid.trim().to_string());
            }
        }
    }
    let mut out = String::with_capacity(offer.len());
    let mut section = None::<usize>;
    for line in lines {
        if line.starts_with("m=") {
            let s = section.map_or(0, |s| s + 1);
            section = Some(s);
            if indexes.contains(&s) {
                out.push_str(&with_port_zero(line));
                out.push_str("\r\n");
                continue;
            }
        }
        if let Some(group) = line.strip_prefix("a=group:BUNDLE") {
            let kept: Vec<&str> = group
                .split_ascii_whitespace()
                .filter(|m| !mids.iter().any(|r| r == m))
                .collect();
            if !kept.is_empty() {
                out.push_str("a=group:BUNDLE ");
                out.push_str(&kept.join(" "));
                out.push_str("\r\n");
            }
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

fn with_port_zero(m_line: &str) -> String {
    let mut fields: Vec<&str> = m_line.split_ascii_whitespace().collect();
    if fields.len() >= 2 {
        fields[1] = "0";
    }
    fields.join(" ")
}

/// Give every rejected (port 0) section of `answer` a real format: the first format of the same
/// section of `offer`, with its `a=rtpmap` when the offer had one. An engine that answers a
/// rejected section with the placeholder `0` (PCMU) in a video section, without an `a=rtpmap`,
/// breaks strict parsers. Sections are matched by position (RFC 3264 section 6).
pub fn complete_rejected(answer: &str, offer: &str) -> String {
    let offered = section_formats(offer);
    let mut out = String::with_capacity(answer.len() + 64);
    let mut section = None::<usize>;
    // The current section's m= line was rewritten: its own rtpmap/fmtp lines are dropped and
    // this one closes the section (attributes follow c=, RFC 8866 section 5).
    let mut closing: Option<String> = None;
    for line in answer.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            if let Some(rtpmap) = closing.take() {
                out.push_str(&rtpmap);
            }
            let s = section.map_or(0, |s| s + 1);
            section = Some(s);
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let rejected = fields
                .get(1)
                .is_some_and(|p| p.split('/').next() == Some("0"));
            let media = rejected && fields.len() >= 3 && !fields[0].ends_with("application");
            if let (true, Some(first)) = (media, offered.get(s).and_then(|f| f.first())) {
                out.push_str(&format!("{} 0 {} {}\r\n", fields[0], fields[2], first.pt));
                closing = Some(if first.mapped {
                    rtpmap_line(first)
                } else {
                    String::new()
                });
                continue;
            }
        }
        if closing.is_some() && (line.starts_with("a=rtpmap:") || line.starts_with("a=fmtp:")) {
            continue;
        }
        if line.is_empty() {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if let Some(rtpmap) = closing {
        out.push_str(&rtpmap);
    }
    out
}

fn rtpmap_line(f: &Format) -> String {
    format!("a=rtpmap:{} {}\r\n", f.pt, f.rtpmap)
}

/// `sdp` with the sections at `indexes` marked `a=inactive` (their direction line replaced, or
/// added when there is none): a section answered with a format that will carry no media.
pub fn set_inactive(sdp: &str, indexes: &[usize]) -> String {
    if indexes.is_empty() {
        return sdp.to_string();
    }
    let mut out = String::with_capacity(sdp.len() + 16);
    let mut section = None::<usize>;
    let mut pending = false;
    let is_direction =
        |l: &str| matches!(l, "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive");
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            if pending {
                out.push_str("a=inactive\r\n");
            }
            let s = section.map_or(0, |s| s + 1);
            section = Some(s);
            pending = indexes.contains(&s);
        } else if pending && is_direction(line) {
            out.push_str("a=inactive\r\n");
            pending = false;
            continue;
        } else if section.is_some_and(|s| indexes.contains(&s)) && is_direction(line) {
            continue;
        }
        if line.is_empty() {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if pending {
        out.push_str("a=inactive\r\n");
    }
    out
}

/// Every payload type of an active (port not 0) audio or video section of `sdp` that has no
/// `a=rtpmap` line, as (section index, payload type). An answer must have none: a peer cannot
/// know what a bare number means (static types are not used in WebRTC sections).
pub fn unmapped_payload_types(sdp: &str) -> Vec<(usize, u8)> {
    let mut active = Vec::new();
    for line in sdp.lines().filter(|l| l.starts_with("m=")) {
        let mut fields = line.split_ascii_whitespace();
        let media = fields.next().unwrap_or("");
        let port = fields.next().unwrap_or("0");
        active.push(
            (media == "m=audio" || media == "m=video") && port.split('/').next() != Some("0"),
        );
    }
    section_formats(sdp)
        .iter()
        .enumerate()
        .filter(|(i, _)| active.get(*i).copied().unwrap_or(false))
        .flat_map(|(i, formats)| formats.iter().filter(|f| !f.mapped).map(move |f| (i, f.pt)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// OBS 30/31's WHIP offer as whip-output.cpp builds it (candidates omitted: OBS sends none).
    const OBS: &str = "v=0\r\no=rtc 1 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
a=group:LS 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
a=rtpmap:96 H264/90000\r\n\
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n";

    #[test]
    fn formats_follow_the_m_line_with_rtpmap_and_fmtp() {
        let f = section_formats(OBS);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0][0].pt, 111);
        assert_eq!(f[0][0].encoding, "opus");
        assert_eq!((f[0][0].clock_rate, f[0][0].channels), (48000, Some(2)));
        assert_eq!(f[1][0].encoding, "h264");
        assert_eq!(f[1][0].fmtp_param("profile-level-id"), Some("42e01f"));
        assert_eq!(f[1][0].fmtp_param("PACKETIZATION-MODE"), Some("1"));
        assert!(f[1][0].mapped);
    }

    #[test]
    fn rtx_and_red_name_what_they_carry() {
        let sdp = "v=0\r\nm=audio 9 RTP/SAVPF 63 111\r\na=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";
        let f = section_formats(sdp);
        assert_eq!(f[0][0].red_for(), Some(111));
        assert_eq!(f[0][1].red_for(), None);
        assert_eq!(f[1][1].rtx_for(), Some(96));
        assert_eq!(f[1][0].rtx_for(), None);
    }

    #[test]
    fn a_rejected_section_gets_port_zero_and_leaves_the_bundle() {
        let out = reject_sections(OBS, &[0]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.contains(&"m=audio 0 UDP/TLS/RTP/SAVPF 111"), "{out}");
        assert!(lines.contains(&"m=video 9 UDP/TLS/RTP/SAVPF 96"), "{out}");
        assert!(lines.contains(&"a=group:BUNDLE 1"), "{out}");
        let both = reject_sections(OBS, &[0, 1]);
        assert!(!both.contains("a=group:BUNDLE"), "{both}");
        assert_eq!(reject_sections(OBS, &[]), OBS);
    }

    #[test]
    fn a_rejected_answer_section_lists_the_offered_format_with_its_rtpmap() {
        let answer =
            "v=0\r\ns=-\r\na=group:BUNDLE 1\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
a=inactive\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rtpmap:96 H264/90000\r\n";
        assert_eq!(unmapped_payload_types(answer), vec![]);
        let done = complete_rejected(answer, OBS);
        assert!(done.contains("m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=inactive\r\na=rtpmap:111 opus/48000/2\r\n"), "{done}");
        assert!(
            done.contains("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"),
            "{done}"
        );
        assert_eq!(done.matches("a=rtpmap:").count(), 2, "{done}");
    }

    #[test]
    fn an_active_section_without_rtpmap_is_found() {
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(unmapped_payload_types(answer), vec![(0, 0)]);
        assert_eq!(unmapped_payload_types(OBS), vec![]);
    }

    #[test]
    fn a_silent_section_is_marked_inactive() {
        let out = set_inactive(OBS, &[0]);
        let audio = out.split("m=").nth(1).unwrap();
        assert!(
            audio.contains("a=inactive\r\n") && !audio.contains("a=sendonly"),
            "{out}"
        );
        let video = out.split("m=").nth(2).unwrap();
        assert!(video.contains("a=sendonly\r\n"), "{out}");
        let bare = "v=0\r\nm=audio 9 RTP/SAVPF 111\r\na=mid:0\r\n";
        assert!(set_inactive(bare, &[0]).ends_with("a=inactive\r\n"));
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(text in "\\PC{0,400}", idx in proptest::collection::vec(0usize..4, 0..3)) {
            let _ = section_formats(&text);
            let _ = reject_sections(&text, &idx);
            let _ = complete_rejected(&text, &text);
            let _ = unmapped_payload_types(&text);
            let _ = set_inactive(&text, &idx);
        }

        #[test]
        fn rejecting_keeps_every_other_line(idx in proptest::collection::vec(0usize..2, 0..3)) {
            let out = reject_sections(OBS, &idx);
            prop_assert_eq!(section_formats(&out), section_formats(OBS));
            prop_assert_eq!(out.lines().filter(|l| l.starts_with("a=rtpmap")).count(), 2);
        }
    }
}
