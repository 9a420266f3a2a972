//! The floor of a balancer that pipelines to its upstreams: what the CPU per request would
//! be if requests from many clients went to a backend several to one send (HTTP/1.1
//! pipelining), which neither nginx nor HAProxy nor `ferrocorn balance` does.
//!
//! Each runtime thread keeps one connection per backend. A client's request is appended to
//! the chosen backend's pending bytes (round robin), and one writer task per backend sends
//! all that is pending in one write once the thread has read what was ready; the backend's
//! responses (framed by `Content-Length`, as the bench's hello backends send them) go back
//! in order to the clients that asked. There is no HTTP parsing of requests, no header
//! rewriting, no retry and no timeout: like `relay_floor`, it is a measuring stick for
//! `benches/balance.py` (the `pipelined` row), not a proxy. It assumes each read from a
//! client holds exactly one whole request, which holds for wrk's one-request-at-a-time
//! connections. When a backend closes a connection (it does after a request with
//! `Connection: close`, such as the bench's readiness probe), the clients still waiting on it
//! are cut off and the thread connects again; a response without `Content-Length` stalls
//! that connection.
//!
//! Usage: `pipeline_floor PORT UPSTREAM_PORT[,UPSTREAM_PORT...] [THREADS]` — listens on
//! 127.0.0.1:PORT with THREADS single-threaded runtimes (default 2) sharing the listener.
//! Prints `listening on 127.0.0.1:PORT` once ready.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const BUFFER_BYTES: usize = 64 * 1024;

/// One backend connection shared by all of a thread's clients.
struct Upstream {
    addr: SocketAddr,
    /// The connection; replaced when the backend closes it (a request with
    /// `Connection: close`, such as the bench's readiness probe, makes it close).
    stream: RefCell<Rc<TcpStream>>,
    /// Requests not yet sent.
    pending: RefCell<Vec<u8>>,
    /// The clients whose responses are still to come, oldest first.
    waiting: RefCell<VecDeque<Rc<TcpStream>>>,
    wake_writer: Notify,
}

#[path = "common/floors.rs"]
mod floors;

use floors::write_all;

fn main() {
    floors::run(serve);
}

async fn serve(listener: TcpListener, addrs: Arc<[SocketAddr]>) {
    let mut upstreams = Vec::new();
    for addr in addrs.iter() {
        let Some(stream) = connect(*addr).await else { return };
        let upstream = Rc::new(Upstream {
            addr: *addr,
            stream: RefCell::new(stream),
            pending: RefCell::new(Vec::new()),
            waiting: RefCell::new(VecDeque::new()),
            wake_writer: Notify::new(),
        });
        tokio::task::spawn_local(send_pending(Rc::clone(&upstream)));
        tokio::task::spawn_local(answer_clients(Rc::clone(&upstream)));
        upstreams.push(upstream);
    }
    let upstreams = Rc::new(upstreams);
    let next = Rc::new(Cell::new(0usize));
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let _ = client.set_nodelay(true);
        tokio::task::spawn_local(take_requests(
            Rc::new(client),
            Rc::clone(&upstreams),
            Rc::clone(&next),
        ));
    }
}

async fn connect(addr: SocketAddr) -> Option<Rc<TcpStream>> {
    let Ok(stream) = TcpStream::connect(addr).await else {
        eprintln!("cannot connect to {addr}");
        return None;
    };
    let _ = stream.set_nodelay(true);
    Some(Rc::new(stream))
}

/// Queue each request a client sends on the next backend's connection.
async fn take_requests(
    client: Rc<TcpStream>,
    upstreams: Rc<Vec<Rc<Upstream>>>,
    next: Rc<Cell<usize>>,
) {
    let mut buffer = vec![0u8; BUFFER_BYTES];
    loop {
        if client.readable().await.is_err() {
            return;
        }
        let n = match client.try_read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let i = next.get().wrapping_add(1);
        next.set(i);
        let upstream = &upstreams[i % upstreams.len()];
        upstream.pending.borrow_mut().extend_from_slice(&buffer[..n]);
        upstream.waiting.borrow_mut().push_back(Rc::clone(&client));
        upstream.wake_writer.notify_one();
    }
}

/// Send whatever requests are pending, all in one write, each time there are some.
async fn send_pending(upstream: Rc<Upstream>) {
    loop {
        upstream.wake_writer.notified().await;
        let out = std::mem::take(&mut *upstream.pending.borrow_mut());
        let stream = Rc::clone(&upstream.stream.borrow());
        // A failed write is the connection closing: `answer_clients` connects again.
        let _ = write_all(&stream, &out).await;
    }
}

/// Read the backend's responses and write each to the client that asked, in order.
async fn answer_clients(upstream: Rc<Upstream>) {
    let mut received: Vec<u8> = Vec::with_capacity(BUFFER_BYTES);
    let mut buffer = vec![0u8; BUFFER_BYTES];
    loop {
        let stream = Rc::clone(&upstream.stream.borrow());
        let n = match stream.readable().await.and_then(|()| stream.try_read(&mut buffer)) {
            Ok(n) if n > 0 => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            // Closed: the requests still waiting will not be answered; their clients are
            // cut off, and later requests go to a new connection.
            Ok(_) | Err(_) => {
                for client in upstream.waiting.borrow_mut().drain(..) {
                    let _ = socket2::SockRef::from(&*client).shutdown(std::net::Shutdown::Both);
                }
                received.clear();
                let Some(fresh) = connect(upstream.addr).await else { return };
                *upstream.stream.borrow_mut() = fresh;
                continue;
            }
        };
        received.extend_from_slice(&buffer[..n]);
        let mut used = 0;
        while let Some(len) = response_len(&received[used..]) {
            let Some(client) = upstream.waiting.borrow_mut().pop_front() else { return };
            // A client that went away loses its response; the others still get theirs.
            let _ = write_all(&client, &received[used..used + len]).await;
            used += len;
        }
        received.drain(..used);
    }
}

/// The length of the complete response at the start of `bytes` (its head and a
/// `Content-Length` body); None while it is incomplete or has no `Content-Length`.
fn response_len(bytes: &[u8]) -> Option<usize> {
    let head_end = memchr::memmem::find(bytes, b"\r\n\r\n")? + 4;
    let head = &bytes[..head_end];
    let length = head.split(|&b| b == b'\n').find_map(|line| {
        let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
        name.eq_ignore_ascii_case(b"content-length")
            .then(|| std::str::from_utf8(&value[1..]).ok()?.trim().parse::<usize>().ok())?
    })?;
    (bytes.len() >= head_end + length).then_some(head_end + length)
}
