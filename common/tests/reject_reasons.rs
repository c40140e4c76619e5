//! Rejected datagrams are counted by a `RejectReason`, an enum with a stable label, not
//! by an allocated string; counters keyed by it can still be looked up by label.

use gapferry_common::wire::{Reject, RejectReason};
use gapferry_common::{Assembler, KeyRing, Limits};
use std::time::Duration;

#[test]
fn rejections_are_counted_by_reason_and_found_by_label() {
    let mut a = Assembler::new(Limits::default(), KeyRing::default());
    let t = Duration::ZERO;
    for garbage in [&b"x"[..], &[0u8; 64][..], &[0xff; 30][..]] {
        assert!(a.handle(t, garbage).is_err());
    }
    let rejected = &a.stats().rejected;
    assert_eq!(a.stats().rejected_total(), 3);
    let by_label: u64 = ["too_short", "bad_magic"]
        .iter()
        .map(|l| rejected.get(*l).copied().unwrap_or(0))
        .sum();
    assert_eq!(by_label, 3, "{rejected:?}");
    assert_eq!(rejected.get("bad_tag"), None);
    assert_eq!(
        rejected.get(&RejectReason::TooShort),
        rejected.get("too_short")
    );
}

#[test]
fn every_reject_has_the_label_of_its_reason() {
    let all = [
        (Reject::TooShort, "too_short"),
        (Reject::TooLong, "too_long"),
        (Reject::BadMagic, "bad_magic"),
        (Reject::BadVersion(9), "bad_version"),
        (Reject::BadType(9), "bad_type"),
        (Reject::MissingTag, "missing_tag"),
        (Reject::BadTag, "bad_tag"),
        (Reject::RetiredKey, "retired_key"),
        (Reject::Replayed("x"), "replayed"),
        (Reject::Malformed("x"), "malformed"),
        (Reject::Refused("x"), "refused"),
    ];
    for (reject, label) in all {
        assert_eq!(reject.label(), label);
        assert_eq!(reject.reason().as_str(), label);
        assert_eq!(reject.reason().to_string(), label);
    }
    // The core's messages state facts: no command-line advice.
    for reject in [Reject::MissingTag, Reject::BadTag, Reject::RetiredKey] {
        assert!(!reject.to_string().contains("--"), "{reject}");
    }
}
