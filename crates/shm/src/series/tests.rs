//! Tests of the series table: registration (same series, full table, long text), value
//! updates, the scrape's sums, and a forked process's writes seen by its parent.

use ferrocorn_metrics::UserMetricKind::{Counter, Gauge, Histogram};

use super::*;

#[test]
fn registering_twice_gives_the_same_series() {
    let table = SeriesTable::with_capacity(4).unwrap();
    let labels = encode_labels([("path", "/a")]);
    let a = table.register(Counter, "hits", &labels, "Hits.", &[]).unwrap();
    let b = table.register(Counter, "hits", &labels, "Other help.", &[]).unwrap();
    assert_eq!(a, b);
    let other_labels = encode_labels([("path", "/b")]);
    let c = table.register(Counter, "hits", &other_labels, "Hits.", &[]).unwrap();
    let d = table.register(Gauge, "hits", &labels, "Hits.", &[]).unwrap();
    assert!(c != a && d != a && d != c, "labels and kind are part of the series");
    assert_eq!(table.series().count(), 3);
}

#[test]
fn a_full_table_refuses_new_series_but_finds_old_ones() {
    let table = SeriesTable::with_capacity(2).unwrap();
    let a = table.register(Gauge, "a", "", "", &[]).unwrap();
    table.register(Gauge, "b", "", "", &[]).unwrap();
    let err = table.register(Gauge, "c", "", "", &[]).unwrap_err();
    assert_eq!(err, RegisterError::Full { capacity: 2 });
    assert_eq!(err.to_string(), "too many metric series (max 2)");
    assert_eq!(table.register(Gauge, "a", "", "", &[]), Ok(a));
}

#[test]
fn text_longer_than_the_entry_is_refused() {
    let table = SeriesTable::with_capacity(2).unwrap();
    let long = "x".repeat(MAX_TEXT + 1);
    for (name, labels, help) in [(&*long, "", ""), ("n", &*long, ""), ("n", "", &*long)] {
        let err = table.register(Counter, name, labels, help, &[]).unwrap_err();
        assert_eq!(err, RegisterError::TextTooLong(long.clone()));
        assert!(err.to_string().starts_with("metric text too long (max 256 bytes)"));
    }
    let fits = "y".repeat(MAX_TEXT);
    let id = table.register(Counter, &fits, "", &fits, &[]).unwrap();
    assert_eq!(table.get(id).unwrap().name(), fits);
    let bounds = [1.0; MAX_BUCKETS + 1];
    let err = table.register(Histogram, "h", "", "", &bounds).unwrap_err();
    assert_eq!(err, RegisterError::TooManyBuckets(MAX_BUCKETS + 1));
    assert_eq!(table.series().count(), 1, "nothing claimed by a refused registration");
}

#[test]
fn values_add_set_and_observe() {
    let table = SeriesTable::with_capacity(4).unwrap();
    let c = table.register(Counter, "c", "", "C.", &[]).unwrap();
    let g = table.register(Gauge, "g", "", "G.", &[]).unwrap();
    let h = table.register(Histogram, "h", "", "H.", &[0.25, 1.0]).unwrap();
    table.add(c, 1.0);
    table.add(c, 2.5);
    table.set(g, 7.0);
    table.add(g, -2.0);
    for v in [0.125, 0.25, 0.5, 3.0] {
        table.observe(h, v);
    }
    assert_eq!(table.get(c).unwrap().value(), 3.5);
    assert_eq!(table.get(g).unwrap().value(), 5.0);
    let hist = table.get(h).unwrap();
    assert_eq!(hist.buckets(), vec![(0.25, 2), (1.0, 1), (f64::INFINITY, 1)]);
    assert_eq!(hist.sum(), 3.875);
    assert_eq!(hist.help(), "H.");
    assert!(table.get(c).unwrap().buckets().is_empty());
}

#[test]
fn collect_parses_labels_in_order() {
    let table = SeriesTable::with_capacity(4).unwrap();
    let labels = encode_labels([("method", "GET"), ("path", "/x")]);
    let id = table.register(Counter, "req", &labels, "Requests.", &[]).unwrap();
    table.add(id, 2.0);
    let metrics = table.collect();
    assert_eq!(metrics.len(), 1);
    let m = &metrics[0];
    assert_eq!((m.name.as_str(), m.help.as_str(), m.kind), ("req", "Requests.", Counter));
    let pairs = [("method", "GET"), ("path", "/x")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(m.labels, pairs);
    assert_eq!(m.value, 2.0);
}

#[test]
fn a_forked_process_s_series_and_values_are_seen_by_the_parent() {
    let table = SeriesTable::with_capacity(8).unwrap();
    let shared = table.register(Counter, "shared", "", "", &[]).unwrap();
    let hist = table.register(Histogram, "lat", "", "", &[1.0]).unwrap();
    // SAFETY: the test harness may run other threads; the child only registers (no allocation
    // on success) and updates atomics, then _exits without running destructors.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        table.add(shared, 3.0);
        table.observe(hist, 0.5);
        table.observe(hist, 2.0);
        let code = match table.register(Gauge, "child", "", "", &[]) {
            Ok(id) if table.register(Counter, "shared", "", "", &[]) == Ok(shared) => {
                table.set(id, 42.0);
                0
            }
            _ => 1,
        };
        // SAFETY: immediate exit of the forked test child without running destructors.
        unsafe { libc::_exit(code) };
    }
    table.add(shared, 1.0);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child: {status}");
    assert_eq!(table.get(shared).unwrap().value(), 4.0);
    let lat = table.get(hist).unwrap();
    assert_eq!(lat.buckets(), vec![(1.0, 1), (f64::INFINITY, 1)]);
    assert_eq!(lat.sum(), 2.5);
    let child = table.series().find(|s| s.name() == "child").expect("child's series");
    assert_eq!((child.kind(), child.value()), (Gauge, 42.0));
    assert_eq!(table.register(Gauge, "child", "", "", &[]), Ok(child.id()));
}

#[test]
fn duplicate_entries_are_summed_for_a_scrape() {
    // Two entries can hold one series when two processes claim at once; the scrape adds them.
    let table = SeriesTable::with_capacity(4).unwrap();
    let a = table.register(Histogram, "h", "", "", &[1.0]).unwrap();
    table.observe(a, 0.5);
    let b = SeriesId(1);
    table.entry(1).claim().unwrap().publish(Histogram, ["h", "", ""], &[1.0]);
    table.observe(b, 0.5);
    table.observe(b, 5.0);
    let metrics = table.collect();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].buckets, vec![(1.0, 2), (f64::INFINITY, 1)]);
    assert_eq!(metrics[0].sum, 6.0);
}
