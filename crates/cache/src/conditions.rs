//! `--cache-bypass` and `--cache-no-store`: nginx's `proxy_cache_bypass` / `proxy_no_cache`
//! conditions, templates of variables separated by spaces, true when any renders to something
//! other than empty or `0`.

use crate::key::{KeyRequest, KeyTemplate, KeyTemplateError};

/// A parsed list of conditions (empty: never true).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    templates: Vec<KeyTemplate>,
}

impl Conditions {
    /// Parse conditions separated by spaces, e.g. `$http_pragma $cookie_nocache`.
    pub fn parse(spec: &str) -> Result<Conditions, KeyTemplateError> {
        let templates =
            spec.split_whitespace().map(KeyTemplate::parse).collect::<Result<_, _>>()?;
        Ok(Conditions { templates })
    }

    /// Whether any condition holds for `request` (`scratch` is a buffer kept across calls).
    pub fn any(&self, request: &KeyRequest<'_>, scratch: &mut Vec<u8>) -> bool {
        self.templates.iter().any(|template| {
            scratch.clear();
            template.render_into(request, scratch);
            !(scratch.is_empty() || scratch.as_slice() == b"0")
        })
    }

    /// Whether a condition reads the decoded path (`$uri`).
    pub fn reads_decoded_path(&self) -> bool {
        self.templates.iter().any(KeyTemplate::reads_decoded_path)
    }

    /// Whether a condition reads the client's address (`$remote_addr`).
    pub fn reads_remote_addr(&self) -> bool {
        self.templates.iter().any(KeyTemplate::reads_remote_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(query: &'a [u8], headers: &'a [(String, Vec<u8>)]) -> KeyRequest<'a> {
        KeyRequest {
            scheme: "http",
            method: "GET",
            target: b"/",
            decoded_path: b"/",
            query,
            headers,
            remote_addr: b"",
        }
    }

    #[test]
    fn a_condition_holds_when_not_empty_and_not_zero() {
        let c = Conditions::parse("$arg_nocache $http_pragma").unwrap();
        let mut scratch = Vec::new();
        assert!(!c.any(&request(b"", &[]), &mut scratch));
        assert!(!c.any(&request(b"nocache=0", &[]), &mut scratch));
        assert!(c.any(&request(b"nocache=1", &[]), &mut scratch));
        let pragma = [("PRAGMA".to_owned(), b"no-cache".to_vec())];
        assert!(c.any(&request(b"", &pragma), &mut scratch));
    }

    #[test]
    fn no_conditions_never_hold_and_a_bad_variable_is_refused() {
        assert!(!Conditions::parse("").unwrap().any(&request(b"a=1", &[]), &mut Vec::new()));
        assert!(Conditions::parse("$nope").is_err());
    }
}
