//! Parsing of link rates written as bits per second with k/M/G suffixes.

use thiserror::Error;

/// Why a rate string was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid rate {0:?}: write bits per second as a number with an optional k, M or G suffix, e.g. 800M")]
pub struct RateError(pub String);

/// Parses `800M`, `1.5G`, `500k` or `100000000` into bits per second (decimal prefixes).
pub fn parse_rate(s: &str) -> Result<u64, RateError> {
    let err = || RateError(s.to_string());
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let num = num.strip_suffix("bit").unwrap_or(num).trim();
    let v: f64 = num.parse().map_err(|_| err())?;
    let bits = v * mult;
    if !bits.is_finite() || !(1000.0..=1e12).contains(&bits) {
        return Err(err());
    }
    Ok(bits as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse_rate("800M"), Ok(800_000_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert_eq!(parse_rate("100000000"), Ok(100_000_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-5M").is_err());
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("").is_err());
    }
}
