//! A log-bucketed histogram of `u64` samples: what openraft's runtime statistics record (batch
//! sizes, budgets, stage latencies) and read back as percentiles.
//!
//! The workspace patches crates.io's `base2histogram` 0.2.3 with this crate. That crate builds
//! the lookup tables of all 16 of its bucket widths (27 MB, written, so resident) the first time
//! any histogram is made, and openraft makes its histograms in `Raft::new`: every manager paid
//! 27 MB for statistics nobody reads. Here a sample's bucket is computed from its bits (leading
//! zeros and the two bits after the leading one), so there is no table at all, and a histogram
//! holds only the buckets up to its largest sample.
//!
//! Only the API openraft 0.10 calls is here: [`Histogram`] (`new`, `record`, `record_n`,
//! `total`, `percentile_stats`), [`PercentileStats`] and [`AsciiChart`].

mod buckets;
mod chart;
mod histogram;
mod percentiles;

pub use chart::{AsciiChart, DetailedChart};
pub use histogram::Histogram;
pub use percentiles::PercentileStats;
