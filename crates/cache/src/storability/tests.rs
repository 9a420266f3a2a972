//! nginx's decisions as a table: each row a response (status and headers in order) and what
//! nginx does with it under `proxy_cache_valid 200 301 302 10m; proxy_cache_valid 404 1m;`.

use super::*;

const NOW: i64 = 1_700_000_000;

/// `Tue, 14 Nov 2023 22:13:20 GMT` is NOW; these are an hour after and before.
const IN_AN_HOUR: &str = "Tue, 14 Nov 2023 23:13:20 GMT";
const AN_HOUR_AGO: &str = "Tue, 14 Nov 2023 21:13:20 GMT";

fn valid() -> CacheValid {
    CacheValid::parse("200=600,301=600,302=600,404=60").unwrap()
}

fn decide(status: u16, headers: &[(&str, &str)]) -> Storability {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    storability(status, &headers, NOW, &valid())
}

fn fresh_for(seconds: i64) -> Storability {
    Storability::Store(Freshness {
        valid_until: NOW + seconds,
        updating_sec: None,
        error_sec: None,
        vary: None,
    })
}

fn refused(why: NotStored) -> Storability {
    Storability::NotStored(why)
}

/// One row of the table: what it shows, the status, the headers in order, nginx's decision.
type Row<'a> = (&'a str, u16, Vec<(&'a str, &'a str)>, Storability);

#[test]
fn nginx_precedence_table() {
    use NotStored::*;
    let long_vary = "X-Header-Name-".repeat(10);
    #[rustfmt::skip] // one response per line reads as the table it is
    let rows: Vec<Row> = vec![
        ("no freshness headers: by status", 200, vec![], fresh_for(600)),
        ("404 by its own entry", 404, vec![], fresh_for(60)),
        ("a status without an entry", 500, vec![], refused(NoValidity)),
        ("max-age", 200, vec![("Cache-Control", "max-age=30")], fresh_for(30)),
        ("max-age on a status without an entry", 500, vec![("Cache-Control", "max-age=30")], fresh_for(30)),
        ("s-maxage wins over max-age", 200, vec![("Cache-Control", "max-age=30, s-maxage=90")], fresh_for(90)),
        ("public, max-age", 200, vec![("Cache-Control", "public, max-age=45")], fresh_for(45)),
        ("max-age=0", 200, vec![("Cache-Control", "max-age=0")], refused(CacheControlRefuses)),
        ("no-store", 200, vec![("Cache-Control", "no-store")], refused(CacheControlRefuses)),
        ("no-cache", 200, vec![("Cache-Control", "no-cache")], refused(CacheControlRefuses)),
        ("private", 200, vec![("Cache-Control", "private, max-age=60")], refused(CacheControlRefuses)),
        ("upper case", 200, vec![("cache-control", "Max-Age=20")], fresh_for(20)),
        ("malformed max-age", 200, vec![("Cache-Control", "max-age=ten")], refused(MalformedCacheControl)),
        ("quoted max-age is malformed", 200, vec![("Cache-Control", "max-age=\"10\"")], refused(MalformedCacheControl)),
        ("Expires in the future", 200, vec![("Expires", IN_AN_HOUR)], fresh_for(3600)),
        ("Expires in the past", 200, vec![("Expires", AN_HOUR_AGO)], refused(Expired)),
        ("Expires not a date", 200, vec![("Expires", "0")], refused(Expired)),
        ("max-age wins over Expires (either order)", 200, vec![("Expires", IN_AN_HOUR), ("Cache-Control", "max-age=10")], fresh_for(10)),
        ("max-age first, Expires ignored", 200, vec![("Cache-Control", "max-age=10"), ("Expires", AN_HOUR_AGO)], fresh_for(10)),
        ("a past Expires cleared by a later max-age", 200, vec![("Expires", AN_HOUR_AGO), ("Cache-Control", "max-age=10")], fresh_for(10)),
        ("no-cache with a future Expires", 200, vec![("Cache-Control", "no-cache"), ("Expires", IN_AN_HOUR)], refused(CacheControlRefuses)),
        ("X-Accel-Expires seconds", 200, vec![("X-Accel-Expires", "120")], fresh_for(120)),
        ("X-Accel-Expires wins over max-age", 200, vec![("X-Accel-Expires", "120"), ("Cache-Control", "max-age=5")], fresh_for(120)),
        ("X-Accel-Expires after max-age still wins", 200, vec![("Cache-Control", "max-age=5"), ("X-Accel-Expires", "120")], fresh_for(120)),
        ("X-Accel-Expires overrides no-cache seen before", 200, vec![("Cache-Control", "no-cache"), ("X-Accel-Expires", "120")], fresh_for(120)),
        ("X-Accel-Expires first, then private is skipped", 200, vec![("X-Accel-Expires", "120"), ("Cache-Control", "private")], fresh_for(120)),
        ("X-Accel-Expires overrides a past Expires", 200, vec![("Expires", AN_HOUR_AGO), ("X-Accel-Expires", "120")], fresh_for(120)),
        ("X-Accel-Expires: 0", 200, vec![("X-Accel-Expires", "0"), ("Cache-Control", "max-age=60")], refused(AccelExpiresZero)),
        ("X-Accel-Expires absolute", 200, vec![("X-Accel-Expires", "@1700000500")], fresh_for(500)),
        ("X-Accel-Expires unparsable is ignored", 200, vec![("X-Accel-Expires", "soon")], fresh_for(600)),
        ("a second X-Accel-Expires is ignored", 200, vec![("X-Accel-Expires", "120"), ("X-Accel-Expires", "0")], fresh_for(120)),
        ("a second Expires is ignored", 200, vec![("Expires", IN_AN_HOUR), ("Expires", AN_HOUR_AGO)], fresh_for(3600)),
        ("Set-Cookie", 200, vec![("Set-Cookie", "a=1"), ("Cache-Control", "max-age=60")], refused(SetCookie)),
        ("Set-Cookie beats X-Accel-Expires", 200, vec![("X-Accel-Expires", "60"), ("Set-Cookie", "a=1")], refused(SetCookie)),
        ("Vary: *", 200, vec![("Vary", "*")], refused(VaryAll)),
        ("a long Vary", 200, vec![("Vary", long_vary.as_str())], refused(VaryTooLong)),
    ];
    for (name, status, headers, expected) in rows {
        assert_eq!(decide(status, &headers), expected, "{name}");
    }
}

