//! What the two balancer floors (`relay_floor`, `pipeline_floor`) share: their command line
//! (`PORT UPSTREAM_PORT[,UPSTREAM_PORT...] [THREADS]`), one listener on 127.0.0.1:PORT shared
//! by THREADS single-threaded runtimes (one per balancer worker), and writing a whole buffer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

/// Parse the command line, listen, print `listening on 127.0.0.1:PORT`, and run `serve` on
/// each thread's runtime (inside a `LocalSet`) with the listener and the upstreams' addresses.
pub fn run<S, F>(serve: S)
where
    S: Fn(TcpListener, Arc<[SocketAddr]>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + 'static,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args.first().map_or(8080, |s| s.parse().expect("numeric PORT"));
    let upstreams: Arc<[SocketAddr]> = args
        .get(1)
        .expect("UPSTREAM_PORT[,UPSTREAM_PORT...]")
        .split(',')
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p.parse().expect("numeric upstream port"))))
        .collect();
    let threads: usize = args.get(2).map_or(2, |s| s.parse().expect("numeric THREADS")).max(1);

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind 127.0.0.1");
    listener.set_nonblocking(true).expect("non-blocking listener");
    println!("listening on {}", listener.local_addr().expect("local addr"));
    let serve = Arc::new(serve);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let listener = listener.try_clone().expect("clone listener");
            let (serve, upstreams) = (Arc::clone(&serve), Arc::clone(&upstreams));
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .expect("runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let listener = TcpListener::from_std(listener).expect("register listener");
                    serve(listener, upstreams).await;
                });
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
}

/// Write all of `bytes`, waiting while the socket's buffer is full.
pub async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
