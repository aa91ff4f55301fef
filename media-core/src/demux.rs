//! Demultiplexing helpers for one UDP port shared by every peer.
//!
//! RFC 7983 section 7 tells STUN, DTLS, RTP/RTCP (and TURN channel data) apart by the first byte.
//! For a datagram from an address the SFU has not seen yet, only a STUN Binding request can
//! introduce the peer: its USERNAME attribute is `<server ufrag>:<client ufrag>` (RFC 8445
//! section 7.2.2), and the server ufrag names the session.

/// What a datagram on the media port carries, by its first byte (RFC 7983).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// STUN (first byte 0..=3): ICE connectivity checks and consent freshness.
    Stun,
    /// DTLS (first byte 20..=63): handshake and alerts.
    Dtls,
    /// SRTP or SRTCP (first byte 128..=191).
    Rtp,
    /// Anything else (empty, TURN channel data, garbage): counted and dropped.
    Unknown,
}

/// Classify a datagram by its first byte (RFC 7983 section 7).
pub fn classify(data: &[u8]) -> DatagramKind {
    match data.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => DatagramKind::Rtp,
        _ => DatagramKind::Unknown,
    }
}

const STUN_HEADER_LEN: usize = 20;
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_BINDING_REQUEST: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;
/// RFC 8489 section 14.3: USERNAME is less than 513 bytes.
const MAX_USERNAME_LEN: usize = 512;

/// The local (server-side) ICE ufrag from a STUN Binding request's USERNAME attribute.
///
/// Returns `None` for anything that is not a well-formed Binding request carrying a UTF-8
/// USERNAME of the form `local:remote` with a non-empty local part. Never panics.
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    if data.len() < STUN_HEADER_LEN || classify(data) != DatagramKind::Stun {
        return None;
    }
    let msg_type = u16::from_be_bytes([data[0], data[1]]);
    if msg_type != STUN_BINDING_REQUEST || data[4..8] != STUN_MAGIC_COOKIE {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let body = data.get(STUN_HEADER_LEN..STUN_HEADER_LEN + body_len)?;
    let username = find_attribute(body, ATTR_USERNAME)?;
    if username.len() > MAX_USERNAME_LEN {
        return None;
    }
    let username = std::str::from_utf8(username).ok()?;
    let (local, _remote) = username.split_once(':')?;
    (!local.is_empty()).then_some(local)
}

/// Walk STUN attributes (type, length, value padded to 4 bytes) and return the first value of
/// type `wanted`.
fn find_attribute(mut body: &[u8], wanted: u16) -> Option<&[u8]> {
    while body.len() >= 4 {
        let attr_type = u16::from_be_bytes([body[0], body[1]]);
        let len = usize::from(u16::from_be_bytes([body[2], body[3]]));
        let value = body.get(4..4 + len)?;
        if attr_type == wanted {
            return Some(value);
        }
        let padded = (len + 3) & !3;
        body = body.get(4 + padded..)?;
    }
    None
}

/// Build a minimal STUN Binding request with a USERNAME attribute (no integrity).
///
/// Used by tests and the load generator to exercise the demux; the SFU's WebRTC engine still
/// verifies MESSAGE-INTEGRITY on real checks.
pub fn binding_request_with_username(transaction_id: [u8; 12], username: &str) -> Vec<u8> {
    let name = username.as_bytes();
    let padded = (name.len() + 3) & !3;
    let body_len = 4 + padded;
    let mut out = Vec::with_capacity(STUN_HEADER_LEN + body_len);
    out.extend_from_slice(&STUN_BINDING_REQUEST.to_be_bytes());
    out.extend_from_slice(&(body_len as u16).to_be_bytes());
    out.extend_from_slice(&STUN_MAGIC_COOKIE);
    out.extend_from_slice(&transaction_id);
    out.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name);
    out.resize(STUN_HEADER_LEN + body_len, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classifies_by_first_byte_per_rfc7983() {
        assert_eq!(classify(&[0x00, 0x01]), DatagramKind::Stun);
        assert_eq!(classify(&[22, 254, 253]), DatagramKind::Dtls);
        assert_eq!(classify(&[0x80, 96]), DatagramKind::Rtp);
        assert_eq!(classify(&[0x90]), DatagramKind::Rtp);
        assert_eq!(classify(&[]), DatagramKind::Unknown);
        assert_eq!(classify(&[64]), DatagramKind::Unknown);
        assert_eq!(classify(&[255]), DatagramKind::Unknown);
    }

    #[test]
    fn extracts_local_ufrag_from_binding_request() {
        let req = binding_request_with_username([7; 12], "srvUfrag:cliUfrag");
        assert_eq!(stun_local_ufrag(&req), Some("srvUfrag"));
    }

    #[test]
    fn skips_attributes_before_username() {
        let mut req = binding_request_with_username([1; 12], "abcd:efgh");
        // Insert a PRIORITY attribute (0x0024, 4 bytes) in front of USERNAME.
        let prio = [0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4];
        req.splice(20..20, prio);
        let new_len = (req.len() - 20) as u16;
        req[2..4].copy_from_slice(&new_len.to_be_bytes());
        assert_eq!(stun_local_ufrag(&req), Some("abcd"));
    }

    #[test]
    fn rejects_non_requests_and_bad_usernames() {
        let mut resp = binding_request_with_username([1; 12], "a:b");
        resp[0] = 0x01; // 0x0101 = Binding success response
        assert_eq!(stun_local_ufrag(&resp), None);
        assert_eq!(
            stun_local_ufrag(&binding_request_with_username([1; 12], "nocolon")),
            None
        );
        assert_eq!(
            stun_local_ufrag(&binding_request_with_username([1; 12], ":remote")),
            None
        );
        let mut bad_cookie = binding_request_with_username([1; 12], "a:b");
        bad_cookie[4] = 0;
        assert_eq!(stun_local_ufrag(&bad_cookie), None);
    }

    #[test]
    fn truncated_request_is_rejected() {
        let req = binding_request_with_username([1; 12], "server:client");
        for cut in 0..req.len() {
            assert_eq!(stun_local_ufrag(&req[..cut]), None, "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn ufrag_round_trips(local in "[A-Za-z0-9+/]{1,32}", remote in "[A-Za-z0-9+/]{0,32}", tid in any::<[u8; 12]>()) {
            let req = binding_request_with_username(tid, &format!("{local}:{remote}"));
            prop_assert_eq!(stun_local_ufrag(&req), Some(local.as_str()));
        }

        #[test]
        fn never_panics_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = classify(&data);
            let _ = stun_local_ufrag(&data);
        }

        #[test]
        fn never_panics_on_mutated_requests(tid in any::<[u8; 12]>(), idx in 0usize..64, byte in any::<u8>()) {
            let mut req = binding_request_with_username(tid, "server:client");
            let i = idx % req.len();
            req[i] = byte;
            let _ = stun_local_ufrag(&req);
        }
    }
}
