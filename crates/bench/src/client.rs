//! One client connection: a hand-rolled HTTP/1.1 exchange loop on a tokio
//! `TcpStream`. The request bytes are serialised once (in the [`Plan`]); each
//! request writes them, parses the response head from a reused buffer, skips
//! the body (Content-Length, chunked, or until close) and records the result.
//! No allocation per request in the steady state.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::response::{Chunked, Framing, MAX_HEAD, parse_head};
use crate::scheduler::{Plan, Schedule};
use crate::stats::Stats;

/// Why one request failed (timeouts are decided by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Connect,
    Write,
    Read,
}

/// What the request was doing when its deadline hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Exchange,
}

/// A completed response.
#[derive(Debug, Clone, Copy)]
struct Resp {
    status: u16,
    bytes: u64,
    close: bool,
}

struct Conn {
    stream: Option<TcpStream>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    phase: Phase,
}

/// Reads more bytes into `buf[end..]`, compacting first if needed. Returns the
/// number of bytes read (0 at EOF).
async fn fill(
    stream: &mut TcpStream,
    buf: &mut [u8],
    start: &mut usize,
    end: &mut usize,
) -> Result<usize, Fail> {
    if *start == *end {
        *start = 0;
        *end = 0;
    } else if *end == buf.len() {
        if *start == 0 {
            return Err(Fail::Read);
        }
        buf.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
    }
    let n = stream.read(&mut buf[*end..]).await.map_err(|_| Fail::Read)?;
    *end += n;
    Ok(n)
}

impl Conn {
    fn new() -> Self {
        Conn {
            stream: None,
            buf: vec![0; MAX_HEAD].into_boxed_slice(),
            start: 0,
            end: 0,
            phase: Phase::Connect,
        }
    }

    fn close(&mut self) {
        self.stream = None;
        self.start = 0;
        self.end = 0;
    }

    /// Connects if needed, sends the request, reads one full response.
    async fn attempt(&mut self, plan: &Plan) -> Result<Resp, Fail> {
        if self.stream.is_none() {
            self.phase = Phase::Connect;
            let s = TcpStream::connect(plan.addr).await.map_err(|_| Fail::Connect)?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
            self.start = 0;
            self.end = 0;
        }
        self.phase = Phase::Exchange;
        let Conn { stream, buf, start, end, .. } = self;
        let Some(stream) = stream.as_mut() else { return Err(Fail::Connect) };
        stream.write_all(&plan.request).await.map_err(|_| Fail::Write)?;
        let mut bytes = 0u64;
        // Response head(s): skip interim 1xx responses (except 101).
        let head = loop {
            match parse_head(&buf[*start..*end], plan.head_request, plan.want_close, plan.http10) {
                Ok(Some(h)) => {
                    *start += h.len;
                    if (100..200).contains(&h.status) && h.status != 101 {
                        continue;
                    }
                    break h;
                }
                Ok(None) => {}
                Err(_) => return Err(Fail::Read),
            }
            let n = fill(stream, buf, start, end).await?;
            if n == 0 {
                return Err(Fail::Read);
            }
            bytes += n as u64;
        };
        match head.framing {
            Framing::Empty => {}
            Framing::Length(mut remaining) => loop {
                let take = remaining.min((*end - *start) as u64);
                *start += take as usize;
                remaining -= take;
                if remaining == 0 {
                    break;
                }
                let n = fill(stream, buf, start, end).await?;
                if n == 0 {
                    return Err(Fail::Read);
                }
                bytes += n as u64;
            },
            Framing::Chunked => {
                let mut state = Chunked::Size;
                loop {
                    *start += state.advance(&buf[*start..*end]).map_err(|_| Fail::Read)?;
                    if state == Chunked::Done {
                        break;
                    }
                    let n = fill(stream, buf, start, end).await?;
                    if n == 0 {
                        return Err(Fail::Read);
                    }
                    bytes += n as u64;
                }
            }
            Framing::UntilClose => loop {
                *start = *end;
                let n = fill(stream, buf, start, end).await?;
                if n == 0 {
                    break;
                }
                bytes += n as u64;
            },
        }
        Ok(Resp { status: head.status, bytes, close: head.close })
    }
}

/// Drives one connection until the plan says stop, recording into `stats`.
pub(crate) async fn run_connection(
    plan: Arc<Plan>,
    index: usize,
    thread: usize,
    stats: Rc<RefCell<Stats>>,
    pacer: Option<ferrocorn_net::precise_timer::PreciseTimer>,
) {
    let mut conn = Conn::new();
    let mut schedule = plan.rate.map(|r| Schedule::new(r, plan.connections, index));
    let mut timer = pin!(tokio::time::sleep_until((Instant::now() + plan.timeout).into()));
    let counter = &plan.progress[thread].0;
    loop {
        let intended = match schedule.as_mut() {
            Some(s) => {
                let at = s.next(plan.t0);
                if plan.hard_end.is_some_and(|e| at >= e) {
                    break;
                }
                if let Some(pacer) = &pacer {
                    pacer.sleep_until(at).await; // tokio's timer would be ~1 ms late
                }
                Some(at)
            }
            None => None,
        };
        let now = Instant::now();
        if plan.hard_end.is_some_and(|e| now >= e) {
            break;
        }
        let start = intended.unwrap_or(now);
        let measured = start >= plan.warmup_end;
        if measured && plan.tickets.as_ref().is_some_and(|t| !t.claim()) {
            break;
        }
        let timeout_at = now + plan.timeout;
        let (deadline, hard) = match plan.hard_end {
            Some(e) if e <= timeout_at => (e, true),
            _ => (timeout_at, false),
        };
        timer.as_mut().reset(deadline.into());
        let outcome = {
            let mut fut = pin!(conn.attempt(&plan));
            poll_fn(|cx| {
                if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await
        };
        match outcome {
            Some(Ok(resp)) => {
                if measured {
                    let done = Instant::now();
                    let us = done.saturating_duration_since(start).as_micros() as u64;
                    stats.borrow_mut().record(resp.status, us, resp.bytes, done);
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                if resp.close {
                    conn.close();
                }
            }
            Some(Err(fail)) => {
                conn.close();
                if measured {
                    let mut s = stats.borrow_mut();
                    match fail {
                        Fail::Connect => s.errors.connect += 1,
                        Fail::Write => s.errors.write += 1,
                        Fail::Read => s.errors.read += 1,
                    }
                }
            }
            None if hard => break,
            None => {
                let phase = conn.phase;
                conn.close();
                if measured {
                    let mut s = stats.borrow_mut();
                    match phase {
                        Phase::Connect => s.errors.connect += 1,
                        Phase::Exchange => s.errors.timeout += 1,
                    }
                }
            }
        }
    }
}
