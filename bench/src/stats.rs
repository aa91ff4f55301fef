//! Percentiles over samples.

/// The `p`th percentile (nearest rank) of `samples`, sorting them in place; `None` if empty.
pub fn percentile(samples: &mut [u64], p: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

/// How many distinct values of `range` occur in `values`.
pub fn distinct_in(values: &[u32], range: &std::ops::Range<u32>) -> u64 {
    let mut v: Vec<u32> = values
        .iter()
        .copied()
        .filter(|c| range.contains(c))
        .collect();
    v.sort_unstable();
    v.dedup();
    v.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50));
        assert_eq!(percentile(&mut v, 95.0), Some(95));
        assert_eq!(percentile(&mut v, 99.0), Some(99));
        assert_eq!(percentile(&mut v, 100.0), Some(100));
        assert_eq!(percentile(&mut [7], 50.0), Some(7));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn distinct_counts_each_frame_once_inside_the_window() {
        assert_eq!(distinct_in(&[1, 2, 2, 3, 9, 0], &(1..4)), 3);
        assert_eq!(distinct_in(&[], &(0..10)), 0);
    }
}
