//! Decaying histograms with exponentially growing buckets, the data structure behind the recommender.
//!
//! A [`BucketLayout`] splits `[0, ∞)` into bucket 0 = `[0, first)`, then buckets whose bounds grow by a
//! constant `ratio` (`first·ratioⁱ⁻¹ .. first·ratioⁱ`), up to a last bucket that also holds everything
//! larger than `max`. With the defaults (5 % steps, 10m .. 1000 cores for CPU, 10 MiB .. 1 TiB for memory)
//! that is about 240 buckets, so a value is known within 5 % and a histogram has a fixed size of about 1 KB
//! (`f32` weights) whatever the number of samples.
//!
//! A [`DecayingHistogram`] gives each sample a weight that halves every `half_life`: recent usage counts
//! more than old usage. Instead of decaying every bucket on every sample, a sample at time `t` is added
//! with weight `w · 2^((t − reference) / half_life)`, so older samples are relatively lighter; when the
//! exponent grows too large the weights are rescaled to a newer reference. Percentiles only depend on the
//! relative weights.
//!
//! [`HistogramCheckpoint`] is the compact serializable form (sparse, integer weights) used to persist the
//! history across restarts.

use serde::{Deserialize, Serialize};

/// Largest number of buckets a layout may have (memory bound per histogram).
pub const MAX_BUCKETS: usize = 4096;

/// Exponent (in half-lives) after which weights are rescaled to a newer reference. `2^64` stays far
/// from the `f32` range (`2^127`) even after summing many samples.
const MAX_DECAY_EXPONENT: f64 = 64.0;

/// Weights below this fraction of the total are dropped when rescaling (they can never matter again).
const NEGLIGIBLE_WEIGHT: f64 = 1e-12;

/// Largest integer weight of a checkpoint; the heaviest bucket gets it, the others proportionally.
pub const CHECKPOINT_MAX_WEIGHT: u32 = 100_000;

/// Errors of histogram construction, merging and restoration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HistogramError {
    /// The layout parameters are not usable.
    #[error("invalid bucket layout: {0}")]
    InvalidLayout(&'static str),
    /// The half-life is not a positive number of seconds.
    #[error("the half-life must be positive")]
    InvalidHalfLife,
    /// Two histograms with different layouts or half-lives cannot be merged.
    #[error("histograms with different layouts or half-lives cannot be merged")]
    Incompatible,
    /// A checkpoint does not fit the layout.
    #[error("invalid checkpoint: {0}")]
    InvalidCheckpoint(&'static str),
}

/// How values map to buckets: bucket 0 is `[0, first)`, bucket `i ≥ 1` is `[first·ratioⁱ⁻¹,
/// first·ratioⁱ)`, and the last bucket also holds every larger value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BucketLayout {
    first: f64,
    ratio: f64,
    buckets: usize,
}

impl BucketLayout {
    /// A layout whose buckets grow by `ratio` from `first` until they cover `max`.
    pub fn new(first: f64, ratio: f64, max: f64) -> Result<Self, HistogramError> {
        if !(first.is_finite() && first > 0.0) {
            return Err(HistogramError::InvalidLayout(
                "the first bucket bound must be positive",
            ));
        }
        if !(ratio.is_finite() && ratio > 1.0) {
            return Err(HistogramError::InvalidLayout("the ratio must be greater than 1"));
        }
        if !(max.is_finite() && max > first) {
            return Err(HistogramError::InvalidLayout(
                "the maximum must be greater than the first bound",
            ));
        }
        let steps = ((max / first).ln() / ratio.ln()).ceil();
        if !(steps.is_finite() && steps >= 1.0 && steps < MAX_BUCKETS as f64) {
            return Err(HistogramError::InvalidLayout("too many buckets"));
        }
        Ok(Self {
            first,
            ratio,
            buckets: steps as usize + 1,
        })
    }

    /// Number of buckets.
    pub fn len(&self) -> usize {
        self.buckets
    }

    /// Always false: a layout has at least two buckets.
    pub fn is_empty(&self) -> bool {
        self.buckets == 0
    }

    /// Index of the bucket holding `value` (NaN and negative values go to bucket 0).
    pub fn index(&self, value: f64) -> usize {
        if value.is_nan() || value < self.first {
            return 0;
        }
        let i = ((value / self.first).ln() / self.ratio.ln()).floor();
        // `as` saturates (infinity → usize::MAX), then the last bucket takes everything larger.
        (i as usize).saturating_add(1).min(self.buckets - 1)
    }

