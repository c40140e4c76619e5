//! Test data made on the fly: incompressible random bytes and MISP-event-like JSON.
//!
//! Everything is seeded, so two runs (and the micro-benchmarks) see the same bytes.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// `len` random (incompressible) bytes from `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// Writes a `len`-byte file of random bytes from `seed`, 1 MiB at a time.
pub fn write_random_file(path: &Path, len: u64, seed: u64) -> io::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        rng.fill_bytes(&mut chunk[..n]);
        w.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

const TYPES: [(&str, &str); 6] = [
    ("ip-dst", "Network activity"),
    ("domain", "Network activity"),
    ("url", "Network activity"),
    ("sha256", "Payload delivery"),
    ("md5", "Payload delivery"),
    ("filename|sha256", "Payload delivery"),
];
const WORDS: [&str; 16] = [
    "phishing",
    "campaign",
    "loader",
    "botnet",
    "c2",
    "ransomware",
    "dropper",
    "infra",
    "credential",
    "stealer",
    "banking",
    "trojan",
    "apt",
    "wiper",
    "exfil",
    "beacon",
];

fn hex(rng: &mut StdRng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        s.push_str(&format!("{:02x}", rng.random::<u8>()));
    }
    s
}

fn uuid(rng: &mut StdRng) -> String {
    let h = hex(rng, 16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn word(rng: &mut StdRng) -> &'static str {
    WORDS[rng.random_range(0..WORDS.len())]
}

fn attribute(rng: &mut StdRng, ts: u64) -> String {
    let (ty, category) = TYPES[rng.random_range(0..TYPES.len())];
    let value = match ty {
        "ip-dst" => format!(
            "{}.{}.{}.{}",
            rng.random_range(1..224),
            rng.random::<u8>(),
            rng.random::<u8>(),
            rng.random_range(1..255)
        ),
        "domain" => format!(
            "{}-{}{}.example.com",
            word(rng),
            word(rng),
            rng.random_range(0..999)
        ),
        "url" => format!(
            "https://{}{}.example.net/{}/{}.php",
            word(rng),
            rng.random_range(0..99),
            word(rng),
            hex(rng, 4)
        ),
        "sha256" => hex(rng, 32),
        "md5" => hex(rng, 16),
        _ => format!(
            "{}_{}.exe|{}",
            word(rng),
            rng.random_range(0..99),
            hex(rng, 32)
        ),
    };
    format!(
        concat!(
            r#"{{"uuid":"{}","type":"{}","category":"{}","to_ids":{},"#,
            r#""distribution":"5","timestamp":"{}","comment":"","deleted":false,"#,
            r#""disable_correlation":false,"object_relation":null,"value":"{}"}}"#
        ),
        uuid(rng),
        ty,
        category,
        rng.random_bool(0.7),
        ts - rng.random_range(0..86_400),
        value
    )
}

/// One MISP-event-like JSON document of exactly `len` bytes (at least 600).
pub fn json_object(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let ts = 1_700_000_000 + rng.random_range(0..50_000_000u64);
    let head = format!(
        concat!(
            r#"{{"Event":{{"uuid":"{}","info":"{} {} {} report","date":"2024-0{}-1{}","#,
            r#""threat_level_id":"{}","analysis":"2","published":true,"timestamp":"{}","#,
            r#""Orgc":{{"name":"CIRCL","uuid":"55f6ea5e-2c60-40e5-964f-47a8950d210f"}},"#,
            r#""Tag":[{{"name":"tlp:white"}},{{"name":"misp-galaxy:threat-actor=\"{}\""}}],"#,
            r#""Attribute":["#
        ),
        uuid(&mut rng),
        word(&mut rng),
        word(&mut rng),
        word(&mut rng),
        rng.random_range(1..10),
        rng.random_range(0..10),
        rng.random_range(1..5),
        ts,
        word(&mut rng)
    );
    let tail_fixed = r#"],"comment":""}}"#;
    let mut out = head;
    let mut first = true;
    loop {
        let a = attribute(&mut rng, ts);
        let extra = a.len() + usize::from(!first);
        if out.len() + extra + tail_fixed.len() > len {
            break;
        }
        if !first {
            out.push(',');
        }
        out.push_str(&a);
        first = false;
    }
    // Pad inside the trailing comment so the document is valid JSON of exactly `len` bytes.
    let pad = len.saturating_sub(out.len() + tail_fixed.len());
    out.push_str(r#"],"comment":""#);
    out.extend(std::iter::repeat_n(' ', pad));
    out.push_str(r#""}}"#);
    out.into_bytes()
}

/// Several JSON objects concatenated up to `len` bytes, as one compressible block.
pub fn json_block(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 10_000);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(&json_object(10_000, seed.wrapping_add(i)));
        out.push(b'\n');
        i += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_are_valid_and_exact() {
        for len in [600, 10_000, 12_345] {
            let doc = json_object(len, 7);
            assert_eq!(doc.len(), len);
            let v: serde_json::Value = serde_json::from_slice(&doc).expect("valid JSON");
            assert!(v["Event"]["Attribute"].is_array());
        }
        assert_eq!(json_object(10_000, 1), json_object(10_000, 1));
        assert_ne!(json_object(10_000, 1), json_object(10_000, 2));
    }

    #[test]
    fn random_data_is_deterministic() {
        assert_eq!(random_bytes(100, 3), random_bytes(100, 3));
        assert_eq!(json_block(50_000, 1).len(), 50_000);
    }
}
