//! App-defined metrics shared by all workers: `from ferrocorn import metrics` gives `Counter`,
//! `Gauge` and `Histogram` whose series live in a table in shared memory (mapped by the master
//! before the first fork), so every worker adds into the same series and one scrape shows their
//! sum — what prometheus_client's multiprocess mode needs a directory of files for. A series
//! entry is claimed with a compare-and-swap and published with a release store; values are
//! atomics (f64 bits), so no lock is ever held.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use ferrocorn_metrics::{UserMetric, UserMetricKind};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

const ENTRIES: usize = 1024;
const TEXT: usize = 256;
const MAX_BUCKETS: usize = 24;

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const READY: u32 = 2;

#[repr(C)]
struct Entry {
    state: AtomicU32,
    kind: AtomicU32,
    bucket_count: AtomicU32,
    text_len: [AtomicU32; 3],
    /// name, labels (`k="v",...`), help — written once by the claimer before READY.
    text: UnsafeCell<[[u8; TEXT]; 3]>,
    value: AtomicU64,
    sum: AtomicU64,
    bounds: [AtomicU64; MAX_BUCKETS],
    buckets: [AtomicU64; MAX_BUCKETS + 1],
}

struct Table {
    entries: *mut Entry,
}

// SAFETY: the table is process-shared memory; entries are mutated only through atomics, and the
// text bytes only by the one process that claimed the entry before it publishes READY.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

static TABLE: OnceLock<Table> = OnceLock::new();

/// Map the shared table; the master calls this before forking (workers inherit it). Without
/// it (app code run outside ferrocorn) a private table is created on first use.
pub fn init() -> std::io::Result<()> {
    if TABLE.get().is_some() {
        return Ok(());
    }
    // Zeroed memory is a valid table (every entry FREE); Entry's alignment is at most a page.
    let ptr = ferrocorn_arbiter::map_shared_zeroed(ENTRIES * std::mem::size_of::<Entry>())?;
    let _ = TABLE.set(Table { entries: ptr.cast() });
    Ok(())
}

fn table() -> Option<&'static Table> {
    if TABLE.get().is_none() {
        let _ = init();
    }
    TABLE.get()
}

fn entry(i: usize) -> Option<&'static Entry> {
    let t = table()?;
    // SAFETY: `i < ENTRIES`, inside the mapping, which is never unmapped.
    (i < ENTRIES).then(|| unsafe { &*t.entries.add(i) })
}

fn text_of(e: &Entry, which: usize) -> String {
    let len = (e.text_len[which].load(Ordering::Acquire) as usize).min(TEXT);
    // SAFETY: READY entries' text is immutable; callers only read READY entries (Acquire on
    // `state` orders these reads after the claimer's writes).
    let bytes = unsafe { &(&*e.text.get())[which][..len] };
    String::from_utf8_lossy(bytes).into_owned()
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

/// Find or create the series; returns its entry index.
fn register(
    kind: UserMetricKind,
    name: &str,
    labels: &str,
    help: &str,
    bounds: &[f64],
) -> Result<usize, String> {
    for part in [name, labels, help] {
        if part.len() > TEXT {
            return Err(format!("metric text too long (max {TEXT} bytes): {part:?}"));
        }
    }
    for i in 0..ENTRIES {
        let e = entry(i).ok_or("metrics table unavailable")?;
        if e.state.load(Ordering::Acquire) == READY
            && e.kind.load(Ordering::Relaxed) == kind_code(kind)
            && text_of(e, 0) == name
            && text_of(e, 1) == labels
        {
            return Ok(i);
        }
    }
    for i in 0..ENTRIES {
        let e = entry(i).ok_or("metrics table unavailable")?;
        if e.state.compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            // SAFETY: this process won the CAS, so it is the only writer of the text until READY.
            let text = unsafe { &mut *e.text.get() };
            for (which, part) in [name, labels, help].iter().enumerate() {
                text[which][..part.len()].copy_from_slice(part.as_bytes());
                e.text_len[which].store(part.len() as u32, Ordering::Relaxed);
            }
            for (b, bound) in e.bounds.iter().zip(bounds) {
                b.store(bound.to_bits(), Ordering::Relaxed);
            }
            e.bucket_count.store(bounds.len() as u32, Ordering::Relaxed);
            e.kind.store(kind_code(kind), Ordering::Relaxed);
            e.state.store(READY, Ordering::Release);
            return Ok(i);
        }
    }
    Err(format!("too many metric series (max {ENTRIES})"))
}

fn add_f64(cell: &AtomicU64, delta: f64) {
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + delta).to_bits())
    });
}

