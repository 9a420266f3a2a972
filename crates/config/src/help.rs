//! `--help` text, derived from the registry: usage, then every flag grouped by section with its
//! value placeholder, description, default and support status.

use crate::setting::{Action, Section, Setting, Support};
use crate::settings::settings;

/// Width the descriptions are wrapped to.
const WIDTH: usize = 88;
/// Indentation of descriptions under their flags.
const INDENT: &str = "      ";

/// The full `--help` text.
pub fn render_help() -> String {
    let mut out = String::from(
        "usage: ferrocorn [OPTIONS] [APP_MODULE]\n\n\
         Serve a Python web application; command-line compatible with Gunicorn.\n\n\
         positional arguments:\n  APP_MODULE\n",
    );
    push_wrapped(
        &mut out,
        "The application to serve, as module:variable (e.g. myproject.wsgi:application).",
    );
    out.push_str("\noptions:\n  -h, --help\n");
    push_wrapped(&mut out, "Show this help and exit.");
    out.push_str("  -v, --version\n");
    push_wrapped(&mut out, "Show the version and exit.");
    for section in Section::ALL {
        let members: Vec<&Setting> =
            settings().iter().filter(|s| s.section == section && !s.cli.is_empty()).collect();
        if members.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{}:\n", section.title()));
        for s in members {
            out.push_str(&format!("  {}\n", flag_synopsis(s)));
            let mut text = format!("{} [default: {}]", s.help, s.default_display());
            match s.support {
                Support::Yes => {}
                Support::Planned => text.push_str(" (not supported yet)"),
                Support::Unsupported(reason) => text.push_str(&format!(" (unsupported: {reason})")),
            }
            push_wrapped(&mut out, &text);
        }
    }
    out
}

/// `-w, --workers INT`, `--proxy-protocol [MODE]`, `--preload`.
pub(crate) fn flag_synopsis(s: &Setting) -> String {
    let meta = match s.action {
        Action::Store | Action::Append => format!(" {}", s.meta.unwrap_or("VALUE")),
        Action::OptionalValue(_) => format!(" [{}]", s.meta.unwrap_or("VALUE")),
        Action::StoreTrue | Action::StoreConst(_) => String::new(),
    };
    format!("{}{meta}", s.cli.join(", "))
}

fn push_wrapped(out: &mut String, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && INDENT.len() + line.len() + 1 + word.len() > WIDTH {
            out.push_str(INDENT);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(INDENT);
        out.push_str(&line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_every_flag() {
        let help = render_help();
        for s in settings() {
            for flag in s.cli {
                let listed =
                    help.lines().any(|l| l.trim_start().split([',', ' ']).any(|w| w == *flag));
                assert!(listed, "{flag} missing from --help");
            }
        }
        assert!(help.contains("-h, --help") && help.contains("-v, --version"));
        assert!(help.contains("-w, --workers INT"));
        assert!(help.contains("--proxy-protocol [MODE]"));
        assert!(help.contains("\nServer Socket:\n"));
        assert!(help.lines().all(|l| l.len() <= WIDTH || !l.contains(' ')), "over-long line");
    }
}
