//! Text charts of several histograms side by side, for logs and terminals.

use std::fmt;

use crate::buckets;
use crate::histogram::Histogram;

/// Glyphs from an empty bucket to the fullest bucket of a series.
const SHADES: &[char] = &[' ', '.', ':', '-', '=', '+', '*', '#', '%', '@'];

/// The longest bar of a detailed chart, in characters.
const BAR_WIDTH: u64 = 40;

/// Named histograms drawn on one bucket axis.
///
/// `Display` draws one line per histogram, a glyph per bucket that shades with its count; the
/// [`detailed`](AsciiChart::detailed) form lists each histogram's buckets with a bar and a count.
#[derive(Debug, Clone, Default)]
pub struct AsciiChart {
    series: Vec<(String, Histogram)>,
}

impl AsciiChart {
    /// A chart with no histogram yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `histogram` under `label`, below those added before.
    pub fn add(mut self, label: impl Into<String>, histogram: Histogram) -> Self {
        self.series.push((label.into(), histogram));
        self
    }

    /// The chart as one block per histogram: each bucket that holds samples, its range, a bar
    /// and its count.
    pub fn detailed(&self) -> DetailedChart<'_> {
        DetailedChart { chart: self }
    }

    /// The lowest and highest bucket any histogram has a sample in.
    fn bucket_span(&self) -> Option<(usize, usize)> {
        let indexes = self
            .series
            .iter()
            .flat_map(|(_, histogram)| histogram.nonempty_indexes().map(|(index, _)| index));
        indexes.fold(None, |span, index| match span {
            None => Some((index, index)),
            Some((low, high)) => Some((low.min(index), high.max(index))),
        })
    }

    fn label_width(&self) -> usize {
        self.series
            .iter()
            .map(|(label, _)| label.chars().count())
            .max()
            .unwrap_or(0)
    }
}

impl fmt::Display for AsciiChart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((low, high)) = self.bucket_span() else {
            return writeln!(f, "(no samples)");
        };
        let width = self.label_width();
        for (label, histogram) in &self.series {
            let mut counts = vec![0u64; high - low + 1];
            for (index, count) in histogram.nonempty_indexes() {
                counts[index - low] = count;
            }
            let fullest = counts.iter().copied().max().unwrap_or(0).max(1);
            let shades: String = counts.iter().map(|count| shade(*count, fullest)).collect();
            writeln!(f, "{label:<width$} |{shades}| n={}", histogram.total())?;
        }
        writeln!(
            f,
            "{:<width$}  {} .. {}",
            "",
            buckets::lower_bound(low),
            buckets::upper_bound(high)
        )
    }
}

/// The glyph of a bucket holding `count` samples when the series' fullest holds `fullest`.
fn shade(count: u64, fullest: u64) -> char {
    if count == 0 {
        return SHADES[0];
    }
    let steps = (SHADES.len() - 1) as u64;
    let level = (count * steps).div_ceil(fullest).clamp(1, steps);
    SHADES[level as usize]
}

/// The detailed form of an [`AsciiChart`], made by [`AsciiChart::detailed`].
#[derive(Debug, Clone, Copy)]
pub struct DetailedChart<'a> {
    chart: &'a AsciiChart,
}

impl fmt::Display for DetailedChart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (label, histogram) in &self.chart.series {
            writeln!(f, "{label} (n={}):", histogram.total())?;
            let fullest = histogram
                .nonempty_buckets()
                .map(|(_, _, count)| count)
                .max()
                .unwrap_or(1);
            for (lower, upper, count) in histogram.nonempty_buckets() {
                let bar = "#".repeat((count * BAR_WIDTH).div_ceil(fullest) as usize);
                writeln!(f, "  {lower:>12} ..= {upper:<12} {bar} {count}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram_of(samples: &[(u64, u64)]) -> Histogram {
        let mut histogram = Histogram::new();
        for (value, n) in samples {
            histogram.record_n(*value, *n);
        }
        histogram
    }

    #[test]
    fn the_chart_shades_each_series_on_one_axis() {
        let chart = AsciiChart::new()
            .add("fast", histogram_of(&[(1, 9), (2, 1)]))
            .add("slow", histogram_of(&[(3, 5)]));
        assert_eq!(
            chart.to_string(),
            "fast |@. | n=10\nslow |  @| n=5\n      1 .. 3\n"
        );
    }

    #[test]
    fn the_detailed_chart_lists_every_bucket_with_samples() {
        let chart = AsciiChart::new().add("stage", histogram_of(&[(8, 4), (100, 2)]));
        let text = chart.detailed().to_string();
        assert!(text.starts_with("stage (n=6):\n"), "{text}");
        assert!(
            text.contains(&format!("{:>12} ..= {:<12} {} 4", 8, 9, "#".repeat(40))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{:>12} ..= {:<12} {} 2", 96, 111, "#".repeat(20))),
            "{text}"
        );
    }

    #[test]
    fn an_empty_chart_says_so() {
        assert_eq!(
            AsciiChart::new().add("idle", Histogram::new()).to_string(),
            "(no samples)\n"
        );
    }
}