    /// Lower bound of bucket `i`.
    pub fn lower(&self, i: usize) -> f64 {
        if i == 0 { 0.0 } else { self.upper(i - 1) }
    }

    /// Upper bound of bucket `i` (for the last bucket, the bound it would have).
    pub fn upper(&self, i: usize) -> f64 {
        self.first * self.ratio.powi(i32::try_from(i).unwrap_or(i32::MAX))
    }
}

/// A histogram whose sample weights halve every half-life. Fixed size: one `f32` per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct DecayingHistogram {
    layout: BucketLayout,
    half_life_secs: f64,
    /// Unix seconds the weights are relative to.
    reference: i64,
    weights: Box<[f32]>,
    /// Sum of `weights` (kept in `f64`; recomputed when rescaling).
    total: f64,
}

impl DecayingHistogram {
    /// An empty histogram.
    pub fn new(layout: BucketLayout, half_life_secs: f64) -> Result<Self, HistogramError> {
        if !(half_life_secs.is_finite() && half_life_secs > 0.0) {
            return Err(HistogramError::InvalidHalfLife);
        }
        Ok(Self {
            layout,
            half_life_secs,
            reference: 0,
            weights: vec![0.0; layout.len()].into_boxed_slice(),
            total: 0.0,
        })
    }

    /// The bucket layout.
    pub fn layout(&self) -> &BucketLayout {
        &self.layout
    }

    /// True when no sample carries weight.
    pub fn is_empty(&self) -> bool {
        self.total <= 0.0
    }

    /// Heap bytes used by the buckets.
    pub fn heap_bytes(&self) -> usize {
        self.weights.len() * std::mem::size_of::<f32>()
    }

    /// Adds `value` with `weight` observed at `at` (unix seconds). Non-finite or non-positive weights and
    /// non-finite values are ignored.
    pub fn add(&mut self, value: f64, weight: f64, at: i64) {
        if !(weight.is_finite() && weight > 0.0 && value.is_finite()) {
            return;
        }
        if self.is_empty() {
            self.clear();
            self.reference = at;
        } else if self.exponent(at) > MAX_DECAY_EXPONENT {
            self.rescale(at);
        }
        let w = weight * self.exponent(at).exp2();
        if !w.is_finite() || w <= 0.0 {
            return;
        }
        let i = self.layout.index(value);
        if let Some(b) = self.weights.get_mut(i) {
            *b += w as f32;
            self.total += w;
        }
    }

    /// Removes a sample previously added with the same `value`, `weight` and `at`. A bucket never goes
    /// below zero.
    pub fn subtract(&mut self, value: f64, weight: f64, at: i64) {
        if !(weight.is_finite() && weight > 0.0 && value.is_finite()) || self.is_empty() {
            return;
        }
        let w = weight * self.exponent(at).exp2();
        if !w.is_finite() {
            return;
        }
        let i = self.layout.index(value);
        if let Some(b) = self.weights.get_mut(i) {
            *b = (f64::from(*b) - w).max(0.0) as f32;
        }
        // Subtraction is rare (a memory peak replaced): recompute the total to avoid drift.
        self.total = self.sum();
        if self.total <= 0.0 {
            self.clear();
        }
    }

