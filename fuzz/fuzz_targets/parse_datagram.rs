//! Fuzzes `wire::parse` with and without a key ring. Beyond "never panics": under a key,
//! raw input is never accepted; input given a valid tag parses exactly as the same bytes
//! parse without a key; whatever is accepted re-encodes to the same bytes.
#![no_main]

use gapferry_common::auth::TAG_LEN;
use gapferry_common::wire::{self, Datagram, FLAG_TAGGED};
use gapferry_common::KeyRing;
use gapferry_fuzz::key;
use libfuzzer_sys::fuzz_target;

fn re_encode(d: &Datagram<'_>, tagged: bool) -> Vec<u8> {
    let k = key();
    let key = tagged.then_some(&k);
    let mut out = Vec::new();
    match d {
        Datagram::Data { header, symbol } => wire::encode_data(&mut out, header, symbol, key),
        Datagram::Control {
            kind,
            session,
            object,
            body,
        } => wire::encode_control(&mut out, *kind, *session, *object, body, key),
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let none = KeyRing::default();
    let ring = KeyRing::new(vec![gapferry_fuzz::key()]);

    let plain = wire::parse(data, &none);
    assert!(
        wire::parse(data, &ring).is_err(),
        "untagged fuzz input accepted under a key"
    );
    if let Ok(d) = &plain {
        let tagged = data[4] & FLAG_TAGGED != 0;
        if !tagged {
            assert_eq!(re_encode(d, false), data, "accepted bytes do not re-encode");
        }
    }

    // The same message with a valid tag: the key check passes, the rest must agree.
    let mut signed = data.to_vec();
    if signed.len() > 4 {
        signed[4] |= FLAG_TAGGED;
    }
    let tag = key().tag(gapferry_common::auth::TagScheme::Blake3, &signed);
    signed.extend_from_slice(&tag);
    let with_key = wire::parse(&signed, &ring);
    let without = wire::parse(&signed, &none);
    match (&with_key, &without) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert_eq!(
                re_encode(a, true),
                signed,
                "accepted bytes do not re-encode"
            );
            assert_eq!(signed.len(), re_encode(a, false).len() + TAG_LEN);
        }
        (Err(_), Err(_)) => {}
        _ => panic!("key ring changed the verdict: {with_key:?} vs {without:?}"),
    }
});
