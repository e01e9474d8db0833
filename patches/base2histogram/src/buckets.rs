//! The bucket layout: which bucket a value falls in and which values a bucket holds.
//!
//! Values below [`EXACT`] have a bucket each. Above, every power of two is split into
//! [`PER_OCTAVE`] buckets of equal width, so a bucket's width is at most a quarter of its lower
//! bound: a percentile read back as the bucket's midpoint is within 12.5 % of a recorded value.

/// Bits after the leading one that choose a bucket inside its power of two.
const SUB_BITS: u32 = 2;

/// Buckets per power of two.
const PER_OCTAVE: usize = 1 << SUB_BITS;

/// Values below this are counted exactly, one bucket each.
const EXACT: u64 = 1 << (SUB_BITS + 1);

/// The lowest power of two (as an exponent) that is split into shared buckets.
const FIRST_SHARED_EXPONENT: u32 = SUB_BITS + 1;

/// How many buckets cover all of `u64`.
pub(crate) const BUCKETS: usize =
    EXACT as usize + (64 - FIRST_SHARED_EXPONENT as usize) * PER_OCTAVE;

/// The bucket that counts `value`.
pub(crate) fn index_of(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let within = (value >> (exponent - SUB_BITS)) as usize & (PER_OCTAVE - 1);
    EXACT as usize + (exponent - FIRST_SHARED_EXPONENT) as usize * PER_OCTAVE + within
}

/// The smallest value that bucket `index` counts.
pub(crate) fn lower_bound(index: usize) -> u64 {
    if index < EXACT as usize {
        return index as u64;
    }
    let shared = index - EXACT as usize;
    let exponent = (shared / PER_OCTAVE) as u32 + FIRST_SHARED_EXPONENT;
    let within = (shared % PER_OCTAVE) as u64;
    (1 << exponent) | (within << (exponent - SUB_BITS))
}

/// The largest value that bucket `index` counts.
pub(crate) fn upper_bound(index: usize) -> u64 {
    if index + 1 >= BUCKETS {
        u64::MAX
    } else {
        lower_bound(index + 1) - 1
    }
}

/// The value a percentile that falls in bucket `index` reads as: the middle of its range.
pub(crate) fn representative(index: usize) -> u64 {
    let lower = lower_bound(index);
    lower + (upper_bound(index) - lower) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_values_are_exact_and_the_last_bucket_ends_at_max() {
        for value in 0..EXACT {
            assert_eq!(index_of(value), value as usize);
            assert_eq!(lower_bound(value as usize), value);
            assert_eq!(upper_bound(value as usize), value);
        }
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
        assert_eq!(upper_bound(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        for index in 1..BUCKETS {
            assert_eq!(
                lower_bound(index),
                upper_bound(index - 1) + 1,
                "bucket {index}"
            );
        }
    }

    proptest! {
        #[test]
        fn a_value_lies_in_its_bucket_and_its_midpoint_is_close(value in any::<u64>()) {
            let index = index_of(value);
            prop_assert!(lower_bound(index) <= value && value <= upper_bound(index));
            let error = representative(index).abs_diff(value) as f64;
            prop_assert!(error <= value as f64 * 0.125, "{value} read as {}", representative(index));
        }
    }
}