    /// The value under which a fraction `p` (0..=1) of the weight lies, as the upper bound of the bucket
    /// reaching it (so within one bucket ratio above the true percentile); `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let total = self.sum();
        if total.is_nan() || total <= 0.0 {
            return None;
        }
        let p = if p.is_nan() { 1.0 } else { p.clamp(0.0, 1.0) };
        let threshold = p * total;
        let mut cumulative = 0.0;
        let mut last_non_empty = 0;
        for (i, &w) in self.weights.iter().enumerate() {
            if w > 0.0 {
                last_non_empty = i;
                cumulative += f64::from(w);
                if cumulative >= threshold {
                    return Some(self.value_of(i));
                }
            }
        }
        Some(self.value_of(last_non_empty))
    }

    /// Adds every sample of `other` (same layout and half-life) into this histogram.
    pub fn merge(&mut self, other: &Self) -> Result<(), HistogramError> {
        if self.layout != other.layout || self.half_life_secs != other.half_life_secs {
            return Err(HistogramError::Incompatible);
        }
        if other.is_empty() {
            return Ok(());
        }
        if self.is_empty() {
            self.reference = other.reference;
            self.weights.copy_from_slice(&other.weights);
            self.total = other.total;
            return Ok(());
        }
        let reference = self.reference.max(other.reference);
        self.rescale(reference);
        let factor = other.exponent_from(reference).exp2();
        for (mine, theirs) in self.weights.iter_mut().zip(other.weights.iter()) {
            *mine += (f64::from(*theirs) * factor) as f32;
        }
        self.total = self.sum();
        Ok(())
    }

    /// Compact serializable form of this histogram.
    pub fn checkpoint(&self) -> HistogramCheckpoint {
        let max = self.weights.iter().copied().fold(0.0f32, f32::max);
        let mut buckets = Vec::new();
        if max > 0.0 {
            let scale = f64::from(CHECKPOINT_MAX_WEIGHT) / f64::from(max);
            for (i, &w) in self.weights.iter().enumerate() {
                let q = (f64::from(w) * scale).round();
                if q >= 1.0
                    && let Ok(i) = u16::try_from(i)
                {
                    buckets.push((i, q as u32));
                }
            }
        }
        HistogramCheckpoint {
            reference: self.reference,
            total_weight: if buckets.is_empty() { 0.0 } else { self.sum() },
            buckets,
        }
    }

    /// Replaces the content of this histogram by a checkpoint taken with the same layout.
    pub fn restore(&mut self, checkpoint: &HistogramCheckpoint) -> Result<(), HistogramError> {
        let invalid = HistogramError::InvalidCheckpoint;
        if !(checkpoint.total_weight.is_finite() && checkpoint.total_weight >= 0.0) {
            return Err(invalid("the total weight must be a non-negative number"));
        }
        let mut weights = vec![0.0f32; self.layout.len()];
        let mut sum = 0.0f64;
        for &(i, q) in &checkpoint.buckets {
            let slot = weights
                .get_mut(usize::from(i))
                .ok_or(invalid("bucket index out of range"))?;
            *slot += q as f32;
            sum += f64::from(q);
        }
        self.clear();
        if sum <= 0.0 || checkpoint.total_weight <= 0.0 {
            return Ok(());
        }
        let scale = checkpoint.total_weight / sum;
        for (slot, w) in self.weights.iter_mut().zip(weights) {
            *slot = (f64::from(w) * scale) as f32;
        }
        self.reference = checkpoint.reference;
        self.total = self.sum();
        Ok(())
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.weights.iter_mut().for_each(|w| *w = 0.0);
        self.total = 0.0;
    }

    fn value_of(&self, i: usize) -> f64 {
        if i + 1 >= self.layout.len() {
            self.layout.lower(i)
        } else {
            self.layout.upper(i)
        }
    }

    fn exponent(&self, at: i64) -> f64 {
        self.exponent_from_ref(self.reference, at)
    }

    /// Exponent of this histogram's reference seen from `reference` (≤ 0 when `reference` is newer).
    fn exponent_from(&self, reference: i64) -> f64 {
        self.exponent_from_ref(reference, self.reference)
    }

    fn exponent_from_ref(&self, reference: i64, at: i64) -> f64 {
        (at.saturating_sub(reference)) as f64 / self.half_life_secs
    }

    /// Moves the reference to `reference` (only forward), scaling the weights accordingly.
    fn rescale(&mut self, reference: i64) {
        if reference <= self.reference {
            return;
        }
        let factor = self.exponent_from(reference).exp2();
        let floor = self.total * factor * NEGLIGIBLE_WEIGHT;
        for w in self.weights.iter_mut() {
            let v = f64::from(*w) * factor;
            *w = if v < floor { 0.0 } else { v as f32 };
        }
        self.reference = reference;
        self.total = self.sum();
    }

    fn sum(&self) -> f64 {
        self.weights.iter().map(|&w| f64::from(w)).sum()
    }
}

