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
//! connections; it stops a thread's clients when a backend closes or sends a response it
//! cannot frame.
//!
//! Usage: `pipeline_floor PORT UPSTREAM_PORT[,UPSTREAM_PORT...] [THREADS]` — listens on
//! 127.0.0.1:PORT with THREADS single-threaded runtimes (default 2) sharing the listener.
//! Prints `listening on 127.0.0.1:PORT` once ready.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const BUFFER_BYTES: usize = 64 * 1024;

/// One backend connection shared by all of a thread's clients.
struct Upstream {
    stream: TcpStream,
    /// Requests not yet sent.
    pending: RefCell<Vec<u8>>,
    /// The clients whose responses are still to come, oldest first.
    waiting: RefCell<VecDeque<Rc<TcpStream>>>,
    wake_writer: Notify,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args.first().map_or(8080, |s| s.parse().expect("numeric PORT"));
    let upstreams: Vec<SocketAddr> = args
        .get(1)
        .expect("UPSTREAM_PORT[,UPSTREAM_PORT...]")
        .split(',')
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p.parse().expect("numeric upstream port"))))
        .collect();
    let threads: usize = args.get(2).map_or(2, |s| s.parse().expect("numeric THREADS")).max(1);

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind 127.0.0.1");
    listener.set_nonblocking(true).expect("non-blocking listener");
    println!("listening on {}", listener.local_addr().expect("local addr"));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let listener = listener.try_clone().expect("clone listener");
            let upstreams = upstreams.clone();
            std::thread::spawn(move || serve(listener, &upstreams))
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
}

fn serve(listener: std::net::TcpListener, addrs: &[SocketAddr]) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let mut upstreams = Vec::new();
        for addr in addrs {
            let Ok(stream) = TcpStream::connect(addr).await else {
                eprintln!("cannot connect to {addr}");
                return;
            };
            let _ = stream.set_nodelay(true);
            let upstream = Rc::new(Upstream {
                stream,
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
        let Ok(listener) = TcpListener::from_std(listener) else { return };
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            let _ = client.set_nodelay(true);
            tokio::task::spawn_local(take_requests(
                Rc::new(client),
                Rc::clone(&upstreams),
                Rc::clone(&next),
            ));
        }
    });
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
        if write_all(&upstream.stream, &out).await.is_err() {
            return;
        }
    }
}

/// Read the backend's responses and write each to the client that asked, in order.
async fn answer_clients(upstream: Rc<Upstream>) {
    let mut received: Vec<u8> = Vec::with_capacity(BUFFER_BYTES);
    let mut buffer = vec![0u8; BUFFER_BYTES];
    loop {
        if upstream.stream.readable().await.is_err() {
            return;
        }
        let n = match upstream.stream.try_read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
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

async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
