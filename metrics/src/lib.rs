//! Observability for both binaries: serving a Prometheus registry (`GET /metrics`, text
//! exposition format) and the daemon's health (`GET /healthz`) over HTTP for
//! `--metrics ADDR`, on the control plane's own thread and tokio runtime. (The log setup
//! behind `--log-format` is `gapferry-shell`'s.)
#![warn(missing_docs)]

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

pub use prometheus_client;

/// Label of a per-lane metric: the lane's address (the sender's `--to`, the receiver's
/// `--bind`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct LaneLabel {
    /// The lane's address.
    pub lane: String,
}

/// Content type of the text exposition format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders `registry` in the text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}

/// Whether the daemon can do its job now; `Err` says why not (for `GET /healthz`).
pub type HealthCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serves `registry` at `http://addr/metrics` and the daemon's health at `/healthz` until
/// the process exits; returns the bound address.
///
/// `refresh` runs before every scrape, to update gauges computed on demand (ages, depths);
/// `health` answers `/healthz` (200 `ok`, or 503 with the reasons). Both run on the
/// control plane's thread, a single-threaded tokio runtime apart from the data plane.
pub fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    refresh: impl Fn() + Send + Sync + 'static,
    health: impl Fn() -> Result<(), String> + Send + Sync + 'static,
) -> std::io::Result<SocketAddr> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let bound = serve_on(runtime.handle(), addr, registry, refresh, health)?;
    std::thread::Builder::new()
        .name("gapferry-control".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(bound)
}

/// [`serve`] on a runtime the daemon already runs for its control plane (the sender's
/// watch service), so one daemon has one runtime; the endpoint lives as long as it.
pub fn serve_on(
    runtime: &tokio::runtime::Handle,
    addr: SocketAddr,
    registry: Arc<Registry>,
    refresh: impl Fn() + Send + Sync + 'static,
    health: impl Fn() -> Result<(), String> + Send + Sync + 'static,
) -> std::io::Result<SocketAddr> {
    // Bound here, so a taken port is the caller's error, not a log line from a thread.
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let endpoint = Arc::new(Endpoint {
        registry,
        refresh: Box::new(refresh),
        health: Box::new(health),
    });
    runtime.spawn(accept(listener, endpoint));
    tracing::info!(%bound, "serving Prometheus metrics at /metrics and health at /healthz");
    Ok(bound)
}

/// Accepts connections and answers their requests until the runtime stops.
async fn accept(listener: std::net::TcpListener, endpoint: Arc<Endpoint>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics endpoint stopped: {e}");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("metrics accept failed: {e}");
                continue;
            }
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = endpoint.respond(&req);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("metrics connection ended: {e}");
            }
        });
    }
}

/// What the endpoint serves.
struct Endpoint {
    registry: Arc<Registry>,
    refresh: Box<dyn Fn() + Send + Sync>,
    health: HealthCheck,
}

type Body = http_body_util::Full<hyper::body::Bytes>;

impl Endpoint {
    /// The response to one request.
    fn respond<B>(&self, req: &hyper::Request<B>) -> hyper::Response<Body> {
        let reply = |status: u16, content_type: &str, body: String| {
            hyper::Response::builder()
                .status(status)
                .header("Content-Type", content_type)
                .body(Body::new(body.into()))
                .expect("static parts")
        };
        const TEXT: &str = "text/plain; charset=utf-8";
        if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
            return reply(405, TEXT, "only GET is served\n".into());
        }
        match req.uri().path() {
            "/metrics" => {
                (self.refresh)();
                reply(200, CONTENT_TYPE, render(&self.registry))
            }
            "/healthz" => match (self.health)() {
                Ok(()) => reply(200, TEXT, "ok\n".into()),
                Err(why) => reply(503, TEXT, format!("unhealthy: {why}\n")),
            },
            _ => reply(404, TEXT, "gapferry serves /metrics and /healthz\n".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }

    #[test]
    fn serves_the_registry_and_health_over_http() {
        let mut registry = Registry::default();
        let c: Counter = Counter::default();
        registry.register("gapferry_test_things", "Things counted", c.clone());
        c.inc_by(41);
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let h = healthy.clone();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(registry),
            move || {
                c.inc();
            },
            move || {
                if h.load(std::sync::atomic::Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("link down".into())
                }
            },
        )
        .unwrap();
        let body = get(addr, "/metrics");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("gapferry_test_things_total 42"), "{body}");
        let body = get(addr, "/healthz");
        assert!(
            body.starts_with("HTTP/1.1 200") && body.ends_with("ok\n"),
            "{body}"
        );
        healthy.store(false, std::sync::atomic::Ordering::Relaxed);
        let body = get(addr, "/healthz");
        assert!(body.starts_with("HTTP/1.1 503"), "{body}");
        assert!(body.contains("unhealthy: link down"), "{body}");
        assert!(get(addr, "/nothing").starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn a_taken_port_is_an_error_at_once() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let r = serve(addr, Arc::new(Registry::default()), || {}, || Ok(()));
        assert!(r.is_err());
    }
}
