//! The app-metrics series table: `Counter`, `Gauge` and `Histogram` series in shared memory
//! (mapped by the master before the first fork), so every worker adds into the same series and
//! one scrape shows their sum — what prometheus_client's multiprocess mode needs a directory of
//! files for. A series entry is claimed with a compare-and-swap and published with a release
//! store; values are atomics (f64 bits), so no lock is ever held. Entries are never freed.
//! This file owns finding or creating a series, the value updates, and reading the table for a
//! scrape.

mod entry;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};

use ferrocorn_metrics::{UserMetric, UserMetricKind};

use crate::map_shared_zeroed;
use entry::{Entry, HELP, LABELS, NAME, Ready};

/// Series in the table the server maps ([`SeriesTable::new`]).
pub const MAX_SERIES: usize = 1024;
/// Longest name, encoded label set or help text of a series, in bytes.
pub const MAX_TEXT: usize = 256;
/// Most finite bucket bounds of a histogram series.
pub const MAX_BUCKETS: usize = 24;

/// A series registered in a [`SeriesTable`] (valid for that table and the processes that share
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesId(usize);

impl SeriesId {
    /// The entry's index in the table.
    pub fn index(self) -> usize {
        self.0
    }
}

/// Why a series could not be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// A name, label set or help text is longer than [`MAX_TEXT`] bytes.
    TextTooLong(String),
    /// More than [`MAX_BUCKETS`] bucket bounds.
    TooManyBuckets(usize),
    /// Every entry holds another series.
    Full {
        /// The table's capacity.
        capacity: usize,
    },
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::TextTooLong(part) => {
                write!(f, "metric text too long (max {MAX_TEXT} bytes): {part:?}")
            }
            RegisterError::TooManyBuckets(n) => {
                write!(f, "a histogram takes at most {MAX_BUCKETS} buckets, got {n}")
            }
            RegisterError::Full { capacity } => {
                write!(f, "too many metric series (max {capacity})")
            }
        }
    }
}

impl std::error::Error for RegisterError {}

/// A label set as the table stores it: `name\x1evalue\x1f` per pair, in the order given. Two
/// registrations are the same series when their kind, name and encoded labels are equal.
pub fn encode_labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs.into_iter().map(|(k, v)| format!("{k}\u{1e}{v}\u{1f}")).collect()
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split('\u{1f}')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('\u{1e}').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn add_f64(cell: &AtomicU64, delta: f64) {
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + delta).to_bits())
    });
}

/// The table of series in a shared mapping: every process forked after [`SeriesTable::new`]
/// sees and updates the same series.
pub struct SeriesTable {
    entries: *mut Entry,
    len: usize,
    bytes: usize,
}

// SAFETY: the table is process-shared memory; entries are mutated only through atomics, and the
// text bytes only by the one process that claimed the entry before it publishes READY.
unsafe impl Send for SeriesTable {}
// SAFETY: as above.
unsafe impl Sync for SeriesTable {}

impl std::fmt::Debug for SeriesTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesTable").field("capacity", &self.len).finish_non_exhaustive()
    }
}

impl SeriesTable {
    /// Map a table of [`MAX_SERIES`] free entries, shared with every process forked afterwards.
    pub fn new() -> std::io::Result<SeriesTable> {
        SeriesTable::with_capacity(MAX_SERIES)
    }

    /// Map a table of `capacity` (at least one) free entries.
    pub fn with_capacity(capacity: usize) -> std::io::Result<SeriesTable> {
        let len = capacity.max(1);
        let bytes = len * std::mem::size_of::<Entry>();
        // Zeroed memory is a valid table (every entry FREE); Entry's alignment is at most a
        // page, and the mapping is page-aligned.
        let entries = map_shared_zeroed(bytes)?.cast::<Entry>();
        Ok(SeriesTable { entries, len, bytes })
    }

    /// Number of entries.
    pub fn capacity(&self) -> usize {
        self.len
    }

    fn entry(&self, i: usize) -> &Entry {
        assert!(i < self.len, "series {i} out of range");
        // SAFETY: `i < len`, inside the mapping, which lives as long as `self`; all-zero is a
        // valid Entry and its shared parts are atomics.
        unsafe { &*self.entries.add(i) }
    }

    /// Find the series `kind` `name` `labels` ([`encode_labels`]), or claim a free entry for it
    /// with `help` and, for a histogram, the bucket upper `bounds` (ascending, finite).
    pub fn register(
        &self,
        kind: UserMetricKind,
        name: &str,
        labels: &str,
        help: &str,
        bounds: &[f64],
    ) -> Result<SeriesId, RegisterError> {
        for part in [name, labels, help] {
            if part.len() > MAX_TEXT {
                return Err(RegisterError::TextTooLong(part.to_owned()));
            }
        }
        if bounds.len() > MAX_BUCKETS {
            return Err(RegisterError::TooManyBuckets(bounds.len()));
        }
        let found = (0..self.len)
            .find(|&i| self.entry(i).ready().is_some_and(|e| e.is(kind, name, labels)));
        if let Some(i) = found {
            return Ok(SeriesId(i));
        }
        for i in 0..self.len {
            if let Some(claimed) = self.entry(i).claim() {
                claimed.publish(kind, [name, labels, help], bounds);
                return Ok(SeriesId(i));
            }
        }
        Err(RegisterError::Full { capacity: self.len })
    }

