//! `--cache-valid` (nginx's `proxy_cache_valid`): how long a response of each status stays
//! fresh when it carries no freshness of its own. Written `200=300,301=3600,404=60`, with
//! `any=SECONDS` matching every status. As in nginx, the entries are tried in the order given
//! and the first that matches wins, so `any` placed first shadows the rest.

use std::fmt;

/// The per-status validity table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheValid {
    /// `(status, seconds)` in the order given; status `None` is `any`.
    entries: Vec<(Option<u16>, u64)>,
}

/// Why a `--cache-valid` value cannot be used; names the bad part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSpecError {
    /// The part of the value that is wrong.
    pub part: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for ValidSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: {}; write STATUS=SECONDS pairs separated by commas, e.g. 200=300,404=60,any=10",
            self.part, self.problem
        )
    }
}

impl std::error::Error for ValidSpecError {}

impl CacheValid {
    /// Parse `200=300,301=3600,any=60` (whitespace around parts is ignored; an empty value
    /// is an empty table).
    pub fn parse(spec: &str) -> Result<CacheValid, ValidSpecError> {
        let mut entries = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |problem| ValidSpecError { part: part.to_owned(), problem };
            let (status, seconds) = part.split_once('=').ok_or_else(|| bad("no '='"))?;
            let status = match status.trim() {
                s if s.eq_ignore_ascii_case("any") => None,
                s => {
                    let code: u16 = s.parse().map_err(|_| bad("the status is not a number"))?;
                    if !(100..=599).contains(&code) {
                        return Err(bad("the status is not between 100 and 599"));
                    }
                    Some(code)
                }
            };
            let seconds: u64 =
                seconds.trim().parse().map_err(|_| bad("the seconds are not a whole number"))?;
            entries.push((status, seconds));
        }
        Ok(CacheValid { entries })
    }

    /// Seconds a response of `status` stays fresh by this table; 0 when no entry matches (not
    /// stored, unless the response gave its own freshness).
    pub fn seconds_for(&self, status: u16) -> u64 {
        self.entries
            .iter()
            .find(|(s, _)| s.is_none_or(|s| s == status))
            .map_or(0, |&(_, seconds)| seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_any_in_the_order_given() {
        let table = CacheValid::parse("200=300, 301=3600,404=60,any=10").unwrap();
        assert_eq!(table.seconds_for(200), 300);
        assert_eq!(table.seconds_for(301), 3600);
        assert_eq!(table.seconds_for(404), 60);
        assert_eq!(table.seconds_for(500), 10);
        // nginx: the first match wins, so `any` first shadows what follows
        let shadowed = CacheValid::parse("any=5,200=300").unwrap();
        assert_eq!(shadowed.seconds_for(200), 5);
    }

    #[test]
    fn an_empty_table_stores_nothing_by_status() {
        assert_eq!(CacheValid::parse("").unwrap().seconds_for(200), 0);
        assert_eq!(CacheValid::parse("404=60").unwrap().seconds_for(200), 0);
    }

    #[test]
    fn a_bad_part_is_named() {
        for (spec, part) in [
            ("200", "200"),
            ("200=x", "200=x"),
            ("abc=5", "abc=5"),
            ("99=5", "99=5"),
            ("200=-1", "200=-1"),
            ("200=5,600=1", "600=1"),
        ] {
            let err = CacheValid::parse(spec).unwrap_err();
            assert_eq!(err.part, part, "{spec}");
            assert!(err.to_string().contains("STATUS=SECONDS"), "{err}");
        }
    }
}
