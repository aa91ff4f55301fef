//! Codec negotiation, decided by the SFU before the engine answers.
//!
//! Every WebRTC implementation numbers payload types its own way (OBS: H.264 96, Opus 111;
//! Chromium: VP8 96, H.264 102..; aiortc: VP8 97, H.264 99..; the `webrtc` crate and GStreamer
//! others again). The rules:
//!
//! - **A publisher's numbers are the numbers it sends.** Its engine is configured with exactly
//!   the supported formats of its offer, under the offer's payload types (RTX by its `apt`,
//!   RED by the payload it carries), so the answer repeats them. OBS keeps sending what it
//!   offered whatever the answer says: an answer that renumbers loses its video.
//! - **A viewer's numbers are the viewer's own.** For each codec the publisher negotiated, the
//!   viewer's offered format that matches it (name, clock rate, channels, H.264 profile and
//!   packetization mode, VP9 profile, AV1 profile/level/tier: the engine's `match_params`) is
//!   configured under the viewer's payload type; the forwarding path rewrites per viewer
//!   (`OutTrack::payload_type`). Header-extension ids are per session in the engine: values are
//!   parsed under the publisher's ids and written under the viewer's.
//! - **Never an answer without a codec.** A section of a kind the stream does not have (the
//!   audio of a video-only stream) is answered `a=inactive` with the viewer's own first format,
//!   or is rejected (port 0) when the viewer offered no format the SFU knows; a wanted
//!   kind with no matching codec is a `CodecMismatch` naming both sides' codecs.

use media_core::sdp::{Kind, MediaSection};
use media_core::sdp_codecs::Format;
use str0m::format::{Codec, CodecConfig, CodecSpec, FormatParams, PayloadParams};
use str0m::media::{Frequency, MediaKind, Pt};

use crate::types::SfuError;

/// What the engine is configured with before it answers, and which offer sections to reject.
pub(crate) struct Plan {
    pub codecs: CodecConfig,
    /// Indexes of offer sections to answer rejected (port 0).
    pub rejected: Vec<usize>,
    /// Indexes of sections answered with a format but no media (`a=inactive`).
    pub silent: Vec<usize>,
}

/// One supported format of an offer section, as engine parameters under the offer's numbers.
#[derive(Debug, Clone, Copy)]
struct Offered {
    params: PayloadParams,
    /// The offer also has RFC 2198 RED carrying this (Opus) payload type.
    red: bool,
}

/// The codecs a publisher's offer is accepted with: its own supported formats under its own
/// payload types. Sections it sends with nothing supported are rejected; no usable section at
/// all is an error naming what was offered.
pub(crate) fn publisher_plan(
    sections: &[MediaSection],
    formats: &[Vec<Format>],
) -> Result<Plan, SfuError> {
    let mut offered: Vec<Offered> = Vec::new();
    let mut rejected = Vec::new();
    let mut unsupported = Vec::new();
    for (i, section) in sections.iter().enumerate() {
        if !is_media(section) || section.disabled || !section.direction.offerer_sends() {
            continue;
        }
        let fs = formats.get(i).map(Vec::as_slice).unwrap_or_default();
        let supported = supported(fs);
        if supported.is_empty() {
            unsupported.extend(fs.iter().filter(|f| !is_helper(f)).map(format_name));
            rejected.push(i);
            continue;
        }
        for s in supported {
            if !offered.iter().any(|o| o.params.pt() == s.params.pt()) {
                offered.push(s);
            }
        }
    }
    if offered.is_empty() {
        return Err(SfuError::Unusable(format!(
            "no offered codec is supported: the offer has {}; the server takes H264 \
             (packetization-mode 0 or 1), VP8, VP9, AV1 and Opus",
            list_or_none(&unsupported)
        )));
    }
    Ok(Plan {
        codecs: config_of(&offered),
        rejected,
        silent: Vec::new(),
    })
}