/// Every app-defined series, summed over duplicate registrations.
pub fn collect() -> Vec<UserMetric> {
    let mut out: Vec<UserMetric> = Vec::new();
    for i in 0..ENTRIES {
        let Some(e) = entry(i) else { break };
        if e.state.load(Ordering::Acquire) != READY {
            continue;
        }
        let kind = kind_of(e.kind.load(Ordering::Relaxed));
        let name = text_of(e, 0);
        let labels_text = text_of(e, 1);
        let labels: Vec<(String, String)> = parse_labels(&labels_text);
        let n = e.bucket_count.load(Ordering::Relaxed) as usize;
        let mut buckets: Vec<(f64, u64)> = (0..n)
            .map(|b| {
                (
                    f64::from_bits(e.bounds[b].load(Ordering::Relaxed)),
                    e.buckets[b].load(Ordering::Relaxed),
                )
            })
            .collect();
        if kind == UserMetricKind::Histogram {
            buckets.push((f64::INFINITY, e.buckets[n].load(Ordering::Relaxed)));
        }
        let metric = UserMetric {
            name: name.clone(),
            help: text_of(e, 2),
            kind,
            labels,
            value: f64::from_bits(e.value.load(Ordering::Relaxed)),
            buckets,
            sum: f64::from_bits(e.sum.load(Ordering::Relaxed)),
        };
        match out
            .iter_mut()
            .find(|m| m.name == metric.name && m.labels == metric.labels && m.kind == kind)
        {
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

fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split('\u{1f}')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('\u{1e}').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A metric family (any kind); `labels(...)` gives a series.
#[pyclass(module = "ferrocorn._native", frozen, subclass)]
pub struct Metric {
    kind: UserMetricKind,
    name: String,
    help: String,
    labelnames: Vec<String>,
    bounds: Vec<f64>,
    series: Mutex<HashMap<String, usize>>,
}

/// One labelled series of a metric.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct Series {
    kind: UserMetricKind,
    index: usize,
}

impl Metric {
    fn new(
        kind: UserMetricKind,
        name: &str,
        documentation: &str,
        labelnames: Vec<String>,
        bounds: Vec<f64>,
    ) -> PyResult<Self> {
        let name = match kind {
            UserMetricKind::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        if !valid_name(name) {
            return Err(PyValueError::new_err(format!("invalid metric name {name:?}")));
        }
        if let Some(bad) = labelnames.iter().find(|l| !valid_name(l) || l.starts_with("__")) {
            return Err(PyValueError::new_err(format!("invalid label name {bad:?}")));
        }
        Ok(Metric {
            kind,
            name: name.to_owned(),
            help: documentation.to_owned(),
            labelnames,
            bounds,
            series: Mutex::new(HashMap::new()),
        })
    }

    fn series_for(&self, values: &[String]) -> PyResult<Series> {
        let key: String = self
            .labelnames
            .iter()
            .zip(values)
            .map(|(k, v)| format!("{k}\u{1e}{v}\u{1f}"))
            .collect();
        let mut cache = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let index = match cache.get(&key) {
            Some(i) => *i,
            None => {
                let i = register(self.kind, &self.name, &key, &self.help, &self.bounds)
                    .map_err(PyValueError::new_err)?;
                cache.insert(key, i);
                i
            }
        };
        Ok(Series { kind: self.kind, index })
    }

    fn unlabelled(&self) -> PyResult<Series> {
        if !self.labelnames.is_empty() {
            return Err(PyValueError::new_err(format!(
                "metric {:?} has labels; call .labels(...) first",
                self.name
            )));
        }
        self.series_for(&[])
    }
}

#[pymethods]
impl Metric {
    /// The series for these label values (positional, or by name).
    #[pyo3(signature = (*values, **named))]
    fn labels(
        &self,
        values: &Bound<'_, PyTuple>,
        named: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Series> {
        let values: Vec<String> = match named {
            Some(named) if !named.is_empty() => self
                .labelnames
                .iter()
                .map(|l| {
                    named
                        .get_item(l)?
                        .map(|v| v.to_string())
                        .ok_or_else(|| PyValueError::new_err(format!("missing label {l:?}")))
                })
                .collect::<PyResult<_>>()?,
            _ => values.iter().map(|v| v.to_string()).collect(),
        };
        if values.len() != self.labelnames.len() {
            return Err(PyValueError::new_err(format!(
                "metric {:?} takes labels {:?}, got {} value(s)",
                self.name,
                self.labelnames,
                values.len()
            )));
        }
        self.series_for(&values)
    }

    #[pyo3(signature = (amount = 1.0))]
    fn inc(&self, amount: f64) -> PyResult<()> {
        self.unlabelled()?.inc(amount)
    }

    #[pyo3(signature = (amount = 1.0))]
    fn dec(&self, amount: f64) -> PyResult<()> {
        self.unlabelled()?.dec(amount)
    }

    fn set(&self, value: f64) -> PyResult<()> {
        self.unlabelled()?.set(value)
    }

    fn observe(&self, value: f64) -> PyResult<()> {
        self.unlabelled()?.observe(value)
    }
}

#[pymethods]
impl Series {
    /// Counter/gauge: add `amount` (counters refuse negative amounts).
    #[pyo3(signature = (amount = 1.0))]
    fn inc(&self, amount: f64) -> PyResult<()> {
        match self.kind {
            UserMetricKind::Histogram => {
                Err(PyValueError::new_err("histograms have observe(), not inc()"))
            }
            UserMetricKind::Counter if amount < 0.0 => {
                Err(PyValueError::new_err("counters can only increase"))
            }
            _ => {
                add_f64(&entry(self.index).expect("registered").value, amount);
                Ok(())
            }
        }
    }

    /// Gauge: subtract `amount`.
    #[pyo3(signature = (amount = 1.0))]
    fn dec(&self, amount: f64) -> PyResult<()> {
        if self.kind != UserMetricKind::Gauge {
            return Err(PyValueError::new_err("only gauges have dec()"));
        }
        add_f64(&entry(self.index).expect("registered").value, -amount);
        Ok(())
    }

    /// Gauge: set the value (shared by all workers: the last write wins).
    fn set(&self, value: f64) -> PyResult<()> {
        if self.kind != UserMetricKind::Gauge {
            return Err(PyValueError::new_err("only gauges have set()"));
        }
        entry(self.index).expect("registered").value.store(value.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Histogram: record one observation.
    fn observe(&self, value: f64) -> PyResult<()> {
        if self.kind != UserMetricKind::Histogram {
            return Err(PyValueError::new_err("only histograms have observe()"));
        }
        let e = entry(self.index).expect("registered");
        let n = e.bucket_count.load(Ordering::Relaxed) as usize;
        let slot = (0..n)
            .find(|b| value <= f64::from_bits(e.bounds[*b].load(Ordering::Relaxed)))
            .unwrap_or(n);
        e.buckets[slot].fetch_add(1, Ordering::Relaxed);
        add_f64(&e.sum, value);
        Ok(())
    }
}

fn label_names(names: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match names {
        None => Ok(Vec::new()),
        Some(n) => n.try_iter()?.map(|v| v?.extract::<String>()).collect(),
    }
}

/// `metrics.Counter(name, documentation, labelnames=())`: a value that only goes up.
#[pyfunction]
#[pyo3(name = "Counter", signature = (name, documentation, labelnames = None))]
pub fn counter(
    name: &str,
    documentation: &str,
    labelnames: Option<&Bound<'_, PyAny>>,
) -> PyResult<Metric> {
    Metric::new(UserMetricKind::Counter, name, documentation, label_names(labelnames)?, Vec::new())
}

/// `metrics.Gauge(name, documentation, labelnames=())`: a value that goes up and down.
#[pyfunction]
#[pyo3(name = "Gauge", signature = (name, documentation, labelnames = None))]
pub fn gauge(
    name: &str,
    documentation: &str,
    labelnames: Option<&Bound<'_, PyAny>>,
) -> PyResult<Metric> {
    Metric::new(UserMetricKind::Gauge, name, documentation, label_names(labelnames)?, Vec::new())
}

/// Default histogram buckets (seconds), as prometheus_client's.
const DEFAULT_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// `metrics.Histogram(name, documentation, labelnames=(), buckets=...)`.
#[pyfunction]
#[pyo3(name = "Histogram", signature = (name, documentation, labelnames = None, buckets = None))]
pub fn histogram(
    name: &str,
    documentation: &str,
    labelnames: Option<&Bound<'_, PyAny>>,
    buckets: Option<Vec<f64>>,
) -> PyResult<Metric> {
    let mut bounds: Vec<f64> = buckets
        .unwrap_or_else(|| DEFAULT_BUCKETS.to_vec())
        .into_iter()
        .filter(|b| b.is_finite())
        .collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    if bounds.is_empty() || bounds.len() > MAX_BUCKETS {
        return Err(PyValueError::new_err(format!(
            "a histogram needs 1 to {MAX_BUCKETS} finite buckets"
        )));
    }
    Metric::new(UserMetricKind::Histogram, name, documentation, label_names(labelnames)?, bounds)
}
