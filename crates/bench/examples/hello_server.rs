//! Minimal hyper 1.x "Hello, World!" server used by `benches/bench_vs_wrk.sh`
//! as the target for wrk and `ferrocorn-bench`.
//!
//! Usage: `hello_server PORT [DELAY_MS] [THREADS]` — listens on 127.0.0.1:PORT
//! (0 picks a free port), answers every request with a 13-byte body after
//! DELAY_MS milliseconds (default 0; slept precisely on a blocking thread),
//! on a THREADS-worker runtime (default 2).
//! Prints `listening on 127.0.0.1:PORT` once ready.

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| -> u64 {
        args.get(i).map_or(default, |s| s.parse().expect("numeric argument"))
    };
    let port = arg(0, 8080) as u16;
    let delay = Duration::from_millis(arg(1, 0));
    let threads = arg(2, 2).max(1) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind 127.0.0.1");
        println!("listening on {}", listener.local_addr().expect("local addr"));
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    if !delay.is_zero() {
                        // A blocking-pool thread sleeps precisely (hrtimer);
                        // tokio's timer wheel would round up to whole ms and
                        // answer after ~21 ms instead of 20.
                        let _ =
                            tokio::task::spawn_blocking(move || std::thread::sleep(delay)).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"Hello, World!",
                    ))))
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}
