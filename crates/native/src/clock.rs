//! Wall-clock formatting: the HTTP `Date` header (IMF-fixdate, cached per second), the error
//! log's `[%Y-%m-%d %H:%M:%S %z]` stamp and the access log's `[%d/%b/%Y:%H:%M:%S %z]` stamp,
//! both in local time like Gunicorn's.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// A broken-down civil time plus its offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    /// Four-digit year.
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=60.
    pub second: u32,
    /// Offset from UTC in seconds (east positive).
    pub offset_seconds: i64,
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// UTC offset of local time at `secs`, from the C library (honours `TZ`).
fn local_offset(secs: i64) -> i64 {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: `tm` is a plain C struct for which all-zero bytes are a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call; localtime_r is the
    // reentrant variant and writes only into `tm`.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok { tm.tm_gmtoff as i64 } else { 0 }
}

/// The civil time of `t` in the local time zone.
pub fn local_time(t: SystemTime) -> CivilTime {
    let secs = unix_seconds(t);
    let offset = local_offset(secs);
    civil(secs + offset, offset)
}

fn civil(secs: i64, offset_seconds: i64) -> CivilTime {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    CivilTime {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
        offset_seconds,
    }
}

fn offset_text(offset: i64) -> String {
    let sign = if offset < 0 { '-' } else { '+' };
    let abs = offset.abs();
    format!("{sign}{:02}{:02}", abs / 3600, abs % 3600 / 60)
}

/// `[2026-11-26 19:26:11 +0000]`, the error log's timestamp.
pub fn error_log_stamp(t: SystemTime) -> String {
    let c = local_time(t);
    format!(
        "[{:04}-{:02}-{:02} {:02}:{:02}:{:02} {}]",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        offset_text(c.offset_seconds)
    )
}

/// `[26/Nov/2026:19:26:11 +0000]`, the access log's `%(t)s`.
pub fn access_log_stamp(t: SystemTime) -> String {
    let c = local_time(t);
    format!(
        "[{:02}/{}/{:04}:{:02}:{:02}:{:02} {}]",
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.minute,
        c.second,
        offset_text(c.offset_seconds)
    )
}

/// `Thu, 26 Nov 2026 19:26:11 GMT` for the `Date` header.
pub fn http_date(secs: i64) -> String {
    let c = civil(secs, 0);
    let weekday = DAYS[secs.div_euclid(86_400).rem_euclid(7) as usize];
    format!(
        "{weekday}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

thread_local! {
    static DATE_CACHE: RefCell<(i64, Vec<u8>)> = const { RefCell::new((i64::MIN, Vec::new())) };
}

/// The Unix time in whole seconds, from `CLOCK_REALTIME_COARSE` (a few ms behind the precise
/// clock at most, at a fifth of its cost): for what counts whole seconds on every request, the
/// `Date` header and the cache's freshness.
pub fn unix_seconds_now() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, owned `ts`.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
        ts.tv_sec
    } else {
        unix_seconds(SystemTime::now())
    }
}

/// Calls `f` with the current `Date` header value; formatted at most once per second per thread.
pub fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = unix_seconds_now();
    DATE_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != now {
            *cache = (now, http_date(now).into_bytes());
        }
        f(&cache.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_date_matches_known_instants() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_795_706_771), "Thu, 26 Nov 2026 15:26:11 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn offsets_format_with_sign() {
        assert_eq!(offset_text(0), "+0000");
        assert_eq!(offset_text(-5 * 3600 - 1800), "-0530");
        assert_eq!(offset_text(3600), "+0100");
    }
}
