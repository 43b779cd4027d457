//! Distributions of durations the engine reports to the metrics endpoint — how long a sync point
//! waited from its first arrival to its release, how long after a delivery batch was sent its
//! acknowledgement came — as fixed-bucket counts in milliseconds (the engine's clock), with their
//! sum and count: the shape of a Prometheus histogram, kept in constant space.

/// Upper bounds of the buckets, in milliseconds; one more bucket holds everything above.
pub const BOUNDS_MS: [u64; 14] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 60_000];

/// A fixed-bucket distribution of durations in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Distribution {
    counts: [u64; BOUNDS_MS.len() + 1],
    sum_ms: u64,
}

impl Distribution {
    pub fn record(&mut self, ms: u64) {
        let bucket = BOUNDS_MS.iter().position(|&bound| ms <= bound).unwrap_or(BOUNDS_MS.len());
        self.counts[bucket] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    /// Each bucket's upper bound (`None`: above the last bound) and how many fell in it (not
    /// cumulative).
    pub fn buckets(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        BOUNDS_MS.iter().map(|&b| Some(b)).chain([None]).zip(self.counts.iter().copied())
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_first_bucket_whose_bound_holds_them() {
        let mut d = Distribution::default();
        for ms in [0, 1, 2, 3, 60_000, 60_001, 1_000_000] {
            d.record(ms);
        }
        let counts: Vec<(Option<u64>, u64)> = d.buckets().filter(|(_, n)| *n > 0).collect();
        assert_eq!(counts, [(Some(1), 2), (Some(2), 1), (Some(5), 1), (Some(60_000), 1), (None, 2)]);
        assert_eq!((d.count(), d.sum_ms()), (7, 1_120_007));
    }
}
