//! The histogram: counts per bucket, grown only as far as the largest sample recorded.

use std::fmt;
use std::marker::PhantomData;

use crate::buckets;
use crate::percentiles::PercentileStats;

/// Counts of `u64` samples in logarithmic buckets, read back as percentiles.
///
/// `T` only tells histograms of different quantities apart at compile time; it holds no data
/// (openraft names it `()`).
pub struct Histogram<T = ()> {
    /// Counts per bucket, up to the highest bucket that holds a sample: the last count, if
    /// any, is never zero, so two histograms of the same samples are equal.
    counts: Vec<u64>,
    /// The sum of `counts`.
    total: u64,
    quantity: PhantomData<fn() -> T>,
}

impl<T> Histogram<T> {
    /// An empty histogram. Allocates nothing until the first sample.
    pub fn new() -> Self {
        Self {
            counts: Vec::new(),
            total: 0,
            quantity: PhantomData,
        }
    }

    /// Counts one sample of `value`.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Counts `n` samples of `value`.
    pub fn record_n(&mut self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        let index = buckets::index_of(value);
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] = self.counts[index].saturating_add(n);
        self.total = self.total.saturating_add(n);
    }

    /// How many samples were recorded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The value below which a fraction `quantile` (0.0 to 1.0) of the samples lie, read as the
    /// middle of the bucket it falls in; 0 when there is no sample.
    pub fn percentile(&self, quantile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank =
            ((quantile.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return buckets::representative(index);
            }
        }
        buckets::representative(self.counts.len().saturating_sub(1))
    }

    /// The sample count and the percentiles openraft reports, in one pass's worth of reads.
    pub fn percentile_stats(&self) -> PercentileStats {
        PercentileStats {
            samples: self.total,
            p0_1: self.percentile(0.001),
            p1: self.percentile(0.01),
            p5: self.percentile(0.05),
            p10: self.percentile(0.10),
            p50: self.percentile(0.50),
            p90: self.percentile(0.90),
            p99: self.percentile(0.99),
            p99_9: self.percentile(0.999),
        }
    }

    /// The buckets that hold samples, lowest first: each one's smallest and largest value and
    /// its count.
    pub fn nonempty_buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.nonempty_indexes().map(|(index, count)| {
            (
                buckets::lower_bound(index),
                buckets::upper_bound(index),
                count,
            )
        })
    }

    /// The buckets that hold samples, lowest first, by index, with their counts.
    pub(crate) fn nonempty_indexes(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(index, count)| (index, *count))
    }
}

impl<T> Default for Histogram<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Histogram<T> {
    fn clone(&self) -> Self {
        Self {
            counts: self.counts.clone(),
            total: self.total,
            quantity: PhantomData,
        }
    }
}

impl<T> PartialEq for Histogram<T> {
    fn eq(&self, other: &Self) -> bool {
        self.counts == other.counts
    }
}

impl<T> Eq for Histogram<T> {}

impl<T> fmt::Debug for Histogram<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("stats", &self.percentile_stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_empty_histogram_reads_zero_everywhere() {
        let histogram = Histogram::<()>::new();
        assert_eq!(histogram.total(), 0);
        assert_eq!(histogram.percentile_stats(), PercentileStats::default());
    }

    #[test]
    fn small_samples_read_back_exactly() {
        let mut histogram = Histogram::<()>::new();
        for value in 1..=4 {
            histogram.record_n(value, 25);
        }
        let stats = histogram.percentile_stats();
        assert_eq!(
            (stats.samples, stats.p1, stats.p50, stats.p90),
            (100, 1, 2, 4)
        );
    }

    #[test]
    fn record_n_of_zero_changes_nothing() {
        let mut histogram = Histogram::<()>::new();
        histogram.record_n(1 << 40, 0);
        assert_eq!(histogram, Histogram::new());
    }

    proptest! {
        #[test]
        fn percentiles_are_ordered_and_near_a_sample(samples in prop::collection::vec(any::<u32>(), 1..200)) {
            let mut histogram = Histogram::<()>::new();
            for sample in &samples {
                histogram.record(u64::from(*sample));
            }
            let mut sorted: Vec<u64> = samples.iter().map(|s| u64::from(*s)).collect();
            sorted.sort_unstable();
            let stats = histogram.percentile_stats();
            let ordered = [stats.p0_1, stats.p1, stats.p5, stats.p10, stats.p50, stats.p90, stats.p99, stats.p99_9];
            prop_assert!(ordered.windows(2).all(|pair| pair[0] <= pair[1]));
            let rank = ((0.5 * sorted.len() as f64).ceil() as usize).max(1);
            let median = sorted[rank - 1];
            prop_assert!(stats.p50.abs_diff(median) as f64 <= median as f64 * 0.125);
            prop_assert_eq!(stats.samples, samples.len() as u64);
        }
    }
}
