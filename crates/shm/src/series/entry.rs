//! One series entry's layout in the shared table and its life cycle: FREE, CLAIMED by the one
//! process that won the compare-and-swap (which alone writes its text and bounds), then READY
//! (published with a release store; from then on only its value atomics change). The two
//! witnesses [`Claimed`] and [`Ready`] are the only ways to write or read the text.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ferrocorn_metrics::UserMetricKind;

use super::{MAX_BUCKETS, MAX_TEXT};

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const READY: u32 = 2;

/// Which text field: the series' name, its labels (`encode_labels`), its help.
pub(super) const NAME: usize = 0;
pub(super) const LABELS: usize = 1;
pub(super) const HELP: usize = 2;

#[repr(C)]
pub(super) struct Entry {
    state: AtomicU32,
    kind: AtomicU32,
    pub(super) bucket_count: AtomicU32,
    text_len: [AtomicU32; 3],
    /// name, labels (`encode_labels`), help — written once by the claimer before READY.
    text: UnsafeCell<[[u8; MAX_TEXT]; 3]>,
    pub(super) value: AtomicU64,
    pub(super) sum: AtomicU64,
    pub(super) bounds: [AtomicU64; MAX_BUCKETS],
    pub(super) buckets: [AtomicU64; MAX_BUCKETS + 1],
}

fn kind_code(kind: UserMetricKind) -> u32 {
    match kind {
        UserMetricKind::Counter => 0,
        UserMetricKind::Gauge => 1,
        UserMetricKind::Histogram => 2,
    }
}

fn kind_of(code: u32) -> UserMetricKind {
    match code {
        0 => UserMetricKind::Counter,
        1 => UserMetricKind::Gauge,
        _ => UserMetricKind::Histogram,
    }
}

impl Entry {
    /// The entry if it is READY (the Acquire load orders the reads of its text after the
    /// claimer's writes).
    pub(super) fn ready(&self) -> Option<Ready<'_>> {
        (self.state.load(Ordering::Acquire) == READY).then_some(Ready(self))
    }

    /// Take the entry if it is FREE; the winner of the compare-and-swap is its only writer.
    pub(super) fn claim(&self) -> Option<Claimed<'_>> {
        self.state
            .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
            .then_some(Claimed(self))
    }
}

/// An entry seen READY: its kind, text and bounds no longer change.
#[derive(Clone, Copy)]
pub(super) struct Ready<'a>(&'a Entry);

impl<'a> Ready<'a> {
    pub(super) fn entry(self) -> &'a Entry {
        self.0
    }

    pub(super) fn kind(self) -> UserMetricKind {
        kind_of(self.0.kind.load(Ordering::Relaxed))
    }

    /// Text field `which` ([`NAME`], [`LABELS`], [`HELP`]).
    pub(super) fn text(self, which: usize) -> &'a [u8] {
        let e = self.0;
        let len = (e.text_len[which].load(Ordering::Acquire) as usize).min(MAX_TEXT);
        // SAFETY: READY entries' text is immutable; a `Ready` is only made after an Acquire
        // load saw READY, which orders these reads after the claimer's writes.
        unsafe { &(&*e.text.get())[which][..len] }
    }

    /// Is this the series `kind` `name` `labels`?
    pub(super) fn is(self, kind: UserMetricKind, name: &str, labels: &str) -> bool {
        self.0.kind.load(Ordering::Relaxed) == kind_code(kind)
            && self.text(NAME) == name.as_bytes()
            && self.text(LABELS) == labels.as_bytes()
    }

    /// Text field `which`, as a string.
    pub(super) fn string(self, which: usize) -> String {
        String::from_utf8_lossy(self.text(which)).into_owned()
    }
}

/// An entry this process claimed and has not published yet.
pub(super) struct Claimed<'a>(&'a Entry);

impl Claimed<'_> {
    /// Write the series' text and bounds, then publish it READY. Every text part must fit in
    /// [`MAX_TEXT`] bytes and `bounds` in [`MAX_BUCKETS`] (checked by the caller).
    pub(super) fn publish(self, kind: UserMetricKind, text: [&str; 3], bounds: &[f64]) {
        let e = self.0;
        // SAFETY: this process won the CAS, so it is the only writer of the text until READY.
        let cells = unsafe { &mut *e.text.get() };
        for (which, part) in text.iter().enumerate() {
            cells[which][..part.len()].copy_from_slice(part.as_bytes());
            e.text_len[which].store(part.len() as u32, Ordering::Relaxed);
        }
        for (b, bound) in e.bounds.iter().zip(bounds) {
            b.store(bound.to_bits(), Ordering::Relaxed);
        }
        e.bucket_count.store(bounds.len() as u32, Ordering::Relaxed);
        e.kind.store(kind_code(kind), Ordering::Relaxed);
        e.state.store(READY, Ordering::Release);
    }
}
