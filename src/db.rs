//! ClickHouse client construction, shared by the writer, migrations, salts and admin
//! tasks.
//!
//! The `clickhouse` crate has no per-request timeout for queries (inserts have
//! `with_timeouts`), so every call site bounds its request with [`timed`]. The HTTP
//! connector gets a connect timeout of its own so an address that drops SYNs fails
//! fast instead of eating the whole request budget.
//!
//! `https://` URLs (ClickHouse Cloud, servers behind TLS) use rustls with the
//! operating system's trust store plus the Mozilla roots, so a minimal container
//! without CA certificates still verifies well-known certificate authorities.

use std::future::Future;
use std::time::Duration;

use clickhouse::Client;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{ClickHouseConfig, Compression};

/// Upper bound on establishing a TCP connection, whatever the request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed before ClickHouse's own keep-alive timeout
/// (3 s on old servers, 10 s since 23.11) so we never write into a socket the server
/// is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_millis(2_500);
/// The writer keeps one insert in flight and a few queries run beside it; more idle
/// sockets than this only cost the server file descriptors.
const POOL_MAX_IDLE_PER_HOST: usize = 8;
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A client for `cfg.database`.
pub fn client(cfg: &ClickHouseConfig) -> Client {
    server_client(cfg).with_database(&cfg.database)
}

/// A client with no database selected, for `CREATE DATABASE`.
pub fn server_client(cfg: &ClickHouseConfig) -> Client {
    let timeout = request_timeout(cfg);
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout.min(MAX_CONNECT_TIMEOUT)));
    connector.set_keepalive(Some(TCP_KEEPALIVE));
    // Inserts stream many small chunks; Nagle would only add latency.
    connector.set_nodelay(true);
    // The TLS layer below decides per URL scheme; the TCP connector must not refuse
    // https itself.
    connector.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config().clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    let http = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .build(https);

    let mut client = Client::with_http_client(http)
        .with_url(&cfg.url)
        .with_compression(match cfg.compression {
            Compression::Lz4 => clickhouse::Compression::Lz4,
            Compression::None => clickhouse::Compression::None,
        })
        .with_product_info("hush", env!("CARGO_PKG_VERSION"));
    if !cfg.user.is_empty() {
        client = client.with_user(&cfg.user);
    }
    if !cfg.password.is_empty() {
        client = client.with_password(&cfg.password);
    }
    client
}

/// TLS client settings: the system's trust store plus the bundled Mozilla roots.
/// Built once per process: reading the system store costs milliseconds, and the
/// writer, migrations, salts and admin tasks each build a client.
fn tls_config() -> &'static rustls::ClientConfig {
    static CONFIG: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    CONFIG.get_or_init(build_tls_config)
}

fn build_tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Unreadable system certificates only narrow the trust store; the bundled roots
    // still verify public CAs, and a private CA then fails loudly at connect time.
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "cannot load a system CA certificate");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
    .unwrap_or_else(|error| unreachable!("ring supports the default TLS versions: {error}"))
}

/// The configured per-request timeout.
pub fn request_timeout(cfg: &ClickHouseConfig) -> Duration {
    Duration::from_millis(cfg.request_timeout_ms)
}

/// Runs one ClickHouse request with a deadline; an expired deadline is reported as the
/// crate's own [`clickhouse::error::Error::TimedOut`] so callers handle one error type.
pub async fn timed<T>(
    timeout: Duration,
    request: impl Future<Output = clickhouse::error::Result<T>>,
) -> clickhouse::error::Result<T> {
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result,
        Err(_elapsed) => Err(clickhouse::error::Error::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn timed_reports_an_expired_deadline_as_timed_out() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(1)
        };
        let err = timed(Duration::from_millis(10), slow).await.unwrap_err();
        assert!(matches!(err, clickhouse::error::Error::TimedOut), "{err}");
        let fast = async { Ok::<_, clickhouse::error::Error>(7) };
        assert_eq!(timed(Duration::from_secs(1), fast).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn https_urls_speak_tls() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let first_byte = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.read_u8().await.unwrap()
        });
        let cfg = ClickHouseConfig {
            url: format!("https://127.0.0.1:{port}"),
            request_timeout_ms: 2_000,
            ..ClickHouseConfig::default()
        };
        // The fake server never answers: the query fails, but what it sent first tells
        // whether the client opened with a TLS handshake record (0x16) or plain HTTP.
        let _ = timed(
            request_timeout(&cfg),
            client(&cfg).query("SELECT 1").fetch_one::<u8>(),
        )
        .await;
        let first_byte = tokio::time::timeout(Duration::from_secs(10), first_byte)
            .await
            .expect("the client never connected")
            .unwrap();
        assert_eq!(first_byte, 0x16, "expected a TLS ClientHello");
    }

    #[tokio::test]
    async fn connection_refused_is_an_error_not_a_hang() {
        // Bind then drop a listener: the port is closed for the rest of the test.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let cfg = ClickHouseConfig {
            url: format!("http://127.0.0.1:{port}"),
            request_timeout_ms: 5_000,
            ..ClickHouseConfig::default()
        };
        let err = timed(
            request_timeout(&cfg),
            client(&cfg).query("SELECT 1").fetch_one::<u8>(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, clickhouse::error::Error::Network(_)),
            "expected a network error, got {err}"
        );
    }
}
