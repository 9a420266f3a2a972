//! Command-line parsing for `ferrocorn bench`: ab/wrk-style options into a
//! [`BenchOptions`], plus the usage text. Accepts `-c 64`, `-c64`,
//! `--connections 64` and `--connections=64`.

use std::time::Duration;

use crate::BenchOptions;
use crate::error::BenchError;
use crate::target::{parse_header, validate_method};

/// Usage text for `--help`.
pub const USAGE: &str = "\
usage: ferrocorn bench [options] URL

Load-test an HTTP/1.x server (http:// only). Closed loop by default (like
wrk); --rate R switches to an open loop whose latency is measured from each
request's intended send time (no coordinated omission, like wrk2).

options:
  -c, --connections N    open connections (default 10)
  -t, --threads N        load threads (default min(CPUs, connections))
  -n, --requests N       stop after N requests (attempts, errors included)
  -d, --duration D       run for D (default 10s unless -n is given), e.g. 30s, 500ms, 2m
  -m, --method M         request method (default GET)
  -H, --header 'K: V'    add a request header (repeatable)
      --body STR         request body
      --body-file PATH   request body from a file
      --timeout D        per-request timeout (default 10s)
      --no-keepalive     new connection per request (sends Connection: close)
      --http1.0          send HTTP/1.0 requests
      --warmup D         run the load for D first and discard its measurements
      --rate R           open loop: R requests per second over all connections
      --json             print one JSON object (schema ferrocorn-bench/1)
      --latency          accepted for wrk compatibility (percentiles always shown)
  -h, --help             this help
";

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Print usage and exit 0.
    Help,
    /// Run a benchmark.
    Run {
        /// The options.
        opts: Box<BenchOptions>,
        /// Print JSON instead of text.
        json: bool,
    },
}

/// Parses a duration: `10s`, `500ms`, `250us`, `2m`, `1h`, or plain seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, BenchError> {
    let bad = || BenchError::Usage(format!("bad duration {s:?}"));
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

fn parse_num<T: std::str::FromStr>(opt: &str, v: &str) -> Result<T, BenchError> {
    v.parse().map_err(|_| BenchError::Usage(format!("bad value {v:?} for {opt}")))
}

/// Parses the arguments (without program name and without `bench`).
pub fn parse(args: &[String]) -> Result<Command, BenchError> {
    let mut opts = BenchOptions::default();
    let mut url: Option<String> = None;
    let mut json = false;
    let mut threads_given = false;
    let mut body_file: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        if !arg.starts_with('-') || arg == "-" {
            if url.replace(arg.to_string()).is_some() {
                return Err(BenchError::Usage(format!("unexpected argument {arg:?}")));
            }
            continue;
        }
        // Split "--opt=value" and "-c64".
        let (name, inline): (&str, Option<&str>) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            }
        } else {
            let (n, rest) = arg[1..].split_at(arg[1..].chars().next().map_or(0, char::len_utf8));
            (n, (!rest.is_empty()).then_some(rest))
        };
        let flag = |set: &mut bool| -> Result<(), BenchError> {
            if inline.is_some() {
                return Err(BenchError::Usage(format!("{arg} takes no value")));
            }
            *set = true;
            Ok(())
        };
        let mut value = || -> Result<String, BenchError> {
            if let Some(v) = inline {
                return Ok(v.to_string());
            }
            let v = args.get(i).ok_or_else(|| BenchError::Usage(format!("{arg} needs a value")))?;
            i += 1;
            Ok(v.clone())
        };
        match name {
            "h" | "help" => return Ok(Command::Help),
            "c" | "connections" => opts.connections = parse_num(arg, &value()?)?,
            "t" | "threads" => {
                opts.threads = parse_num(arg, &value()?)?;
                threads_given = true;
            }
            "n" | "requests" => opts.requests = Some(parse_num(arg, &value()?)?),
            "d" | "duration" => opts.duration = Some(parse_duration(&value()?)?),
            "m" | "method" => {
                let m = value()?;
                validate_method(&m)?;
                opts.method = m;
            }
            "H" | "header" => opts.headers.push(parse_header(&value()?)?),
            "body" => opts.body = Some(value()?.into_bytes()),
            "body-file" => body_file = Some(value()?),
            "timeout" => opts.timeout = parse_duration(&value()?)?,
            "warmup" => opts.warmup = parse_duration(&value()?)?,
            "rate" | "R" => opts.rate = Some(parse_num(arg, &value()?)?),
            "no-keepalive" => {
                let mut close = false;
                flag(&mut close)?;
                opts.keepalive = !close;
            }
            "http1.0" => flag(&mut opts.http10)?,
            "json" => flag(&mut json)?,
            "latency" => {
                let mut ignored = false;
                flag(&mut ignored)?;
            }
            _ => return Err(BenchError::Usage(format!("unknown option {arg:?}"))),
        }
    }
    let Some(url) = url else {
        return Err(BenchError::Usage("missing URL".into()));
    };
    opts.url = url;
    if let Some(path) = body_file {
        if opts.body.is_some() {
            return Err(BenchError::Usage("--body and --body-file are exclusive".into()));
        }
        let body = std::fs::read(&path).map_err(|source| BenchError::Io {
            what: format!("cannot read --body-file {path}"),
            source,
        })?;
        opts.body = Some(body);
    }
    if !threads_given {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        opts.threads = cpus.min(opts.connections).max(1);
    }
    Ok(Command::Run { opts: Box::new(opts), json })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run_opts(s: &str) -> (BenchOptions, bool) {
        match parse(&args(s)).unwrap() {
            Command::Run { opts, json } => (*opts, json),
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn parses_options() {
        let (o, json) = run_opts(
            "-c64 -t 2 -n 500 -d3s --method POST -H X-A:1 --header=X-B:2 --body hi --timeout 250ms \
             --no-keepalive --http1.0 --warmup 1s --rate 200 --json --latency http://h/",
        );
        assert!(json);
        assert_eq!((o.connections, o.threads, o.requests), (64, 2, Some(500)));
        assert_eq!(o.duration, Some(Duration::from_secs(3)));
        assert_eq!(o.method, "POST");
        assert_eq!(o.headers, vec![("X-A".into(), "1".into()), ("X-B".into(), "2".into())]);
        assert_eq!(o.body.as_deref(), Some(&b"hi"[..]));
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert!(!o.keepalive && o.http10);
        assert_eq!(o.warmup, Duration::from_secs(1));
        assert_eq!(o.rate, Some(200.0));
        assert_eq!(o.url, "http://h/");
        let (o, json) = run_opts("--connections=3 http://h/");
        assert!(!json);
        assert!(o.threads >= 1 && o.threads <= 3);
    }

    #[test]
    fn rejects_bad_args() {
        for a in [
            "",
            "-c",
            "-c x http://h/",
            "--bogus http://h/",
            "http://a/ http://b/",
            "-d 5parsecs http://h/",
            "--json=1 http://h/",
            "-H nocolon http://h/",
            "-m G:T http://h/",
        ] {
            assert!(matches!(parse(&args(a)), Err(BenchError::Usage(_))), "{a}");
        }
        assert!(matches!(parse(&args("--help")), Ok(Command::Help)));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("20us").unwrap(), Duration::from_micros(20));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }
}
