//! `ferrocorn ctl`: argument parsing, the one-shot request and the human (or
//! `--json`) rendering of the reply (the `cache` commands' words and rendering are in
//! `cache.rs`, the `upstreams` commands' in `upstreams.rs`).

use std::io::Write;

use serde_json::{Value, json};

use crate::SocketEnv;
use crate::cache::{self, CacheCommand, PurgeOptions};
use crate::client::request;
use crate::render;
use crate::upstreams::{self, UpstreamsCommand};

const USAGE: &str = "\
usage: ferrocorn ctl [--socket PATH] [--json] COMMAND

commands:
  status                 server summary and a worker table
  workers                worker table
  workers add [N]        add N workers (default 1); --pool PREFIX: to that worker pool
  workers remove [N]     remove N workers (default 1); --pool PREFIX: from that pool
  reload                 graceful reload (like SIGHUP)
  reopen-logs            reopen log files (like SIGUSR1)
  shutdown [--graceful]  stop the server (immediately unless --graceful)
  cache stats            the response cache's store and counters
  cache purge KEY        remove a cached response with all its Vary variants
                         (KEY as --cache-key renders it, e.g. httpexample.com/a?b)
  cache purge --prefix P remove every cached response whose key starts with P
  cache purge --all      remove every cached response (the app cache stays)
  upstreams              the load balancer's upstreams: state, requests, failures
  upstreams drain ADDR   send no new requests to an upstream (ADDR as configured)
  upstreams down ADDR    take an upstream out of service
  upstreams up ADDR      put it back (its weight ramps up with slow_start)
  upstreams weight ADDR N  give an upstream a new weight

options:
  --socket PATH  control socket (default: $FERROCORN_CONTROL_SOCKET,
                 $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl)
  --json         print the server's JSON reply verbatim
  -h, --help     show this help
";

/// A parsed `ctl` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Status,
    Workers,
    WorkersAdd(u32, Option<String>),
    WorkersRemove(u32, Option<String>),
    Reload,
    ReopenLogs,
    Shutdown { graceful: bool },
    Cache(CacheCommand),
    Upstreams(UpstreamsCommand),
}

impl Command {
    /// The request object sent for this command.
    pub(crate) fn request(&self) -> Value {
        match self {
            Command::Status => json!({"command": "status"}),
            Command::Workers => json!({"command": "workers"}),
            Command::WorkersAdd(n, pool) => {
                with_pool(json!({"command": "workers.add", "count": n}), pool)
            }
            Command::WorkersRemove(n, pool) => {
                with_pool(json!({"command": "workers.remove", "count": n}), pool)
            }
            Command::Reload => json!({"command": "reload"}),
            Command::ReopenLogs => json!({"command": "reopen-logs"}),
            Command::Shutdown { graceful } => json!({"command": "shutdown", "graceful": graceful}),
            Command::Cache(command) => command.request(),
            Command::Upstreams(command) => command.request(),
        }
    }
}

/// Parsed `ctl` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CtlArgs {
    pub(crate) socket: Option<String>,
    pub(crate) json: bool,
    pub(crate) command: Command,
}

/// Result of parsing: run something, or print help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    Run(CtlArgs),
    Help,
}

/// `request` with the worker pool it names, when one is given.
fn with_pool(mut request: Value, pool: &Option<String>) -> Value {
    if let Some(prefix) = pool {
        request["pool"] = json!(prefix);
    }
    request
}

fn parse_count(word: Option<&String>) -> Result<u32, String> {
    match word {
        None => Ok(1),
        Some(w) => match w.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("invalid worker count {w:?}: expected a positive integer")),
        },
    }
}

pub(crate) fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut socket = None;
    let mut json = false;
    let mut graceful = false;
    let mut pool: Option<String> = None;
    let mut purge = PurgeOptions::default();
    let mut words: Vec<&String> = Vec::new();
    let mut iter = args.iter();
    let mut options_done = false;
    while let Some(arg) = iter.next() {
        if options_done || !arg.starts_with('-') || arg == "-" {
            words.push(arg);
            continue;
        }
        match arg.as_str() {
            "--" => options_done = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            "--json" => json = true,
            "--graceful" => graceful = true,
            "--all" => purge.all = true,
            "--socket" => match iter.next() {
                Some(p) => socket = Some(p.clone()),
                None => return Err("--socket needs a PATH".to_owned()),
            },
            "--pool" => match iter.next() {
                Some(p) => pool = Some(p.clone()),
                None => return Err("--pool needs a PREFIX".to_owned()),
            },
            "--prefix" => match iter.next() {
                Some(p) => purge.prefix = Some(p.clone()),
                None => return Err("--prefix needs a PREFIX".to_owned()),
            },
            other => {
                if let Some(p) = other.strip_prefix("--socket=") {
                    socket = Some(p.to_owned());
                } else if let Some(p) = other.strip_prefix("--prefix=") {
                    purge.prefix = Some(p.to_owned());
                } else {
                    return Err(format!("unknown option {other:?}"));
                }
            }
        }
    }
    let command = match words.as_slice() {
        [] => return Err("missing command".to_owned()),
        [c] if c.as_str() == "status" => Command::Status,
        [c] if c.as_str() == "workers" => Command::Workers,
        [c, sub, rest @ ..] if c.as_str() == "workers" && rest.len() <= 1 => match sub.as_str() {
            "add" => Command::WorkersAdd(parse_count(rest.first().copied())?, pool.take()),
            "remove" => Command::WorkersRemove(parse_count(rest.first().copied())?, pool.take()),
            other => return Err(format!("unknown workers subcommand {other:?} (add or remove)")),
        },
        [c] if c.as_str() == "reload" => Command::Reload,
        [c] if c.as_str() == "reopen-logs" => Command::ReopenLogs,
        [c] if c.as_str() == "shutdown" => Command::Shutdown { graceful },
        [c, rest @ ..] if c.as_str() == "cache" => {
            Command::Cache(cache::parse(rest, std::mem::take(&mut purge))?)
        }
        [c, rest @ ..] if c.as_str() == "upstreams" => Command::Upstreams(upstreams::parse(rest)?),
        [c, ..]
            if ["status", "workers", "reload", "reopen-logs", "shutdown"].contains(&c.as_str()) =>
        {
            return Err(format!("too many arguments for {c:?}"));
        }
        [c, ..] => return Err(format!("unknown command {c:?}")),
    };
    if pool.is_some() {
        return Err("--pool only applies to workers add and workers remove".to_owned());
    }
    if graceful && !matches!(command, Command::Shutdown { .. }) {
        return Err("--graceful only applies to shutdown".to_owned());
    }
    if purge != PurgeOptions::default() {
        return Err("--prefix and --all only apply to cache purge".to_owned());
    }
    Ok(Parsed::Run(CtlArgs { socket, json, command }))
}

