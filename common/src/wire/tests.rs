//! Tests of the datagram layout: round trips, every refusal, both tag schemes.
use super::*;

fn header() -> DataHeader {
    DataHeader {
        session: 0x0102_0304_0506_0708,
        object: 9,
        block: 3,
        esi: 1234,
        block_len: 5000,
        plain_len: 9000,
        codec: Codec::Zstd,
    }
}

/// A datagram as a sender of the first tag scheme wrote it: keyed blake3, flag 0x01.
fn blake3_tagged(key: &Key) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_data(&mut buf, &header(), &[0xCD; 64], Some(key));
    buf.truncate(buf.len() - TAG_LEN);
    buf[4] = tag_flags(TagScheme::Blake3);
    let tag = key.tag(TagScheme::Blake3, &buf);
    buf.extend_from_slice(&tag);
    buf
}

#[test]
fn senders_tag_with_gcm_siv_and_receivers_still_take_blake3_tags() {
    let key = Key::from_bytes([9; 32]);
    let ring = KeyRing::new(vec![key.clone()]);
    let mut current = Vec::new();
    encode_data(&mut current, &header(), &[0xCD; 64], Some(&key));
    assert_eq!(current[4], FLAG_TAGGED | FLAG_TAG_SIV);
    let old = blake3_tagged(&key);
    for buf in [&current, &old] {
        assert!(matches!(parse(buf, &ring), Ok(Datagram::Data { .. })));
    }
    // The scheme bit is covered by the tag: moving a datagram to the other scheme
    // (or dropping the bit) breaks it, whichever way.
    for (buf, flip) in [(&current, FLAG_TAG_SIV), (&old, FLAG_TAG_SIV)] {
        let mut forged = buf.clone();
        forged[4] ^= flip;
        assert_eq!(parse(&forged, &ring).unwrap_err(), Reject::BadTag);
    }
    // Without keys the tag is ignored, but the scheme bit alone is not a datagram.
    let open = KeyRing::default();
    assert!(parse(&current, &open).is_ok() && parse(&old, &open).is_ok());
    let mut plain = Vec::new();
    encode_data(&mut plain, &header(), &[0xCD; 64], None);
    plain[4] = FLAG_TAG_SIV;
    assert!(matches!(parse(&plain, &open), Err(Reject::Malformed(_))));
    // Another key's tag of either scheme is refused.
    let other = KeyRing::new(vec![Key::from_bytes([8; 32])]);
    for buf in [&current, &old] {
        assert_eq!(parse(buf, &other).unwrap_err(), Reject::BadTag);
    }
}

