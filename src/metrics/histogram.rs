//! A bounded HdrHistogram of nanosecond latencies that counts what it had to clamp, and travels
//! between processes as V2 bytes so a merge on rank 0 is exact.

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies above this (1000 s) are recorded as this value and counted as clamped.
pub const HIGHEST_TRACKABLE_NS: u64 = 1_000_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;
/// HdrHistogram's V2 encoding: cookie, payload length, offset, digits, lowest, highest, ratio.
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_HEADER: usize = 40;
/// 2^10 = half of the 2048 sub-buckets that 3 significant digits need.
const HALF_MAGNITUDE: u32 = 10;

/// The lowest value of counts slot `index` in our layout (lowest 1, 3 digits).
fn value_at_index(index: u64) -> u64 {
    let half = 1u64 << HALF_MAGNITUDE;
    let bucket = (index >> HALF_MAGNITUDE) as i64 - 1;
    let sub = (index & (half - 1)) + half;
    if bucket < 0 {
        sub - half
    } else {
        sub << bucket
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("histogram bytes too short ({0} bytes)")]
    Truncated(usize),
    #[error("histogram bytes do not decode: {0}")]
    Decode(String),
    #[error("histograms do not merge: {0}")]
    Merge(String),
}

#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
    clamped: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Percentiles of one histogram in microseconds.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Default)]
pub struct LatencySummary {
    pub samples: u64,
    pub clamped: u64,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub stdev_us: f64,
}