/// The codecs a viewer's offer is accepted with: for each codec the stream's publisher sends,
/// the viewer's matching format under the viewer's payload type. `open` (a stage's session,
/// which may show a participant with another codec later): every format the viewer offers
/// that can be forwarded, the stream's first.
pub(crate) fn viewer_plan(
    sections: &[MediaSection],
    formats: &[Vec<Format>],
    stream: &[PayloadParams],
    open: bool,
) -> Result<Plan, SfuError> {
    let mut chosen: Vec<Offered> = Vec::new();
    let mut rejected = Vec::new();
    let mut silent = Vec::new();
    let mut served = 0;
    for (i, section) in sections.iter().enumerate() {
        if !is_media(section) || section.disabled || !section.direction.offerer_receives() {
            continue;
        }
        let video = section.kind == Kind::Video;
        let kind = if video {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        let mut sent: Vec<PayloadParams> = stream
            .iter()
            .filter(|p| p.spec().codec.kind() == kind && !p.spec().codec.is_tele())
            .copied()
            .collect();
        let fs = formats.get(i).map(Vec::as_slice).unwrap_or_default();
        let offered = supported(fs);
        if open {
            sent.extend(offered.iter().map(|o| o.params));
        }
        if sent.is_empty() {
            // The stream has no media of this kind. The section is answered with the viewer's
            // first format and never gets a packet; only without a format it is rejected. A
            // rejected section leaves the BUNDLE group, and aiortc then opens a transport of
            // its own for it whose DTLS never completes: the viewer stays "connecting".
            let Some(first) = offered.first() else {
                rejected.push(i);
                continue;
            };
            if !chosen.iter().any(|c| c.params.pt() == first.params.pt()) {
                chosen.push(*first);
            }
            silent.push(i);
            continue;
        }
        let theirs =
            CodecConfig::new_from_payload_params(offered.iter().map(|o| o.params).collect());
        let mut matched = Vec::new();
        for p in &sent {
            let Some(m) = theirs.match_params(*p) else {
                continue;
            };
            let m = *m;
            if let Some(o) = offered.iter().find(|o| o.params.pt() == m.pt()) {
                if !matched.iter().any(|x: &Offered| x.params.pt() == m.pt()) {
                    matched.push(*o);
                }
            }
        }
        if matched.is_empty() {
            let kind = if video { "video" } else { "audio" };
            let names: Vec<String> = sent.iter().map(describe).collect();
            let viewer: Vec<String> = fs
                .iter()
                .filter(|f| !is_helper(f))
                .map(format_name)
                .collect();
            return Err(SfuError::CodecMismatch(format!(
                "the stream's {kind} is {}; the viewer offered {}",
                names.join(", "),
                list_or_none(&viewer)
            )));
        }
        served += 1;
        // The viewer's preference order (the order of its m= line).
        matched.sort_by_key(|m| fs.iter().position(|f| f.pt == *m.params.pt()));
        for m in matched {
            if !chosen.iter().any(|c| c.params.pt() == m.params.pt()) {
                chosen.push(m);
            }
        }
    }
    if served == 0 {
        let kinds: Vec<String> = stream.iter().map(describe).collect();
        return Err(SfuError::CodecMismatch(format!(
            "the viewer asked for no media the stream has (the stream sends {})",
            kinds.join(", ")
        )));
    }
    Ok(Plan {
        codecs: config_of(&chosen),
        rejected,
        silent,
    })
}

fn is_media(section: &MediaSection) -> bool {
    matches!(section.kind, Kind::Audio | Kind::Video)
}

/// Formats that only accompany a codec (retransmission, redundancy, FEC, comfort noise, DTMF).
fn is_helper(f: &Format) -> bool {
    matches!(
        f.encoding.as_str(),
        "rtx" | "red" | "ulpfec" | "flexfec-03" | "cn" | "telephone-event"
    )
}

/// The formats of one section the SFU can forward, as engine parameters under the section's
/// own payload types, in the section's order.
fn supported(formats: &[Format]) -> Vec<Offered> {
    let mut out = Vec::new();
    for f in formats {
        let Some(spec) = spec_of(f) else { continue };
        let rtx = formats
            .iter()
            .find(|r| r.rtx_for() == Some(f.pt))
            .map(|r| Pt::from(r.pt));
        let red = formats.iter().any(|r| r.red_for() == Some(f.pt));
        let params =
            PayloadParams::new(Pt::from(f.pt), rtx.filter(|_| spec.codec.is_video()), spec);
        out.push(Offered { params, red });
    }
    out
}

/// The engine's description of a format the SFU forwards; `None` for anything else.
fn spec_of(f: &Format) -> Option<CodecSpec> {
    let format = f
        .fmtp
        .as_deref()
        .map(FormatParams::parse_line)
        .unwrap_or_default();
    let codec = Codec::from(f.encoding.as_str());
    let ok = match codec {
        Codec::Opus => f.clock_rate == 48_000 && f.channels == Some(2),
        // Interleaved mode (2) cannot be forwarded to WebRTC peers.
        Codec::H264 => f.clock_rate == 90_000 && format.packetization_mode.unwrap_or(0) <= 1,
        Codec::Vp8 | Codec::Vp9 | Codec::Av1 => f.clock_rate == 90_000,
        _ => false,
    };
    if !ok {
        return None;
    }
    Some(CodecSpec {
        codec,
        clock_rate: Frequency::new(f.clock_rate)?,
        channels: f.channels.filter(|_| codec.is_audio()),
        format,
    })
}

/// An engine configuration with exactly these formats, in this order. Opus that the peer also
/// offers with RED is configured through the engine's RED-aware Opus entry, which takes the
/// peer's Opus and RED numbers when it answers (it has no other way to declare RED).
fn config_of(formats: &[Offered]) -> CodecConfig {
    let mut c = CodecConfig::empty();
    for o in formats {
        let p = o.params;
        let spec = p.spec();
        if spec.codec == Codec::Opus && o.red {
            c.enable_opus(true, true);
            continue;
        }
        c.add_config(
            p.pt(),
            p.resend(),
            spec.codec,
            spec.clock_rate,
            spec.channels,
            spec.format,
        );
    }
    c
}

/// `H264 (profile-level-id 42e01f, packetization-mode 1)`, `VP8`, `opus/48000/2`.
pub(crate) fn describe(p: &PayloadParams) -> String {
    let spec = p.spec();
    let f = spec.format;
    match spec.codec {
        Codec::H264 => format!(
            "H264 (profile-level-id {:06x}, packetization-mode {})",
            f.profile_level_id.unwrap_or(0x42_00_1f),
            f.packetization_mode.unwrap_or(0)
        ),
        Codec::Vp9 => format!("VP9 (profile-id {})", f.profile_id.unwrap_or(0)),
        Codec::Av1 => format!("AV1 (profile {})", f.profile.unwrap_or(0)),
        Codec::Opus => "opus/48000/2".to_string(),
        other => other.to_string(),
    }
}

fn format_name(f: &Format) -> String {
    let base = if f.encoding.is_empty() {
        format!("payload type {} without rtpmap", f.pt)
    } else {
        f.encoding.to_uppercase().replace("OPUS", "opus")
    };
    match (
        f.encoding.as_str(),
        f.fmtp_param("profile-level-id"),
        f.fmtp_param("packetization-mode"),
    ) {
        ("h264", plid, pm) => format!(
            "{base} (profile-level-id {}, packetization-mode {})",
            plid.unwrap_or("42001f").to_ascii_lowercase(),
            pm.unwrap_or("0")
        ),
        ("vp9", _, _) => format!(
            "{base} (profile-id {})",
            f.fmtp_param("profile-id").unwrap_or("0")
        ),
        _ => base,
    }
}

fn list_or_none(names: &[String]) -> String {
    let mut unique: Vec<&String> = Vec::new();
    for n in names {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    if unique.is_empty() {
        "no codec".to_string()
    } else {
        unique
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_core::sdp::media_sections;
    use media_core::sdp_codecs::section_formats;

    fn plan_pub(sdp: &str) -> Result<Plan, SfuError> {
        publisher_plan(&media_sections(sdp).unwrap(), &section_formats(sdp))
    }

    const OBS: &str = "v=0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n";

    #[test]
    fn a_publisher_is_configured_with_its_own_payload_types() {
        let plan = plan_pub(OBS).unwrap();
        let pts: Vec<u8> = plan.codecs.params().iter().map(|p| *p.pt()).collect();
        assert_eq!(pts, vec![111, 96]);
        let h264 = plan.codecs.params()[1].spec();
        assert_eq!(h264.format.profile_level_id, Some(0x42e01f));
        assert!(plan.rejected.is_empty());
    }

    #[test]
    fn rtx_follows_its_apt_and_unsupported_formats_are_left_out() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 120 121 35 36\r\na=mid:v\r\na=sendonly\r\n\
a=rtpmap:120 VP8/90000\r\na=rtpmap:121 rtx/90000\r\na=fmtp:121 apt=120\r\n\
a=rtpmap:35 H265/90000\r\na=rtpmap:36 rtx/90000\r\na=fmtp:36 apt=35\r\n";
        let plan = plan_pub(sdp).unwrap();
        let p = plan.codecs.params();
        assert_eq!(p.len(), 1);
        assert_eq!((*p[0].pt(), p[0].resend().map(|r| *r)), (120, Some(121)));
    }

    #[test]
    fn a_publisher_section_without_a_supported_codec_is_rejected_and_none_at_all_is_an_error() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0 8\r\na=mid:0\r\na=sendonly\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(plan_pub(sdp).unwrap().rejected, vec![0]);
        let audio_only = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0 9\r\na=mid:0\r\na=sendonly\r\n";
        let Err(SfuError::Unusable(why)) = plan_pub(audio_only) else {
            panic!("expected an error");
        };
        assert!(why.contains("PCMU") && why.contains("G722"), "{why}");
    }

    /// A viewer offering VP8 and H.264 in each of two video sections.
    const VIEWER_TWO: &str = "v=0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=mid:0\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 profile-level-id=42e01f;packetization-mode=1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=mid:1\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 profile-level-id=42e01f;packetization-mode=1\r\n";

    #[test]
    fn an_open_plan_takes_every_forwardable_format_the_viewer_offers_the_streams_first() {
        let vp8 = plan_pub(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 100\r\na=mid:0\r\na=sendonly\r\na=rtpmap:100 VP8/90000\r\n",
        )
        .unwrap();
        let stream: Vec<PayloadParams> = vp8.codecs.params().to_vec();
        let sections = media_sections(VIEWER_TWO).unwrap();
        let formats = section_formats(VIEWER_TWO);
        let closed = viewer_plan(&sections, &formats, &stream, false).unwrap();
        let codecs =
            |p: &Plan| -> Vec<Codec> { p.codecs.params().iter().map(|p| p.spec().codec).collect() };
        assert_eq!(
            codecs(&closed),
            vec![Codec::Vp8],
            "a plain viewer: the stream's codec only"
        );
        let open = viewer_plan(&sections, &formats, &stream, true).unwrap();
        assert_eq!(
            codecs(&open),
            vec![Codec::Vp8, Codec::H264],
            "a stage's: H.264 too, for later"
        );
        let pts: Vec<u8> = open.codecs.params().iter().map(|p| *p.pt()).collect();
        assert_eq!(pts, vec![96, 102], "under the viewer's own numbers");
    }
}
