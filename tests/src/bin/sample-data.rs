//! `gapferry-sample-data DIR`: writes the demo's sample files (empty, small JSON, a tree,
//! a 64 MiB random file) so the demo needs no data from outside.

use gapferry_tests::fixtures::{json_file, random_file};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: gapferry-sample-data DIR"))?
        .into();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("empty.txt"), b"")?;
    for i in 0..20u64 {
        json_file(
            &dir.join(format!("events/event-{i:02}.json")),
            2_000 + 1_500 * i as usize,
            i,
        );
    }
    random_file(&dir.join("images/sample-image.bin"), 64 << 20, 1);
    random_file(&dir.join("misc/one-byte.bin"), 1, 2);
    json_file(&dir.join("misc/bundle.json"), 300_000, 3);
    println!("sample data written to {}", dir.display());
    Ok(())
}
