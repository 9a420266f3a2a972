//! `docs/settings.md`, derived from the registry, and the test that keeps the checked-in file
//! identical to it.

use crate::help::flag_synopsis;
use crate::setting::{Section, Setting, Support};
use crate::settings::settings;

/// The first line of the generated file.
pub const HEADER: &str =
    "<!-- generated from crates/config by `cargo test -p ferrocorn-config`; do not edit -->";

/// The content of `docs/settings.md`.
pub fn render_settings_markdown() -> String {
    let mut out = format!(
        "{HEADER}\n\n# Settings\n\n\
         Every setting ferrocorn recognises: all of Gunicorn's, plus ferrocorn's own. A setting is \
         taken, lowest to highest precedence, from its default (some defaults come from an \
         environment variable), the config file (a Python file assigning the setting's name), \
         `GUNICORN_CMD_ARGS`, and the command line. Support: **yes** = implemented; **planned** \
         = recognised but not implemented yet (setting it is an error); **no** = will not be \
         implemented (setting it is an error, for the reason given).\n"
    );
    for section in Section::ALL {
        let members: Vec<&Setting> = settings().iter().filter(|s| s.section == section).collect();
        if members.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "\n## {}\n\n| Setting | Flags | Env | Default | Support | Description |\n|---|---|---|---|---|---|\n",
            section.title()
        ));
        for s in members {
            let flags =
                if s.cli.is_empty() { String::new() } else { format!("`{}`", flag_synopsis(s)) };
            let env = s.env.map(|e| format!("`{e}`")).unwrap_or_default();
            let support = match s.support {
                Support::Yes => "yes".to_owned(),
                Support::Planned => "planned".to_owned(),
                Support::Unsupported(reason) => format!("no: {reason}"),
            };
            let default = match s.default_doc {
                Some(text) => text.to_owned(),
                None => format!("`{}`", s.default_display()),
            };
            let row = [format!("`{}`", s.name), flags, env, default, support, s.help.to_owned()];
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regenerates docs/settings.md; fails (after writing the new content) when it had drifted,
    /// so a rerun passes and the diff shows up for review.
    #[test]
    fn settings_doc_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/settings.md");
        let want = render_settings_markdown();
        let have = std::fs::read_to_string(path).unwrap_or_default();
        if have != want {
            std::fs::write(path, &want).unwrap();
            panic!("docs/settings.md was out of date and has been regenerated; rerun the tests");
        }
    }

    #[test]
    fn lists_every_setting() {
        let md = render_settings_markdown();
        assert!(md.starts_with(HEADER));
        for s in settings() {
            assert!(md.contains(&format!("| `{}` |", s.name)), "{}", s.name);
        }
    }
}
