//! App-defined metrics shared by all workers: `from ferrocorn import metrics` gives `Counter`,
//! `Gauge` and `Histogram`, Python classes over the shared-memory series table of
//! `ferrocorn_shm::series` (mapped by the master before the first fork), so every worker adds
//! into the same series and one scrape shows their sum. This file owns the Python side: name and
//! label checks, the per-metric cache of series, and which operation each kind allows.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use ferrocorn_metrics::{UserMetric, UserMetricKind};
use ferrocorn_shm::series::{MAX_BUCKETS, SeriesId, SeriesTable, encode_labels};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

static TABLE: OnceLock<SeriesTable> = OnceLock::new();

/// Map the shared table; the master calls this before forking (workers inherit it). Without
/// it (app code run outside ferrocorn) a private table is created on first use.
pub fn init() -> std::io::Result<()> {
    if TABLE.get().is_some() {
        return Ok(());
    }
    let _ = TABLE.set(SeriesTable::new()?);
    Ok(())
}

fn table() -> Option<&'static SeriesTable> {
    if TABLE.get().is_none() {
        let _ = init();
    }
    TABLE.get()
}

/// The table a registered series lives in (mapped before any series could be registered).
fn registered() -> &'static SeriesTable {
    TABLE.get().expect("registered")
}

/// Every app-defined series, summed over duplicate registrations.
pub fn collect() -> Vec<UserMetric> {
    table().map(SeriesTable::collect).unwrap_or_default()
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
    series: Mutex<HashMap<String, SeriesId>>,
}

/// One labelled series of a metric.
#[pyclass(module = "ferrocorn._native", frozen)]
pub struct Series {
    kind: UserMetricKind,
    id: SeriesId,
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
        let key = encode_labels(
            self.labelnames.iter().zip(values).map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let mut cache = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let id = match cache.get(&key) {
            Some(id) => *id,
            None => {
                let table =
                    table().ok_or_else(|| PyValueError::new_err("metrics table unavailable"))?;
                let id = table
                    .register(self.kind, &self.name, &key, &self.help, &self.bounds)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                cache.insert(key, id);
                id
            }
        };
        Ok(Series { kind: self.kind, id })
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
                registered().add(self.id, amount);
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
        registered().add(self.id, -amount);
        Ok(())
    }

    /// Gauge: set the value (shared by all workers: the last write wins).
    fn set(&self, value: f64) -> PyResult<()> {
        if self.kind != UserMetricKind::Gauge {
            return Err(PyValueError::new_err("only gauges have set()"));
        }
        registered().set(self.id, value);
        Ok(())
    }

    /// Histogram: record one observation.
    fn observe(&self, value: f64) -> PyResult<()> {
        if self.kind != UserMetricKind::Histogram {
            return Err(PyValueError::new_err("only histograms have observe()"));
        }
        registered().observe(self.id, value);
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
