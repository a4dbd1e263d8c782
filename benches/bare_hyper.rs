//! The load test's baseline: the least an HTTP/1.1 collector on hyper 1 can do per
//! request. It reads the whole body and answers `202 ok`, nothing else: no routing,
//! no limits, no parsing, no storage. hush's throughput is reported as a share of
//! this server's on the same machine, same generator, same pinning.
//!
//! It is a `harness = false` bench target so that `cargo test` never builds it and
//! the load test builds it together with `hush` in one release invocation:
//!
//!     cargo build --release --bin hush --bench bare_hyper
//!     target/release/deps/bare_hyper-<hash> --listen 127.0.0.1:0 --port-file /tmp/port
//!
//! (`benches/load/run` finds the executable through cargo's JSON messages.) Without
//! `--listen` (as under `cargo bench`, which passes `--bench`) it exits at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Same defence as the collector: a body is read whole, so cap it.
const MAX_BODY_BYTES: usize = 256 * 1024;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES);
    let status = match body.collect().await {
        Ok(collected) => {
            std::hint::black_box(collected.to_bytes());
            StatusCode::ACCEPTED
        }
        Err(_) => StatusCode::BAD_REQUEST,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

struct Args {
    listen: Option<SocketAddr>,
    port_file: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        listen: None,
        port_file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--listen" => {
                let v = it.next().ok_or("--listen needs an address")?;
                out.listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--port-file" => {
                out.port_file = Some(it.next().ok_or("--port-file needs a path")?.into());
            }
            // Flags cargo bench passes to every bench target.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(out)
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        // The collector sets it too; without it small responses wait for Nagle.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bare_hyper: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let Some(listen) = args.listen else {
        println!("bare_hyper: load-test baseline server; run it with --listen ADDR");
        return std::process::ExitCode::SUCCESS;
    };
    // Same runtime shape as `hush serve`: multi-threaded, one worker per allowed core.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bare_hyper: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bare_hyper: cannot listen on {listen}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("bare_hyper: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        println!("listening on {addr}");
        // Written then renamed, so a poller never reads half an address.
        if let Some(path) = &args.port_file
            && let Err(e) = std::fs::write(path.with_extension("tmp"), addr.to_string())
                .and_then(|()| std::fs::rename(path.with_extension("tmp"), path))
        {
            eprintln!("bare_hyper: cannot write {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
        tokio::select! {
            () = serve(listener) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        std::process::ExitCode::SUCCESS
    })
}