#[test]
fn stale_windows_from_the_response_itself() {
    let got = decide(200, &[("Cache-Control", "max-age=10, stale-while-revalidate=30")]);
    assert_eq!(
        got,
        Storability::Store(Freshness {
            valid_until: NOW + 10,
            updating_sec: Some(30),
            error_sec: Some(30),
            vary: None
        })
    );
    let got = decide(
        200,
        &[("Cache-Control", "max-age=10, stale-while-revalidate=30, stale-if-error=86400")],
    );
    let Storability::Store(f) = got else { panic!("{got:?}") };
    assert_eq!((f.updating_sec, f.error_sec), (Some(30), Some(86400)));
    // the windows count with X-Accel-Expires too, and alone with --cache-valid
    let got = decide(200, &[("X-Accel-Expires", "5"), ("Cache-Control", "stale-if-error=60")]);
    let Storability::Store(f) = got else { panic!("{got:?}") };
    assert_eq!((f.valid_until, f.error_sec), (NOW + 5, Some(60)));
    let got = decide(200, &[("Cache-Control", "stale-if-error=60")]);
    let Storability::Store(f) = got else { panic!("{got:?}") };
    assert_eq!((f.valid_until, f.error_sec), (NOW + 600, Some(60)));
    assert_eq!(
        decide(200, &[("Cache-Control", "max-age=10, stale-if-error=x")]),
        refused(NotStored::MalformedCacheControl)
    );
}

#[test]
fn vary_lines_are_kept_for_the_variants() {
    let got = decide(200, &[("Vary", "Accept-Encoding"), ("vary", "Accept-Language")]);
    let Storability::Store(f) = got else { panic!("{got:?}") };
    assert_eq!(f.vary.as_deref(), Some("Accept-Encoding, Accept-Language"));
}

#[test]
fn a_huge_max_age_saturates_instead_of_overflowing() {
    let got = decide(200, &[("Cache-Control", "max-age=99999999999999999999999")]);
    let Storability::Store(f) = got else { panic!("{got:?}") };
    assert_eq!(f.valid_until, i64::MAX);
}
