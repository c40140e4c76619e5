//! `gapferry-lossy-relay`: a UDP relay that drops a share of datagrams, for demos.

use clap::Parser;
use gapferry_tests::relay::{random_loss, Relay};
use std::net::SocketAddr;
use std::time::Duration;

/// Relays UDP from an ephemeral loopback port to --to, losing --loss percent at random.
#[derive(Parser)]
struct Args {
    /// Where to forward.
    #[arg(long)]
    to: SocketAddr,
    /// Percent of datagrams to lose.
    #[arg(long, default_value_t = 5.0)]
    loss: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// File to write the relay's listening address into.
    #[arg(long)]
    addr_file: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let relay = Relay::start(a.to, random_loss(a.loss, a.seed))?;
    if let Some(f) = &a.addr_file {
        std::fs::write(f, relay.addr().to_string())?;
    }
    println!("{}", relay.addr());
    let mut last = (0, 0);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let c = relay.counts();
        if c != last {
            eprintln!("relay: {} datagrams seen, {} dropped", c.0, c.1);
            last = c;
        }
    }
}
