//! Prerequisites of tests that need root, network namespaces, tools or Python: under
//! `CI=true` a missing one fails the test loudly; on a developer machine the test prints
//! `skipping: <reason>` and returns.

/// Whether this runs under CI (`CI=true` or `CI=1`), where nothing may be skipped.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `Some(v)` when `r` is Ok; otherwise panics under CI and prints `skipping:` elsewhere.
pub fn require<T>(r: Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(reason) if ci() => panic!("this test cannot run under CI=true: {reason}"),
        Err(reason) => {
            println!("skipping: {reason}");
            None
        }
    }
}
