//! Observability for both binaries: serving a Prometheus registry over HTTP (`GET
//! /metrics`, text exposition format) on a thread of its own for `--metrics ADDR`, and the
//! log setup behind `--log-format` ([`logging`]).

pub mod logging;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

pub use prometheus_client;

/// Content type of the text exposition format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders `registry` in the text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}

/// Serves `registry` at `http://addr/metrics` until the process exits; returns the bound address.
///
/// `refresh` runs before every scrape, to update gauges computed on demand (ages, depths).
pub fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    refresh: impl Fn() + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("metrics server bound to a non-IP address"))?;
    std::thread::Builder::new()
        .name("gapferry-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response =
                    if request.url() == "/metrics" || request.url().starts_with("/metrics?") {
                        refresh();
                        let header = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            CONTENT_TYPE.as_bytes(),
                        )
                        .expect("static header");
                        tiny_http::Response::from_string(render(&registry)).with_header(header)
                    } else {
                        tiny_http::Response::from_string("gapferry metrics are at /metrics\n")
                            .with_status_code(404)
                    };
                if let Err(e) = request.respond(response) {
                    tracing::debug!("metrics response failed: {e}");
                }
            }
        })?;
    tracing::info!(%bound, "serving Prometheus metrics at /metrics");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use std::io::{Read, Write};

    #[test]
    fn serves_the_registry_over_http() {
        let mut registry = Registry::default();
        let c: Counter = Counter::default();
        registry.register("gapferry_test_things", "Things counted", c.clone());
        c.inc_by(41);
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(registry),
            move || {
                c.inc();
            },
        )
        .unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.contains("gapferry_test_things_total 42"), "{body}");
    }
}