#[test]
fn data_round_trip_with_and_without_key() {
    let key = Key::from_bytes([9; 32]);
    for k in [None, Some(&key)] {
        let mut buf = Vec::new();
        encode_data(&mut buf, &header(), &[0xAB; 64], k);
        assert_eq!(buf.len(), DATA_HEADER_LEN + 64 + k.map_or(0, |_| TAG_LEN));
        let ring = KeyRing::new(k.into_iter().cloned().collect());
        match parse(&buf, &ring).unwrap() {
            Datagram::Data { header: h, symbol } => {
                assert_eq!(h, header());
                assert_eq!(symbol, &[0xAB; 64][..]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn the_layout_is_the_documented_one() {
    let mut buf = Vec::new();
    encode_data(&mut buf, &header(), &[0xEE; 8], None);
    assert_eq!(&buf[0..8], &[b'G', b'F', 2, 1, 0, 0, 0, 0]);
    assert_eq!(&buf[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&buf[16..20], &[0, 0, 0, 9]);
    assert_eq!(&buf[20..24], &[0, 0, 0, 3]);
    assert_eq!(&buf[24..28], &1234u32.to_be_bytes());
    assert_eq!(&buf[28..32], &5000u32.to_be_bytes());
    assert_eq!(&buf[32..36], &9000u32.to_be_bytes());
    assert_eq!(&buf[36..40], &[1, 0, 0, 0]);
}

#[test]
fn rejects_tampering_and_missing_tags() {
    let key = Key::from_bytes([9; 32]);
    let ring = KeyRing::new(vec![key.clone()]);
    let mut buf = Vec::new();
    encode_data(&mut buf, &header(), &[1; 32], Some(&key));
    let mut bad = buf.clone();
    bad[30] ^= 1;
    assert_eq!(parse(&bad, &ring), Err(Reject::BadTag));
    let mut plain = Vec::new();
    encode_data(&mut plain, &header(), &[1; 32], None);
    assert_eq!(parse(&plain, &ring), Err(Reject::MissingTag));
    let wrong = KeyRing::new(vec![Key::from_bytes([8; 32])]);
    assert_eq!(parse(&buf, &wrong), Err(Reject::BadTag));
}

#[test]
fn tagged_datagrams_name_their_key_and_retired_keys_are_refused_as_such() {
    let (old, new) = (Key::from_bytes([8; 32]), Key::from_bytes([9; 32]));
    assert_eq!(format!("{:02x}", new.hint()), new.id()[..2]);
    let mut buf = Vec::new();
    encode_data(&mut buf, &header(), &[1; 32], Some(&new));
    assert_eq!(buf[5], new.hint(), "byte 5 carries the key's hint");
    let mut ctl = Vec::new();
    encode_control(&mut ctl, DatagramType::Heartbeat, 1, 0, &[0; 4], Some(&old));
    assert_eq!(ctl[5], old.hint());
    // Rolled over: the new key accepted, the old one retired.
    let ring = KeyRing::new(vec![new.clone()]).with_retired(vec![old.clone()]);
    assert!(parse(&buf, &ring).is_ok());
    assert_eq!(parse(&ctl, &ring), Err(Reject::RetiredKey));
    // A key neither accepted nor retired is a bad tag; a forged hint changes nothing
    // but the order the keys are tried in (the hint is inside the tag).
    let other = KeyRing::new(vec![Key::from_bytes([7; 32])]);
    assert_eq!(parse(&ctl, &other), Err(Reject::BadTag));
    let mut hinted = buf.clone();
    hinted[5] ^= 0xFF;
    assert_eq!(parse(&hinted, &ring), Err(Reject::BadTag));
    // Untagged datagrams keep byte 5 at zero.
    let mut plain = Vec::new();
    encode_data(&mut plain, &header(), &[1; 32], None);
    assert_eq!(plain[5], 0);
    plain[5] = 1;
    assert!(matches!(
        parse(&plain, &KeyRing::default()),
        Err(Reject::Malformed(_))
    ));
}

#[test]
fn coalesced_batches_split_back_into_datagrams() {
    let mut batch = Vec::new();
    let mut one = Vec::new();
    for esi in 0..5 {
        encode_data(
            &mut one,
            &DataHeader { esi, ..header() },
            &[esi as u8; 100],
            None,
        );
        batch.extend_from_slice(&one);
    }
    // A shorter last segment, as GSO allows.
    encode_data(&mut one, &DataHeader { esi: 5, ..header() }, &[5; 20], None);
    batch.extend_from_slice(&one);
    let parts = split_coalesced(&batch);
    assert_eq!(parts.len(), 6);
    for (i, p) in parts.iter().enumerate() {
        let Ok(Datagram::Data { header: h, symbol }) = parse(p, &KeyRing::default()) else {
            panic!()
        };
        assert_eq!(h.esi, i as u32);
        assert!(symbol.iter().all(|&b| b == i as u8));
    }
    // A single datagram, or one whose symbol happens to hold a magic, stays whole.
    encode_data(
        &mut one,
        &header(),
        b"GF\x01\x01 not a second datagram at all, just bytes...",
        None,
    );
    assert_eq!(split_coalesced(&one), vec![&one[..]]);
    assert_eq!(split_coalesced(b"short"), vec![&b"short"[..]]);
    // Copies of a control datagram split by their stated length.
    let mut c = Vec::new();
    encode_control(&mut c, DatagramType::Descriptor, 7, 1, b"body", None);
    let three = [c.clone(), c.clone(), c.clone()].concat();
    assert_eq!(split_coalesced(&three), vec![&c[..], &c[..], &c[..]]);
}

#[test]
fn rejects_malformed_headers() {
    let none = KeyRing::default();
    let mut buf = Vec::new();
    encode_data(&mut buf, &header(), &[1; 16], None);
    assert_eq!(parse(&buf[..10], &none), Err(Reject::TooShort));
    assert_eq!(parse(&buf[..DATA_HEADER_LEN], &none), Err(Reject::TooShort));
    let mut b = buf.clone();
    b[0] = b'X';
    assert_eq!(parse(&b, &none), Err(Reject::BadMagic));
    for v in [0, VERSION + 1, 0xff] {
        let mut b = buf.clone();
        b[2] = v;
        assert_eq!(parse(&b, &none), Err(Reject::BadVersion(v)));
    }
    // A version-1 sender's datagrams are still read.
    let mut b = buf.clone();
    b[2] = OLDEST_VERSION;
    assert!(parse(&b, &none).is_ok());
    let mut b = buf.clone();
    b[3] = 77;
    assert_eq!(parse(&b, &none), Err(Reject::BadType(77)));
    let mut b = buf.clone();
    b[24..28].copy_from_slice(&(MAX_ESI + 1).to_be_bytes());
    assert!(matches!(parse(&b, &none), Err(Reject::Malformed(_))));
    let mut b = buf.clone();
    b[36] = 9;
    assert!(matches!(parse(&b, &none), Err(Reject::Malformed(_))));
    let mut c = Vec::new();
    encode_control(&mut c, DatagramType::Heartbeat, 1, 0, b"abc", None);
    assert!(parse(&c, &none).is_ok());
    c.push(0);
    assert!(matches!(parse(&c, &none), Err(Reject::Malformed(_))));
}
