//! Latency summaries: every sample kept, sorted, read at nearest-rank percentiles (exact, like an
//! HDR histogram at full resolution).

use serde_json::{Value, json};

/// count, p50, p99 and max of a set of samples in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Sorts `samples` (milliseconds) and summarises them.
    pub fn of(samples: &mut [f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        Self {
            count: samples.len(),
            p50: percentile(samples, 50.0),
            p99: percentile(samples, 99.0),
            max: samples[samples.len() - 1],
        }
    }

    pub fn to_json(self) -> Value {
        json!({"count": self.count, "p50_ms": round3(self.p50), "p99_ms": round3(self.p99), "max_ms": round3(self.max)})
    }
}

/// Nearest rank on sorted samples: the smallest sample with at least `p`% of samples at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let summary = Summary::of(&mut samples);
        assert_eq!(summary, Summary { count: 100, p50: 50.0, p99: 99.0, max: 100.0 });
        assert_eq!(Summary::of(&mut [7.0]), Summary { count: 1, p50: 7.0, p99: 7.0, max: 7.0 });
        assert_eq!(Summary::of(&mut []).count, 0);
    }
}
