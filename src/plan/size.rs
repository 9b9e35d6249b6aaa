//! Byte sizes as users type them (`8`, `64K`, `1M`, `8G`, binary multiples like nccl-tests) and
//! the sweep of sizes they span.

/// Parses `N[K|M|G|T][B|iB]` with binary multipliers (K = 1024), as nccl-tests does.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty size".into());
    }
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(format!("'{t}' does not start with a number"));
    }
    let number: u64 = t[..digits_end]
        .parse()
        .map_err(|_| format!("'{t}' is too large"))?;
    let suffix = t[digits_end..].to_ascii_lowercase();
    let shift = match suffix.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown size suffix '{other}' in '{t}'")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{t}' is too large"))
}

/// Formats bytes the short way users type them back (`64M`, `1536`, `3K`).
pub fn format_size(bytes: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        let unit = 1u64 << shift;
        if bytes >= unit && bytes % unit == 0 {
            return format!("{}{}", bytes / unit, suffix);
        }
    }
    bytes.to_string()
}

/// How the sweep advances from one size to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// size *= factor (nccl-tests `-f`)
    Factor(u64),
    /// size += bytes (nccl-tests `-i`)
    Bytes(u64),
}

/// Every size from `min` to `max` inclusive, advancing by `step`, like nccl-tests' size loop;
/// stops after `limit` sizes so a runaway step is refused, not allocated.
pub fn sweep_sizes(min: u64, max: u64, step: Step, limit: usize) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut size = min;
    while size <= max && sizes.len() < limit {
        sizes.push(size);
        let next = match step {
            Step::Factor(f) => size.checked_mul(f),
            Step::Bytes(b) => size.checked_add(b),
        };
        match next {
            Some(n) if n > size => size = n,
            _ => break,
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_suffixes() {
        assert_eq!(parse_size("8").unwrap(), 8);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("512B").unwrap(), 512);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("10X").is_err());
        assert!(parse_size("-5").is_err());
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999T").is_err());
    }

    #[test]
    fn sweeps_like_nccl_tests() {
        assert_eq!(sweep_sizes(8, 64, Step::Factor(2), 99), vec![8, 16, 32, 64]);
        assert_eq!(
            sweep_sizes(8, 100, Step::Factor(2), 99),
            vec![8, 16, 32, 64]
        );
        assert_eq!(sweep_sizes(1, 10, Step::Bytes(4), 99), vec![1, 5, 9]);
        assert_eq!(sweep_sizes(64, 64, Step::Factor(2), 99), vec![64]);
        assert_eq!(sweep_sizes(8, 64 << 20, Step::Factor(2), 99).len(), 24);
        assert_eq!(sweep_sizes(1, 1 << 30, Step::Bytes(1), 10).len(), 10);
    }

    #[test]
    fn formats_round_trip() {
        for s in ["8", "64K", "3M", "1G", "1536"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
    }
}
