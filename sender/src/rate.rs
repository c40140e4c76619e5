//! Parsing of link rates written as bits per second with k/M/G suffixes, and of the
//! objects-per-second pace (`--max-objects-rate`, `--objects-burst`).

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

/// Why an objects-per-second rate or burst was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ObjectRateError {
    /// Not a positive number of objects per second.
    #[error("invalid objects rate {0:?}: write objects per second as a number above zero, e.g. 500 (size it below the commit rate `gapferry-recv status` shows)")]
    Rate(String),
    /// Not a whole number of objects of at least one.
    #[error(
        "invalid objects burst {0:?}: write a whole number of objects of at least 1, e.g. 4096"
    )]
    Burst(String),
}

/// Parses `500` or `2.5` objects per second (above zero, at most a million).
pub fn parse_objects_rate(s: &str) -> Result<f64, ObjectRateError> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| ObjectRateError::Rate(s.to_string()))?;
    if !v.is_finite() || v <= 0.0 || v > 1e6 {
        return Err(ObjectRateError::Rate(s.to_string()));
    }
    Ok(v)
}

/// Parses a burst of objects: a whole number from 1 to 2^24.
pub fn parse_objects_burst(s: &str) -> Result<u32, ObjectRateError> {
    match s.trim().parse::<u32>() {
        Ok(v @ 1..=16_777_216) => Ok(v),
        _ => Err(ObjectRateError::Burst(s.to_string())),
    }
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

    #[test]
    fn objects_rates_and_bursts_refuse_zero_negative_and_garbage() {
        assert_eq!(parse_objects_rate("500"), Ok(500.0));
        assert_eq!(parse_objects_rate(" 2.5 "), Ok(2.5));
        for bad in ["0", "-5", "fast", "", "nan", "inf", "1e9", "0.0"] {
            let e = parse_objects_rate(bad).unwrap_err().to_string();
            assert!(
                e.contains("objects per second as a number above zero"),
                "{bad}: {e}"
            );
        }
        assert_eq!(parse_objects_burst("4096"), Ok(4096));
        for bad in ["0", "-1", "1.5", "many", "", "99999999999"] {
            let e = parse_objects_burst(bad).unwrap_err().to_string();
            assert!(
                e.contains("whole number of objects of at least 1"),
                "{bad}: {e}"
            );
        }
    }
}
