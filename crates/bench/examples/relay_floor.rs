//! The floor of what any HTTP/1 balancer can cost on this machine: a byte relay that pairs
//! each client connection with one upstream connection (round robin at accept) and copies
//! bytes both ways, with no HTTP parsing, no header rewriting, no pool and no policy.
//!
//! Per request it makes exactly the four system calls every non-pipelining balancer needs
//! (read the client, send to the upstream, read the upstream, send to the client): a read
//! that fills less than the buffer is taken to have drained the socket, so no read ever
//! comes back empty. It is not a proxy anyone should run (a request split across reads or a
//! response of more than one buffer is still relayed, but the pairing is fixed for the
//! connection's life); `benches/balance.py` runs it as the `relay` row so that the CPU per
//! request the three real balancers spend can be read against the least a relay spends.
//!
//! Usage: `relay_floor PORT UPSTREAM_PORT[,UPSTREAM_PORT...] [THREADS]` — listens on
//! 127.0.0.1:PORT with THREADS single-threaded runtimes (default 2, one per balancer worker)
//! sharing the listener. Prints `listening on 127.0.0.1:PORT` once ready.

use std::io;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};

const BUFFER_BYTES: usize = 16 * 1024;

#[path = "common/floors.rs"]
mod floors;

use floors::write_all;

fn main() {
    // Round robin over the upstreams at accept, across all threads.
    let next_upstream = Arc::new(AtomicUsize::new(0));
    floors::run(move |listener, upstreams| serve(listener, upstreams, Arc::clone(&next_upstream)));
}

async fn serve(listener: TcpListener, upstreams: Arc<[SocketAddr]>, next: Arc<AtomicUsize>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let upstream = upstreams[next.fetch_add(1, Ordering::Relaxed) % upstreams.len()];
        tokio::task::spawn_local(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client, server) = (Arc::new(client), Arc::new(server));
            let back = tokio::task::spawn_local(pump(Arc::clone(&server), Arc::clone(&client)));
            let _ = pump(client, server).await;
            back.abort();
        });
    }
}

/// Copies `from` to `to` until `from` ends or either side fails.
async fn pump(from: Arc<TcpStream>, to: Arc<TcpStream>) -> io::Result<()> {
    let mut buffer = vec![0u8; BUFFER_BYTES];
    loop {
        let n = read_drained(&from, &mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        write_all(&to, &buffer[..n]).await?;
    }
}

/// One `recv`. A read that does not fill the buffer clears the readiness, as though it had
/// come back empty, so the next read waits for the next edge instead of costing a call.
async fn read_drained(from: &TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        from.readable().await?;
        let mut got = None;
        let outcome = from.try_io(Interest::READABLE, || {
            let n = (&*SockRef::from(from)).read(buffer)?;
            got = Some(n);
            if n > 0 && n < buffer.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        match (got, outcome) {
            (Some(n), _) => return Ok(n),
            (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (None, Err(e)) => return Err(e),
            (None, Ok(())) => unreachable!("a successful read records its length"),
        }
    }
}