/// Serializable form of a [`DecayingHistogram`]: sparse `(bucket, weight)` pairs with integer weights
/// (the heaviest bucket gets [`CHECKPOINT_MAX_WEIGHT`]) plus the total weight and the reference time, so
/// that restoring keeps the relative weight of the history against new samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistogramCheckpoint {
    /// Unix seconds the weights are relative to.
    pub reference: i64,
    /// Sum of the weights at `reference`.
    pub total_weight: f64,
    /// Non-empty buckets: index and relative integer weight.
    pub buckets: Vec<(u16, u32)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> BucketLayout {
        BucketLayout::new(10.0, 1.05, 1_000_000.0).unwrap_or_else(|e| panic!("{e}"))
    }

    fn hist() -> DecayingHistogram {
        DecayingHistogram::new(layout(), 86_400.0).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn layout_bounds() {
        let l = layout();
        assert_eq!(l.len(), 237);
        assert_eq!(l.index(0.0), 0);
        assert_eq!(l.index(9.99), 0);
        assert_eq!(l.index(10.0), 1);
        assert_eq!(l.index(10.4), 1);
        assert_eq!(l.index(f64::INFINITY), l.len() - 1);
        assert_eq!(l.index(f64::NAN), 0);
        for v in [11.0, 100.0, 12345.0, 999_999.0] {
            let i = l.index(v);
            assert!(
                l.lower(i) <= v * 1.000_001 && v <= l.upper(i) * 1.000_001,
                "{v} in {i}"
            );
        }
        assert!(BucketLayout::new(0.0, 1.05, 10.0).is_err());
        assert!(BucketLayout::new(1.0, 1.0, 10.0).is_err());
        assert!(BucketLayout::new(1.0, 1.000_000_1, 1e300).is_err());
    }

    #[test]
    fn percentiles() {
        let mut h = hist();
        assert_eq!(h.percentile(0.5), None);
        for v in 1..=100 {
            h.add(f64::from(v) * 100.0, 1.0, 0);
        }
        let p50 = h.percentile(0.5).unwrap_or_default();
        let p90 = h.percentile(0.9).unwrap_or_default();
        assert!((5000.0..=5000.0 * 1.051).contains(&p50), "{p50}");
        assert!((9000.0..=9000.0 * 1.051).contains(&p90), "{p90}");
        assert!(h.percentile(1.0).unwrap_or_default() >= 10_000.0);
    }

    #[test]
    fn decay_favours_recent_samples() {
        let mut h = hist();
        // One sample of 100 a week ago outweighed by one of 10000 now (2^7 times heavier).
        h.add(100.0, 1.0, 0);
        h.add(10_000.0, 1.0, 7 * 86_400);
        assert!(h.percentile(0.1).unwrap_or_default() >= 10_000.0);
        // Years later the reference moves without losing the newest samples.
        h.add(50.0, 1.0, 3 * 365 * 86_400);
        assert!(h.percentile(0.5).unwrap_or_default() <= 51.0);
        assert!(h.total.is_finite());
    }

    #[test]
    fn subtract_restores() {
        let mut h = hist();
        h.add(1000.0, 1.0, 10);
        h.add(5000.0, 1.0, 20);
        h.subtract(5000.0, 1.0, 20);
        assert!(h.percentile(1.0).unwrap_or_default() < 1100.0);
        h.subtract(1000.0, 1.0, 10);
        assert!(h.is_empty());
        h.subtract(1000.0, 1.0, 10);
        assert!(h.is_empty());
    }

    #[test]
    fn merge_and_checkpoint() {
        let mut a = hist();
        let mut b = hist();
        for i in 0..50 {
            a.add(100.0, 1.0, i * 60);
            b.add(10_000.0, 1.0, 86_400 + i * 60);
        }
        let mut m = a.clone();
        m.merge(&b).unwrap_or_else(|e| panic!("{e}"));
        // b is a day newer: twice the weight, so the median is in b's bucket.
        assert!(m.percentile(0.5).unwrap_or_default() >= 10_000.0);
        assert!(m.percentile(0.3).unwrap_or_default() < 200.0);

        let cp = m.checkpoint();
        let json = serde_json::to_string(&cp).unwrap_or_default();
        let back: HistogramCheckpoint = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        let mut r = hist();
        r.restore(&back).unwrap_or_else(|e| panic!("{e}"));
        for p in [0.1, 0.3, 0.5, 0.9] {
            assert_eq!(r.percentile(p), m.percentile(p));
        }
        assert!((r.total - m.total).abs() / m.total < 1e-3);
        let bad = HistogramCheckpoint {
            reference: 0,
            total_weight: 1.0,
            buckets: vec![(9999, 1)],
        };
        assert!(r.restore(&bad).is_err());
        let other = DecayingHistogram::new(layout(), 3600.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.merge(&other), Err(HistogramError::Incompatible));
    }
}
