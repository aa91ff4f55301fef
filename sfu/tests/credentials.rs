//! ICE credentials in answers are unpredictable. The old generator (xorshift64* from one seed)
//! let anyone holding an answer's ufrag compute its pwd, and every later session's: this test
//! runs that exact attack against real answers and requires it to fail.
#![allow(clippy::disallowed_methods)] // the test picks the virtual epoch from the clock once

mod support;
use support::*;

const MUL: u64 = 0x2545_F491_4F6C_DD1D;

/// The next xorshift64* output after the state that produced `out` (the attack: the
/// multiplier is odd, so the state is `out * MUL^-1`).
fn predicted_next(out: u64) -> u64 {
    let mut x = out.wrapping_mul(inverse(MUL));
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(MUL)
}

/// Multiplicative inverse modulo 2^64 (Newton's iteration).
fn inverse(a: u64) -> u64 {
    let mut x = a;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
    }
    x
}

fn attr<'a>(sdp: &'a str, prefix: &str) -> &'a str {
    sdp.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .expect("attribute in the answer")
        .trim()
}

#[test]
fn the_inverse_used_by_the_attack_is_right() {
    assert_eq!(MUL.wrapping_mul(inverse(MUL)), 1);
}

#[test]
fn an_answers_pwd_does_not_follow_from_its_ufrag_nor_the_next_sessions_credentials() {
    let mut w = World::with_max_peers(200);
    w.publish("127.0.0.1:7000", "demo");
    let mut answers = Vec::new();
    for i in 0..100u16 {
        let v = w.subscribe(&format!("127.0.0.1:{}", 7001 + i), "demo");
        answers.push(w.clients[v].answer.clone());
    }
    let mut seen = std::collections::HashSet::new();
    for (i, answer) in answers.iter().enumerate() {
        let ufrag = attr(answer, "a=ice-ufrag:");
        let pwd = attr(answer, "a=ice-pwd:");
        assert!(ufrag.len() >= 16 && pwd.len() >= 32, "{ufrag} / {pwd}");
        assert!(seen.insert(ufrag.to_string()), "ufrag repeated: {ufrag}");
        let out = u64::from_str_radix(&ufrag[..16], 16).expect("hex ufrag");
        let guess = format!("{:016x}", predicted_next(out));
        assert!(
            !pwd.starts_with(&guess),
            "answer {i}: pwd {pwd} was predicted from ufrag {ufrag}"
        );
        if let Some(next) = answers.get(i + 1) {
            assert!(
                !attr(next, "a=ice-ufrag:").contains(&guess),
                "answer {}'s ufrag was predicted from answer {i}'s",
                i + 1
            );
        }
    }
}
