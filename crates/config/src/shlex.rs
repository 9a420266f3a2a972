//! POSIX shell-style word splitting, as Python's `shlex.split` does it (no comments), used for
//! `GUNICORN_CMD_ARGS`.

/// Why a string could not be split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitError {
    /// A quote was opened and never closed.
    NoClosingQuotation,
    /// The text ends with a lone backslash.
    NoEscapedCharacter,
}

/// Splits `text` into words: whitespace separates, `'...'` is literal, `"..."` allows `\"`, `\\`,
/// `\$`, `` \` `` and a backslash-newline; outside quotes a backslash escapes the next character.
pub fn split(text: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err(SplitError::NoClosingQuotation),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => word.push(ch),
                            Some('\n') => {}
                            Some(ch) => {
                                word.push('\\');
                                word.push(ch);
                            }
                            None => return Err(SplitError::NoClosingQuotation),
                        },
                        Some(ch) => word.push(ch),
                        None => return Err(SplitError::NoClosingQuotation),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(ch) => word.push(ch),
                    None => return Err(SplitError::NoEscapedCharacter),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Vec<String> {
        split(text).unwrap()
    }

    #[test]
    fn splits_like_python_shlex() {
        assert_eq!(s("  -w 3   --bind 0:80 "), ["-w", "3", "--bind", "0:80"]);
        assert_eq!(
            s(r#"--access-logformat '%(h)s "%(r)s"' x"#),
            ["--access-logformat", r#"%(h)s "%(r)s""#, "x"]
        );
        assert_eq!(s(r#"a"b c"d"#), ["ab cd"]);
        assert_eq!(s(r#""a\"b\n""#), [r#"a"b\n"#]);
        assert_eq!(s(r"a\ b"), ["a b"]);
        assert_eq!(s("''"), [""]);
        assert!(s("").is_empty());
        assert_eq!(split("'open"), Err(SplitError::NoClosingQuotation));
        assert_eq!(split("end\\"), Err(SplitError::NoEscapedCharacter));
    }
}
