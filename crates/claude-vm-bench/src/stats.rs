//! Percentiles of time samples.

use std::time::Duration;

use serde::Serialize;

/// Summary of one side (ours or the baseline) of one operation, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Every measured sample, in the order it was taken.
    pub samples_ms: Vec<f64>,
}

impl Summary {
    pub fn of(samples: &[Duration]) -> Summary {
        Summary::of_ms(samples.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }

    /// From samples already in milliseconds.
    pub fn of_ms(ms: Vec<f64>) -> Summary {
        let mut sorted = ms.clone();
        sorted.sort_by(f64::total_cmp);
        let mean = if ms.is_empty() {
            f64::NAN
        } else {
            ms.iter().sum::<f64>() / ms.len() as f64
        };
        Summary {
            p50_ms: percentile(&sorted, 50.0),
            p95_ms: percentile(&sorted, 95.0),
            p99_ms: percentile(&sorted, 99.0),
            min_ms: sorted.first().copied().unwrap_or(f64::NAN),
            max_ms: sorted.last().copied().unwrap_or(f64::NAN),
            mean_ms: mean,
            samples_ms: ms,
        }
    }
}

/// The `p`th percentile of sorted samples, interpolating linearly between the closest ranks
/// (numpy's default method): p50 of 10 samples is the mean of the 5th and 6th.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 5.5);
        assert!((percentile(&v, 95.0) - 9.55).abs() < 1e-9);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 10.0);
        assert_eq!(percentile(&[7.0], 95.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn summary_sorts_but_keeps_sample_order() {
        let s = Summary::of(&[
            Duration::from_millis(30),
            Duration::from_millis(10),
            Duration::from_millis(20),
        ]);
        assert_eq!(s.p50_ms, 20.0);
        assert_eq!(s.min_ms, 10.0);
        assert_eq!(s.max_ms, 30.0);
        assert_eq!(s.mean_ms, 20.0);
        assert_eq!(s.samples_ms, vec![30.0, 10.0, 20.0]);
    }
}
