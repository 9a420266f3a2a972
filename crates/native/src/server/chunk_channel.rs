//! The hand-off of a streamed response body from the app's side (a gthread pool thread, a
//! gevent greenlet, an ASGI task) to its connection on the I/O thread. The queue is bounded in
//! chunks and in bytes, so a fast app cannot pile up memory for a slow client. When it is full
//! the producer waits until the connection takes a chunk (or goes away) and is woken then — a
//! thread parks, a greenlet or an asyncio task waits on an object the loop's bridge wakes —
//! never by polling, which capped a fast stream of small chunks at a few chunks per
//! millisecond.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

use pyo3::prelude::*;
use tokio::sync::mpsc;

use super::ChunkMsg;
use crate::asgi::{Bridge, Event};

/// Chunks queued at most (also bounds the per-chunk overhead of tiny chunks).
const MAX_QUEUED_CHUNKS: usize = 64;

/// Bytes queued at most before the producer waits (one chunk may overshoot it).
const MAX_QUEUED_BYTES: usize = 256 * 1024;

/// Who waits for room, and how it is woken.
pub enum Waiter {
    /// A parked thread (gthread): unparked.
    Thread(Thread),
    /// An object the loop thread wakes through the bridge's `("wake", object)` event: an
    /// asyncio future (resolved with None) or a gevent `Event` (set).
    Loop(Py<PyAny>),
}

/// What [`ChunkSender::offer`] did with a chunk.
pub enum Offer {
    /// Queued.
    Queued,
    /// The connection is gone; nothing more will be sent.
    Closed,
    /// No room: the chunk is handed back, and the waiter (if one was given) will be woken.
    Full(ChunkMsg),
}

/// State both ends share besides the queue itself.
struct Room {
    queued_bytes: AtomicUsize,
    waiter: Mutex<Option<Waiter>>,
    /// The app failed mid-stream: the end of the queue is a truncation, not the end.
    failed: AtomicBool,
    /// Delivers [`Waiter::Loop`] wake-ups (the gevent hub's or the asyncio loop's bridge).
    bridge: Option<Arc<Bridge>>,
}

impl Room {
    fn wake(&self) {
        let waiter = self.waiter.lock().unwrap_or_else(|e| e.into_inner()).take();
        match waiter {
            None => {}
            Some(Waiter::Thread(thread)) => thread.unpark(),
            Some(Waiter::Loop(object)) => {
                if let Some(bridge) = &self.bridge {
                    bridge.post(Event::WakeWaiter(object));
                }
            }
        }
    }
}

/// A bounded chunk queue; `bridge` delivers the wake-ups of [`Waiter::Loop`] waiters.
pub fn chunk_channel(bridge: Option<Arc<Bridge>>) -> (ChunkSender, ChunkReceiver) {
    let (tx, rx) = mpsc::channel(MAX_QUEUED_CHUNKS);
    let room = Arc::new(Room {
        queued_bytes: AtomicUsize::new(0),
        waiter: Mutex::new(None),
        failed: AtomicBool::new(false),
        bridge,
    });
    (ChunkSender { tx, room: room.clone() }, ChunkReceiver { rx, room })
}

/// The app's end.
pub struct ChunkSender {
    tx: mpsc::Sender<ChunkMsg>,
    room: Arc<Room>,
}

impl ChunkSender {
    /// Queue `message` if there is room. Otherwise hand it back and, when `waiter` is given,
    /// register it to be woken as soon as the connection takes a chunk or goes away.
    pub fn offer(&self, message: ChunkMsg, waiter: Option<Waiter>) -> Offer {
        let len = message.as_ref().map_or(0, Vec::len);
        // Checked and registered under the waiter lock, which the receiver takes after every
        // chunk it removes: either it sees the waiter, or we see the room it made.
        let mut slot = self.room.waiter.lock().unwrap_or_else(|e| e.into_inner());
        let mut message = message;
        if self.room.queued_bytes.load(Ordering::Acquire) < MAX_QUEUED_BYTES {
            self.room.queued_bytes.fetch_add(len, Ordering::AcqRel);
            match self.tx.try_send(message) {
                Ok(()) => return Offer::Queued,
                Err(error) => {
                    self.room.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                    match error {
                        mpsc::error::TrySendError::Closed(_) => return Offer::Closed,
                        mpsc::error::TrySendError::Full(back) => message = back,
                    }
                }
            }
        } else if self.tx.is_closed() {
            return Offer::Closed;
        }
        if waiter.is_some() {
            *slot = waiter;
        }
        Offer::Full(message)
    }

    /// Queue `message`, parking this thread (without the GIL) while the queue is full.
    /// False: the connection is gone.
    pub fn send_blocking(&self, py: Python<'_>, message: ChunkMsg) -> bool {
        let mut message = message;
        let mut waiter = None;
        loop {
            match self.offer(message, waiter.take()) {
                Offer::Queued => return true,
                Offer::Closed => return false,
                Offer::Full(back) => {
                    message = back;
                    // First a plain retry with a waiter registered (the room may have come
                    // meanwhile), then park; a stale or early unpark only costs a loop.
                    match self.offer(message, Some(Waiter::Thread(std::thread::current()))) {
                        Offer::Queued => return true,
                        Offer::Closed => return false,
                        Offer::Full(back) => message = back,
                    }
                    py.detach(std::thread::park);
                }
            }
        }
    }

    /// The app failed mid-stream: the connection cuts the response short (no chunked
    /// terminator, the connection closes) once it has sent what was queued.
    pub fn fail(self) {
        self.room.failed.store(true, Ordering::Release);
    }
}

/// The connection's end.
pub struct ChunkReceiver {
    rx: mpsc::Receiver<ChunkMsg>,
    room: Arc<Room>,
}

impl ChunkReceiver {
    /// The next chunk; `Err(())` when the app failed; None at the end (or a gone sender).
    pub async fn recv(&mut self) -> Option<ChunkMsg> {
        let message = self.rx.recv().await;
        self.took(message)
    }

    /// A chunk already queued, without waiting (None: nothing queued now, or the end).
    pub fn try_recv(&mut self) -> Option<ChunkMsg> {
        self.rx.try_recv().ok().and_then(|message| self.took(Some(message)))
    }

    /// Account for a removed chunk and wake a producer waiting for room; at the end, report
    /// a failed stream as `Err`.
    fn took(&self, message: Option<ChunkMsg>) -> Option<ChunkMsg> {
        match message {
            Some(message) => {
                if let Ok(bytes) = &message {
                    self.room.queued_bytes.fetch_sub(bytes.len(), Ordering::AcqRel);
                }
                self.room.wake();
                Some(message)
            }
            None if self.room.failed.load(Ordering::Acquire) => Some(Err(())),
            None => None,
        }
    }
}

impl Drop for ChunkReceiver {
    fn drop(&mut self) {
        // Closed first, so a producer woken now (or registering later) sees `Closed`.
        self.rx.close();
        self.room.wake();
    }
}