/// Runs `ferrocorn ctl` with `args` (the words after `ctl`), resolving the
/// default socket from `env` and writing to `out`/`err`. Returns the exit
/// code: 0 ok, 1 failure (cannot connect, bad reply, or `ok:false`), 2 usage
/// error.
pub fn run_ctl(args: &[String], env: &SocketEnv, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let parsed = match parse(args) {
        Ok(Parsed::Help) => {
            let _ = out.write_all(USAGE.as_bytes());
            return 0;
        }
        Ok(Parsed::Run(a)) => a,
        Err(msg) => {
            let _ = writeln!(err, "ferrocorn ctl: {msg}\n\n{USAGE}");
            return 2;
        }
    };
    let path = env.resolve(parsed.socket.as_deref());
    let reply = match request(&path, &parsed.command.request()) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "ferrocorn ctl: {e}");
            return 1;
        }
    };
    if parsed.json {
        let _ = writeln!(out, "{}", reply.raw);
    }
    if !reply.is_ok() {
        let _ = writeln!(err, "ferrocorn ctl: server error: {}", reply.error_message());
        return 1;
    }
    if !parsed.json {
        let lines = match parsed.command {
            Command::Status => render::status_lines(&reply.value),
            Command::Workers => render::worker_table(render::workers(&reply.value)),
            Command::Cache(CacheCommand::Stats) => cache::stats_lines(&reply.value),
            Command::Upstreams(UpstreamsCommand::List) => upstreams::list_lines(&reply.value),
            _ => vec![render::get_str(&reply.value, "message").unwrap_or("ok").to_owned()],
        };
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = out.flush();
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn cmd(args: &[&str]) -> Command {
        match p(args) {
            Ok(Parsed::Run(a)) => a.command,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn parses_commands() {
        assert_eq!(cmd(&["status"]), Command::Status);
        assert_eq!(cmd(&["workers"]), Command::Workers);
        assert_eq!(cmd(&["workers", "add", "3"]), Command::WorkersAdd(3, None));
        assert_eq!(cmd(&["workers", "add"]), Command::WorkersAdd(1, None));
        assert_eq!(cmd(&["workers", "remove", "2"]), Command::WorkersRemove(2, None));
        assert_eq!(
            cmd(&["workers", "add", "2", "--pool", "/reports/"]),
            Command::WorkersAdd(2, Some("/reports/".into()))
        );
        assert!(p(&["status", "--pool", "/r/"]).is_err());
        assert_eq!(cmd(&["reload"]), Command::Reload);
        assert_eq!(cmd(&["reopen-logs"]), Command::ReopenLogs);
        assert_eq!(cmd(&["shutdown"]), Command::Shutdown { graceful: false });
        assert_eq!(cmd(&["shutdown", "--graceful"]), Command::Shutdown { graceful: true });
        assert_eq!(cmd(&["--graceful", "shutdown"]), Command::Shutdown { graceful: true });
        assert_eq!(cmd(&["cache", "stats"]), Command::Cache(CacheCommand::Stats));
        let prefix =
            |p: &str| Command::Cache(CacheCommand::Purge(cache::PurgeTarget::Prefix(p.into())));
        assert_eq!(cmd(&["cache", "purge", "--prefix", "http/a"]), prefix("http/a"));
        assert_eq!(cmd(&["--prefix=http/b", "cache", "purge"]), prefix("http/b"));
        let all = Command::Cache(CacheCommand::Purge(cache::PurgeTarget::All));
        assert_eq!(cmd(&["cache", "purge", "--all"]), all);
    }

    #[test]
    fn parses_options_anywhere() {
        let Ok(Parsed::Run(a)) = p(&["status", "--socket", "/x", "--json"]) else { panic!() };
        assert_eq!(a.socket.as_deref(), Some("/x"));
        assert!(a.json);
        let Ok(Parsed::Run(a)) = p(&["--socket=/y", "workers"]) else { panic!() };
        assert_eq!(a.socket.as_deref(), Some("/y"));
        assert_eq!(p(&["--help"]), Ok(Parsed::Help));
    }

    #[test]
    fn rejects_bad_usage() {
        for bad in [
            &[][..],
            &["frobnicate"],
            &["status", "extra"],
            &["workers", "add", "0"],
            &["workers", "add", "x"],
            &["workers", "add", "1", "2"],
            &["workers", "grow"],
            &["reload", "--graceful"],
            &["status", "--bogus"],
            &["status", "--socket"],
            &["status", "--all"],
            &["cache", "purge", "--prefix"],
            &["cache", "purge"],
            &["cache"],
        ] {
            assert!(p(bad).is_err(), "{bad:?} should fail");
        }
    }
}
