//! The hand-off of what the app's side sends to a client — a streamed response body from a
//! gthread pool thread, a gevent greenlet or an ASGI task; the messages of an ASGI WebSocket —
//! to its connection (on the thread serving the worker's sockets). The queue is bounded in items and in bytes, so a fast
//! app cannot pile up memory for a slow client. When it is full the producer waits until the
//! connection takes an item (or goes away) and is woken then — a thread parks, a greenlet or an
//! asyncio task waits on an object the loop's bridge wakes — never by polling, which capped a
//! fast stream of small chunks at a few per millisecond and kept a task waking 1000 times a
//! second for as long as its client did not read.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

use pyo3::prelude::*;
use tokio::sync::mpsc;

use super::{Bridge, Event};

thread_local! {
    /// What this thread does before it parks on a full queue: a gthread pool thread lends the
    /// lead of its worker's runtime (`server/pool.rs`), so that the connection it waits for is
    /// driven meanwhile; nothing on other threads.
    static BEFORE_PARKING: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// Set what this thread does before it parks on a full queue (None: nothing).
pub fn before_parking_on_this_thread(hook: Option<fn()>) {
    BEFORE_PARKING.set(hook);
}

/// Items queued at most (also bounds the per-item overhead of tiny chunks).
const MAX_QUEUED_ITEMS: usize = 64;

/// Bytes queued at most before the producer waits (one item may overshoot it).
const MAX_QUEUED_BYTES: usize = 256 * 1024;

/// What the queue carries: anything that knows its size in bytes.
pub trait Queued: Send + 'static {
    /// The bytes this item holds (what the byte bound counts).
    fn queued_bytes(&self) -> usize;
}

impl Queued for Vec<u8> {
    fn queued_bytes(&self) -> usize {
        self.len()
    }
}

/// How the producer ended, as the receiver learns once the queue is empty and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Completely.
    Finished,
    /// The app failed: cut the response or session short.
    Failed,
}

/// Who waits for room, and how it is woken.
pub enum Waiter {
    /// A parked thread (gthread): unparked.
    Thread(Thread),
    /// An object the loop thread wakes through the bridge's `("wake", object)` event: an
    /// asyncio future (resolved with None) or a gevent `Event` (set).
    Loop(Py<PyAny>),
}

/// What [`ChunkSender::offer`] did with an item.
pub enum Offer<T> {
    /// Queued.
    Queued,
    /// The connection is gone; nothing more will be sent.
    Closed,
    /// No room: the item is handed back (see [`ChunkSender::wait_for_room`]).
    Full(T),
}

/// State both ends share besides the queue itself.
struct Room {
    queued_bytes: AtomicUsize,
    waiter: Mutex<Option<Waiter>>,
    /// How the producer ended (0: not said; else `End as u8 + 1`).
    end: AtomicU8,
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
                    bridge.post(Event::Wake(object));
                }
            }
        }
    }
}

/// A bounded queue; `bridge` delivers the wake-ups of [`Waiter::Loop`] waiters.
pub fn chunk_channel<T: Queued>(bridge: Option<Arc<Bridge>>) -> (ChunkSender<T>, ChunkReceiver<T>) {
    let (tx, rx) = mpsc::channel(MAX_QUEUED_ITEMS);
    let room = Arc::new(Room {
        queued_bytes: AtomicUsize::new(0),
        waiter: Mutex::new(None),
        end: AtomicU8::new(0),
        bridge,
    });
    (ChunkSender { tx, room: room.clone() }, ChunkReceiver { rx, room })
}

/// The app's end.
pub struct ChunkSender<T = Vec<u8>> {
    tx: mpsc::Sender<T>,
    room: Arc<Room>,
}

impl<T: Queued> ChunkSender<T> {
    /// Queue `message` if there is room, else hand it back.
    pub fn offer(&self, message: T) -> Offer<T> {
        if self.room.queued_bytes.load(Ordering::Acquire) >= MAX_QUEUED_BYTES {
            return if self.tx.is_closed() { Offer::Closed } else { Offer::Full(message) };
        }
        let len = message.queued_bytes();
        self.room.queued_bytes.fetch_add(len, Ordering::AcqRel);
        match self.tx.try_send(message) {
            Ok(()) => Offer::Queued,
            Err(error) => {
                self.room.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                match error {
                    mpsc::error::TrySendError::Closed(_) => Offer::Closed,
                    mpsc::error::TrySendError::Full(back) => Offer::Full(back),
                }
            }
        }
    }

    /// After [`Offer::Full`]: register `waiter` to be woken when the connection takes an item
    /// or goes away, if the queue is still full (true). False: there is room now (or the
    /// connection is gone): offer again at once.
    pub fn wait_for_room(&self, waiter: Waiter) -> bool {
        // Checked and registered under the waiter lock, which the receiver takes after every
        // item it removes: either it sees the waiter, or we see the room it made.
        let mut slot = self.room.waiter.lock().unwrap_or_else(|e| e.into_inner());
        let full = self.room.queued_bytes.load(Ordering::Acquire) >= MAX_QUEUED_BYTES
            || self.tx.capacity() == 0;
        if full && !self.tx.is_closed() {
            *slot = Some(waiter);
            return true;
        }
        false
    }

