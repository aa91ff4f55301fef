//! A message as a sparse vector: its words, word pairs and the character 2- to 4-grams of
//! each word (so `fuuck`, `fucking` and `fck` share features), hashed into [`BUCKETS`]
//! buckets (FNV-1a), each feature counted, the vector scaled to unit length.

use crate::text::words;

/// Hash buckets of the feature space (the models' weight count per class).
pub const BUCKETS: usize = 1 << 16;

/// One message's features: `(bucket, value)`, buckets ascending and distinct, unit length.
pub type Features = Vec<(u32, f32)>;

/// The features of `text`.
pub fn features(text: &str) -> Features {
    let words = words(text);
    let mut raw: Vec<u32> = Vec::with_capacity(words.len() * 8);
    for (i, w) in words.iter().enumerate() {
        raw.push(bucket(b"w", w.as_bytes(), b""));
        if let Some(next) = words.get(i + 1) {
            raw.push(bucket(b"b", w.as_bytes(), next.as_bytes()));
        }
        let padded: Vec<char> = std::iter::once('<')
            .chain(w.chars())
            .chain(std::iter::once('>'))
            .collect();
        let mut buf = [0u8; 16];
        for n in 2..=4 {
            for gram in padded.windows(n) {
                // At most 4 characters of at most 4 bytes each.
                let mut len = 0;
                for c in gram {
                    len += c.encode_utf8(&mut buf[len..]).len();
                }
                raw.push(bucket(b"c", &buf[..len], b""));
            }
        }
    }
    raw.sort_unstable();
    let mut out: Features = Vec::with_capacity(raw.len());
    for b in raw {
        match out.last_mut() {
            Some((last, v)) if *last == b => *v += 1.0,
            _ => out.push((b, 1.0)),
        }
    }
    let norm = out.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for (_, v) in &mut out {
            *v /= norm;
        }
    }
    out
}

/// FNV-1a of a feature's kind and parts, into [`BUCKETS`].
fn bucket(kind: &[u8], a: &[u8], b: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for byte in kind.iter().chain(&[0x1f]).chain(a).chain(&[0x1e]).chain(b) {
        h ^= u32::from(*byte);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % BUCKETS as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_a_unit_vector_of_distinct_ascending_buckets() {
        let f = features("hello hello world");
        assert!(f.windows(2).all(|w| w[0].0 < w[1].0));
        let norm: f32 = f.iter().map(|(_, v)| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(f.iter().all(|(b, _)| (*b as usize) < BUCKETS));
        assert!(features("").is_empty());
    }

    #[test]
    fn spelling_variants_share_character_features() {
        let shared = |a: &str, b: &str| {
            let (fa, fb) = (features(a), features(b));
            fa.iter()
                .filter(|(x, _)| fb.iter().any(|(y, _)| x == y))
                .count()
        };
        assert!(shared("stupid", "stuupid") > shared("stupid", "banana"));
    }
}