    /// Counter or gauge: add `delta` to the value.
    pub fn add(&self, id: SeriesId, delta: f64) {
        add_f64(&self.entry(id.0).value, delta);
    }

    /// Gauge: set the value (shared by all processes: the last write wins).
    pub fn set(&self, id: SeriesId, value: f64) {
        self.entry(id.0).value.store(value.to_bits(), Ordering::Relaxed);
    }

    /// Histogram: count one observation in its bucket and add it to the sum.
    pub fn observe(&self, id: SeriesId, value: f64) {
        let e = self.entry(id.0);
        let n = e.bucket_count.load(Ordering::Relaxed) as usize;
        let slot = (0..n)
            .find(|b| value <= f64::from_bits(e.bounds[*b].load(Ordering::Relaxed)))
            .unwrap_or(n);
        e.buckets[slot].fetch_add(1, Ordering::Relaxed);
        add_f64(&e.sum, value);
    }

    /// The series `id`, if it is published.
    pub fn get(&self, id: SeriesId) -> Option<SeriesView<'_>> {
        self.entry(id.0).ready().map(|entry| SeriesView { id, entry })
    }

    /// Every published series, in table order (one per registration in any process).
    pub fn series(&self) -> impl Iterator<Item = SeriesView<'_>> {
        (0..self.len).filter_map(|i| self.get(SeriesId(i)))
    }

    /// Every series for a scrape, summed over duplicate registrations.
    pub fn collect(&self) -> Vec<UserMetric> {
        let mut out: Vec<UserMetric> = Vec::new();
        for metric in self.series().map(|s| s.to_metric()) {
            match out.iter_mut().find(|m| {
                m.name == metric.name && m.labels == metric.labels && m.kind == metric.kind
            }) {
                Some(existing) => {
                    existing.value += metric.value;
                    existing.sum += metric.sum;
                    for (a, b) in existing.buckets.iter_mut().zip(&metric.buckets) {
                        a.1 += b.1;
                    }
                }
                None => out.push(metric),
            }
        }
        out
    }
}

impl Drop for SeriesTable {
    fn drop(&mut self) {
        // SAFETY: `entries`/`bytes` describe exactly the mapping created in `with_capacity`.
        unsafe {
            libc::munmap(self.entries.cast(), self.bytes);
        }
    }
}

/// A published series, read from the shared table (values are read when asked for).
#[derive(Clone, Copy)]
pub struct SeriesView<'a> {
    id: SeriesId,
    entry: Ready<'a>,
}

impl std::fmt::Debug for SeriesView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesView")
            .field("id", &self.id)
            .field("kind", &self.kind())
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl SeriesView<'_> {
    /// Its id.
    pub fn id(&self) -> SeriesId {
        self.id
    }
    /// Its kind.
    pub fn kind(&self) -> UserMetricKind {
        self.entry.kind()
    }
    /// Its name.
    pub fn name(&self) -> String {
        self.entry.string(NAME)
    }
    /// Its label pairs.
    pub fn labels(&self) -> Vec<(String, String)> {
        parse_labels(&self.entry.string(LABELS))
    }
    /// Its help text.
    pub fn help(&self) -> String {
        self.entry.string(HELP)
    }
    /// Counter or gauge value.
    pub fn value(&self) -> f64 {
        f64::from_bits(self.entry.entry().value.load(Ordering::Relaxed))
    }
    /// Histogram: sum of observations.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.entry.entry().sum.load(Ordering::Relaxed))
    }
    /// Histogram: `(upper bound, count in that bucket (not cumulative))`, `+Inf` last; empty
    /// for counters and gauges.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let e = self.entry.entry();
        let n = e.bucket_count.load(Ordering::Relaxed) as usize;
        let mut buckets: Vec<(f64, u64)> = (0..n)
            .map(|b| {
                (
                    f64::from_bits(e.bounds[b].load(Ordering::Relaxed)),
                    e.buckets[b].load(Ordering::Relaxed),
                )
            })
            .collect();
        if self.kind() == UserMetricKind::Histogram {
            buckets.push((f64::INFINITY, e.buckets[n].load(Ordering::Relaxed)));
        }
        buckets
    }
    /// Everything, as the metrics encoder takes it.
    pub fn to_metric(&self) -> UserMetric {
        let kind = self.kind();
        let name = self.name();
        let labels = self.labels();
        let buckets = self.buckets();
        UserMetric {
            name,
            help: self.help(),
            kind,
            labels,
            value: self.value(),
            buckets,
            sum: self.sum(),
        }
    }
}