    /// Queue `message` from a blocking producer, waiting while the queue is full. The queue
    /// says who the producer is: without a bridge a thread (it parks, without the GIL); with
    /// one the gevent hub's greenlet (it waits on a gevent `Event` the hub sets, the others run
    /// meanwhile). (asyncio producers do not block: they `offer` and await `wait_for_room`.)
    /// False: the connection is gone (or the wait failed).
    pub fn send(&self, py: Python<'_>, message: T) -> bool {
        let in_greenlet = self.room.bridge.is_some();
        let mut message = message;
        let mut event: Option<Bound<'_, PyAny>> = None;
        loop {
            match self.offer(message) {
                Offer::Queued => return true,
                Offer::Closed => return false,
                Offer::Full(back) => message = back,
            }
            if !in_greenlet {
                if self.wait_for_room(Waiter::Thread(std::thread::current())) {
                    if let Some(before_parking) = BEFORE_PARKING.get() {
                        before_parking();
                    }
                    // A stale or early unpark only costs another offer.
                    py.detach(std::thread::park);
                }
                continue;
            }
            let event = match &event {
                Some(event) => event,
                None => match py.import("gevent.event").and_then(|m| m.call_method0("Event")) {
                    Ok(made) => event.insert(made),
                    Err(_) => return false,
                },
            };
            if self.wait_for_room(Waiter::Loop(event.clone().unbind())) {
                if event.call_method0("wait").is_err() {
                    return false;
                }
                event.call_method0("clear").ok();
            }
        }
    }

    /// The producer is done: the receiver takes what was queued, then learns `end` (a failure
    /// cuts the response or session short).
    pub fn end(self, end: End) {
        self.room.end.store(end as u8 + 1, Ordering::Release);
    }
}

/// The connection's end.
pub struct ChunkReceiver<T = Vec<u8>> {
    rx: mpsc::Receiver<T>,
    room: Arc<Room>,
}

impl<T: Queued> ChunkReceiver<T> {
    /// The next item; None once the sender is gone and everything queued was taken (see
    /// [`ChunkReceiver::end`]).
    pub async fn recv(&mut self) -> Option<T> {
        let message = self.rx.recv().await?;
        self.took(&message);
        Some(message)
    }

    /// An item already queued, without waiting (None: nothing queued now, or the end).
    pub fn try_recv(&mut self) -> Option<T> {
        let message = self.rx.try_recv().ok()?;
        self.took(&message);
        Some(message)
    }

    /// How the producer said it ended (None: it was dropped without a word).
    pub fn end(&self) -> Option<End> {
        match self.room.end.load(Ordering::Acquire) {
            1 => Some(End::Finished),
            2 => Some(End::Failed),
            _ => None,
        }
    }

    /// Account for a removed item and wake a producer waiting for room.
    fn took(&self, message: &T) {
        self.room.queued_bytes.fetch_sub(message.queued_bytes(), Ordering::AcqRel);
        self.room.wake();
    }
}

impl<T> Drop for ChunkReceiver<T> {
    fn drop(&mut self) {
        // Closed first, so a producer woken now (or registering later) sees `Closed`.
        self.rx.close();
        self.room.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn chunk(len: usize) -> Vec<u8> {
        vec![b'x'; len]
    }

    fn fill(tx: &ChunkSender) {
        for _ in 0..MAX_QUEUED_ITEMS {
            assert!(matches!(tx.offer(chunk(1)), Offer::Queued));
        }
        assert!(matches!(tx.offer(chunk(1)), Offer::Full(_)));
    }

    #[test]
    fn a_producer_parked_on_a_full_queue_is_woken_by_a_take() {
        Python::initialize();
        let (tx, mut rx) = chunk_channel::<Vec<u8>>(None);
        fill(&tx);
        let producer = std::thread::spawn(move || Python::attach(|py| tx.send(py, chunk(7))));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!producer.is_finished(), "the producer waits while the queue is full");
        assert!(rx.try_recv().is_some());
        assert!(producer.join().unwrap(), "woken, it queued its chunk");
        let rest: Vec<Vec<u8>> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(rest.len(), MAX_QUEUED_ITEMS);
        assert_eq!(rest.last().unwrap().len(), 7);
    }

    #[test]
    fn a_dropped_receiver_releases_a_parked_producer() {
        Python::initialize();
        let (tx, rx) = chunk_channel::<Vec<u8>>(None);
        fill(&tx);
        let producer = std::thread::spawn(move || Python::attach(|py| tx.send(py, chunk(1))));
        std::thread::sleep(Duration::from_millis(50));
        drop(rx);
        assert!(!producer.join().unwrap(), "the connection is gone: nothing was sent");
    }

    #[test]
    fn bytes_bound_the_queue_before_its_item_count_does() {
        let (tx, mut rx) = chunk_channel::<Vec<u8>>(None);
        assert!(matches!(tx.offer(chunk(MAX_QUEUED_BYTES)), Offer::Queued));
        assert!(matches!(tx.offer(chunk(1)), Offer::Full(_)));
        assert!(tx.wait_for_room(Waiter::Thread(std::thread::current())));
        assert!(rx.try_recv().is_some());
        assert!(!tx.wait_for_room(Waiter::Thread(std::thread::current())), "room again");
        assert!(matches!(tx.offer(chunk(1)), Offer::Queued));
    }

    #[test]
    fn the_end_is_reported_after_the_queued_items() {
        let (tx, mut rx) = chunk_channel::<Vec<u8>>(None);
        fill(&tx);
        tx.end(End::Failed);
        assert_eq!(std::iter::from_fn(|| rx.try_recv()).count(), MAX_QUEUED_ITEMS);
        assert_eq!(rx.end(), Some(End::Failed));

        let (tx, rx) = chunk_channel::<Vec<u8>>(None);
        drop(tx);
        assert_eq!(rx.end(), None, "a sender dropped without a word says nothing");
    }
}