impl LatencyHistogram {
    pub fn new() -> Self {
        let mut hist = Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_NS, SIGNIFICANT_DIGITS)
            .expect("static histogram bounds are valid");
        hist.auto(false);
        LatencyHistogram { hist, clamped: 0 }
    }

    /// Records one latency; a value past the bound is recorded at the bound and counted.
    pub fn record(&mut self, ns: u64) {
        if ns > HIGHEST_TRACKABLE_NS {
            self.clamped += 1;
        }
        self.hist.saturating_record(ns.min(HIGHEST_TRACKABLE_NS));
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    pub fn inner(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// Adds every sample of `other` (exact: same bucket layout on every rank).
    pub fn merge(&mut self, other: &LatencyHistogram) -> Result<(), HistogramError> {
        self.hist
            .add(&other.hist)
            .map_err(|e| HistogramError::Merge(format!("{e:?}")))?;
        self.clamped += other.clamped;
        Ok(())
    }

    /// 8 bytes of clamped count (little endian), then the HdrHistogram V2 encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.clamped.to_le_bytes().to_vec();
        V2Serializer::new()
            .serialize(&self.hist, &mut out)
            .expect("serializing into a Vec cannot fail");
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<LatencyHistogram, HistogramError> {
        if bytes.len() < 8 {
            return Err(HistogramError::Truncated(bytes.len()));
        }
        let clamped = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let decoded: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[8..])
            .map_err(|e| HistogramError::Decode(format!("{e:?}")))?;
        // Re-home the samples into our fixed layout so later merges never resize.
        let mut h = LatencyHistogram::new();
        h.hist
            .add(&decoded)
            .map_err(|e| HistogramError::Merge(format!("{e:?}")))?;
        h.clamped = clamped;
        Ok(h)
    }

    /// Adds the samples of `to_bytes` output without building a histogram: the V2 payload's run-length
    /// counts go straight into this layout (the controller merges one upload per rank and size this way).
    /// Bytes from another layout take the general path.
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> Result<(), HistogramError> {
        if bytes.len() < 8 + V2_HEADER {
            return Err(HistogramError::Truncated(bytes.len()));
        }
        let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let be64 = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let payload = &bytes[8 + V2_HEADER..];
        let ours = be32(8) == V2_COOKIE
            && be32(12) as usize == payload.len()
            && be32(16) == 0
            && be32(20) == SIGNIFICANT_DIGITS as u32
            && be64(24) == 1
            && be64(32) == HIGHEST_TRACKABLE_NS
            && f64::from_bits(be64(40)) == 1.0;
        if !ours {
            return self.merge(&LatencyHistogram::from_bytes(bytes)?);
        }
        let clamped = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        // Decode into a list first so a corrupt payload adds nothing.
        let mut counts: Vec<(u64, u64)> = Vec::new();
        let (mut at, mut index) = (0usize, 0u64);
        let slots = self.hist.distinct_values() as u64;
        while at < payload.len() {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let Some(&b) = payload.get(at) else {
                    return Err(HistogramError::Decode(
                        "varint runs past the payload".into(),
                    ));
                };
                at += 1;
                if shift == 56 {
                    v |= (b as u64) << 56;
                    break;
                }
                v |= ((b & 0x7f) as u64) << shift;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
            let n = ((v >> 1) as i64) ^ -((v & 1) as i64);
            if n < 0 {
                index = index.saturating_add(n.unsigned_abs());
            } else {
                if n > 0 {
                    if index >= slots {
                        return Err(HistogramError::Decode(format!(
                            "count at index {index} beyond {slots}"
                        )));
                    }
                    counts.push((index, n as u64));
                }
                index += 1;
            }
        }
        for (i, n) in counts {
            self.hist
                .record_n(value_at_index(i), n)
                .map_err(|e| HistogramError::Merge(format!("{e:?}")))?;
        }
        self.clamped += clamped;
        Ok(())
    }

    pub fn summary(&self) -> LatencySummary {
        let us = |ns: f64| ns / 1000.0;
        if self.hist.is_empty() {
            return LatencySummary {
                samples: 0,
                clamped: self.clamped,
                min_us: 0.0,
                p50_us: 0.0,
                p90_us: 0.0,
                p99_us: 0.0,
                p999_us: 0.0,
                max_us: 0.0,
                mean_us: 0.0,
                stdev_us: 0.0,
            };
        }
        let q = |p: f64| us(self.hist.value_at_quantile(p) as f64);
        LatencySummary {
            samples: self.hist.len(),
            clamped: self.clamped,
            min_us: us(self.hist.min() as f64),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: us(self.hist.max() as f64),
            mean_us: us(self.hist.mean()),
            stdev_us: us(self.hist.stdev()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn merge_through_bytes_is_exact() {
        let mut seed = 7;
        let mut all = LatencyHistogram::new();
        let mut merged = LatencyHistogram::new();
        for _rank in 0..4 {
            let mut h = LatencyHistogram::new();
            for _ in 0..5000 {
                let v = 1000 + lcg(&mut seed) % 5_000_000;
                h.record(v);
                all.record(v);
            }
            let back = LatencyHistogram::from_bytes(&h.to_bytes()).unwrap();
            merged.merge(&back).unwrap();
        }
        assert_eq!(merged.len(), 20_000);
        assert_eq!(merged.inner(), all.inner());
        assert_eq!(merged.summary(), all.summary());
    }

    #[test]
    fn outliers_are_clamped_and_counted() {
        let mut h = LatencyHistogram::new();
        h.record(5);
        h.record(u64::MAX);
        let back = LatencyHistogram::from_bytes(&h.to_bytes()).unwrap();
        assert_eq!(back.clamped(), 1);
        assert_eq!(back.len(), 2);
        assert!(back.summary().max_us >= HIGHEST_TRACKABLE_NS as f64 / 1000.0 * 0.999);
    }

    #[test]
    fn percentiles_are_within_precision() {
        let mut h = LatencyHistogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let s = h.summary();
        assert!((s.p50_us - 500.0).abs() <= 0.5, "{s:?}");
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{s:?}");
        assert_eq!(s.min_us, 1.0);
        assert!((s.max_us - 1000.0).abs() <= 1.0);
    }

    #[test]
    fn merging_bytes_directly_equals_decoding() {
        let mut seed = 11;
        let mut direct = LatencyHistogram::new();
        let mut decoded = LatencyHistogram::new();
        for scale in [1u64, 1000, 1_000_000, 10_000_000_000] {
            let mut h = LatencyHistogram::new();
            for _ in 0..3000 {
                h.record(1 + lcg(&mut seed) % (50 * scale));
            }
            h.record(u64::MAX);
            h.record(1);
            h.record(2047);
            h.record(2048);
            let bytes = h.to_bytes();
            direct.merge_bytes(&bytes).unwrap();
            decoded
                .merge(&LatencyHistogram::from_bytes(&bytes).unwrap())
                .unwrap();
        }
        assert_eq!(direct.inner(), decoded.inner());
        assert_eq!(direct.clamped(), 4);
        assert_eq!(direct.summary(), decoded.summary());
        let good = LatencyHistogram::new().to_bytes();
        let mut bad = good.clone();
        bad.extend_from_slice(&[0x02, 0xff]);
        let len = (bad.len() - 8 - V2_HEADER) as u32;
        bad[12..16].copy_from_slice(&len.to_be_bytes());
        assert!(direct.merge_bytes(&bad).is_err());
        assert!(direct.merge_bytes(&good[..20]).is_err());
        assert_eq!(direct.inner(), decoded.inner());
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        assert!(LatencyHistogram::from_bytes(&[1, 2, 3]).is_err());
        assert!(LatencyHistogram::from_bytes(&[0; 40]).is_err());
    }
}
