//! Registry records for Gunicorn's "SSL" section: TLS certificates and options.

use crate::setting::{DefaultValue, Kind, Section, Setting, Validator};

const S: Section = Section::Ssl;

pub(super) const SETTINGS: &[Setting] = &[
    Setting::opt_string("keyfile", S)
        .cli(&["--keyfile"])
        .meta("FILE")
        .planned()
        .help("Private key file for TLS. Setting this or certfile turns TLS on."),
    Setting::opt_string("certfile", S)
        .cli(&["--certfile"])
        .meta("FILE")
        .planned()
        .help("Certificate (chain) file for TLS. Setting this or keyfile turns TLS on."),
    Setting::new("ssl_version", S, Kind::Int, Validator::Any, DefaultValue::Int(2))
        .cli(&["--ssl-version"])
        .default_doc("2 (PROTOCOL_TLS)")
        .help("Deprecated in Gunicorn and ignored; accepted so old configurations still load. Has no effect."),
    Setting::pos_int("cert_reqs", S, 0)
        .cli(&["--cert-reqs"])
        .planned()
        .help("Client certificates: 0 not asked for, 1 optional, 2 required."),
    Setting::opt_string("ca_certs", S)
        .cli(&["--ca-certs"])
        .meta("FILE")
        .planned()
        .help("File of CA certificates used to verify client certificates."),
    Setting::new("suppress_ragged_eofs", S, Kind::Bool, Validator::Bool, DefaultValue::Bool(true))
        .cli(&["--suppress-ragged-eofs"])
        .planned()
        .help("Treat a TLS connection closed without close_notify as a normal end of stream."),
    Setting::flag("do_handshake_on_connect", S)
        .cli(&["--do-handshake-on-connect"])
        .planned()
        .help("Perform the TLS handshake as soon as a connection is accepted rather than on first read."),
    Setting::opt_string("ciphers", S)
        .cli(&["--ciphers"])
        .planned()
        .help("OpenSSL cipher list string; unset uses the TLS library's defaults."),
];
