//! PROXY protocol v1 (text) and v2 (binary) headers at the start of a connection, with
//! Gunicorn's acceptance rules (`_parse_proxy_protocol_v1/_v2` in `gunicorn/http/message.py`):
//! v1 `TCP4`/`TCP6` only (no `UNKNOWN`), v2 `LOCAL`/`PROXY` over `STREAM` with INET/INET6, or
//! UNSPEC. TLVs after the addresses are skipped.

use crate::{ErrorKind, ParseError};
use memchr::memchr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which PROXY protocol versions the listener accepts (Gunicorn's `proxy_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// No PROXY header is parsed (`off`).
    #[default]
    Off,
    /// Only v1 text headers.
    V1,
    /// Only v2 binary headers.
    V2,
    /// Either version.
    Auto,
}

/// Addresses carried by a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyInfo {
    /// `"PROXY v1"`-style protocol label for the environ's `PROXY_PROTOCOL` (e.g. `TCP4`, `TCP6`,
    /// `LOCAL`, `UNSPEC`).
    pub protocol: String,
    /// Original client address (None for LOCAL/UNSPEC).
    pub source: Option<SocketAddr>,
    /// Original destination address (None for LOCAL/UNSPEC).
    pub destination: Option<SocketAddr>,
}

/// Result of looking for a PROXY header at the start of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyParse {
    /// The bytes do not start with a PROXY signature: parse them as HTTP.
    NotProxy,
    /// More bytes are needed to decide or to finish the header.
    Incomplete,
    /// A complete header of `consumed` bytes.
    Done(ProxyInfo, usize),
}

/// The 12-byte PROXY v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix (Gunicorn recognises v1 by these 6 bytes).
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Longest v1 line, CRLF included (the spec's 107 bytes).
const V1_MAX_LINE: usize = 107;

/// Parse a PROXY header at the start of `buf` in `mode`. A v1/v2 header when the mode does not
/// allow that version is treated as not-PROXY (and then fails HTTP parsing). The caller checks
/// `proxy_allow_ips` (answering [`crate::ErrorKind::ForbiddenProxyRequest`]) before calling.
///
/// `Incomplete` is returned while `buf` is a proper prefix of an allowed signature (so an
/// empty buffer is `Incomplete` unless the mode is `Off`), or a recognised header is not yet
/// complete. Errors: [`ErrorKind::InvalidProxyLine`] (v1) or [`ErrorKind::InvalidProxyHeader`]
/// (v2).
pub fn parse_proxy_header(buf: &[u8], mode: ProxyMode) -> Result<ProxyParse, ParseError> {
    let (v1, v2) = match mode {
        ProxyMode::Off => return Ok(ProxyParse::NotProxy),
        ProxyMode::V1 => (true, false),
        ProxyMode::V2 => (false, true),
        ProxyMode::Auto => (true, true),
    };
    if v2 && buf.starts_with(V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if v1 && buf.starts_with(V1_PREFIX) {
        return parse_v1(buf);
    }
    let prefix_of = |sig: &[u8]| buf.len() < sig.len() && sig.starts_with(buf);
    if (v2 && prefix_of(V2_SIGNATURE)) || (v1 && prefix_of(V1_PREFIX)) {
        return Ok(ProxyParse::Incomplete);
    }
    Ok(ProxyParse::NotProxy)
}

fn bad_line(detail: impl Into<String>) -> ParseError {
    ParseError::new(ErrorKind::InvalidProxyLine, detail)
}

fn parse_v1(buf: &[u8]) -> Result<ProxyParse, ParseError> {
    let window = &buf[..buf.len().min(V1_MAX_LINE)];
    let Some(lf) = memchr(b'\n', window) else {
        if buf.len() >= V1_MAX_LINE {
            return Err(bad_line("PROXY line too long"));
        }
        return Ok(ProxyParse::Incomplete);
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(bad_line("PROXY line not terminated by CRLF"));
    }
    let line = &window[..lf - 1];
    let text = std::str::from_utf8(line).map_err(|_| bad_line("PROXY line is not ASCII"))?;
    let bits: Vec<&str> = text.split(' ').collect();
    if bits.len() != 6 {
        return Err(bad_line(text));
    }
    let proto = bits[1];
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            bits[2].parse::<Ipv4Addr>().map_err(|_| bad_line(text))?.into(),
            bits[3].parse::<Ipv4Addr>().map_err(|_| bad_line(text))?.into(),
        ),
        "TCP6" => (
            bits[2].parse::<Ipv6Addr>().map_err(|_| bad_line(text))?.into(),
            bits[3].parse::<Ipv6Addr>().map_err(|_| bad_line(text))?.into(),
        ),
        _ => return Err(bad_line(format!("protocol '{proto}' not supported"))),
    };
    let port = |s: &str| -> Result<u16, ParseError> {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_line(format!("invalid port {text}")));
        }
        s.parse::<u16>().map_err(|_| bad_line(format!("invalid port {text}")))
    };
    let (sport, dport) = (port(bits[4])?, port(bits[5])?);
    Ok(ProxyParse::Done(
        ProxyInfo {
            protocol: proto.to_string(),
            source: Some(SocketAddr::new(src, sport)),
            destination: Some(SocketAddr::new(dst, dport)),
        },
        lf + 1,
    ))
}

fn bad_header(detail: impl Into<String>) -> ParseError {
    ParseError::new(ErrorKind::InvalidProxyHeader, detail)
}

fn parse_v2(buf: &[u8]) -> Result<ProxyParse, ParseError> {
    if buf.len() < 16 {
        return Ok(ProxyParse::Incomplete);
    }
    let ver_cmd = buf[12];
    let fam_proto = buf[13];
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(bad_header(format!("unsupported version {}", ver_cmd >> 4)));
    }
    let command = ver_cmd & 0x0f;
    if command > 1 {
        return Err(bad_header(format!("unsupported command {command}")));
    }
    let total = 16 + length;
    if buf.len() < total {
        return Ok(ProxyParse::Incomplete);
    }
    let no_addresses = |label: &str| {
        Ok(ProxyParse::Done(
            ProxyInfo { protocol: label.to_string(), source: None, destination: None },
            total,
        ))
    };
    if command == 0 {
        return no_addresses("LOCAL");
    }
    let family = fam_proto >> 4;
    let transport = fam_proto & 0x0f;
    // UNSPEC family: the sender has no addresses to give (also accepted with an UNSPEC
    // transport, as the spec asks; Gunicorn only accepts it with STREAM).
    if family == 0 && transport <= 1 {
        return no_addresses("UNSPEC");
    }
    if transport != 1 {
        return Err(bad_header("only TCP protocol is supported"));
    }
    let addr = &buf[16..total];
    let (src, dst, ports, label): (IpAddr, IpAddr, &[u8], &str) = match family {
        1 => {
            if length < 12 {
                return Err(bad_header("insufficient address data for IPv4"));
            }
            let s: [u8; 4] = addr[0..4].try_into().map_err(|_| bad_header("ipv4"))?;
            let d: [u8; 4] = addr[4..8].try_into().map_err(|_| bad_header("ipv4"))?;
            (Ipv4Addr::from(s).into(), Ipv4Addr::from(d).into(), &addr[8..12], "TCP4")
        }
        2 => {
            if length < 36 {
                return Err(bad_header("insufficient address data for IPv6"));
            }
            let s: [u8; 16] = addr[0..16].try_into().map_err(|_| bad_header("ipv6"))?;
            let d: [u8; 16] = addr[16..32].try_into().map_err(|_| bad_header("ipv6"))?;
            (Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into(), &addr[32..36], "TCP6")
        }
        f => return Err(bad_header(format!("unsupported address family {f}"))),
    };
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    Ok(ProxyParse::Done(
        ProxyInfo {
            protocol: label.to_string(),
            source: Some(SocketAddr::new(src, sport)),
            destination: Some(SocketAddr::new(dst, dport)),
        },
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8], mode: ProxyMode) -> (ProxyInfo, usize) {
        match parse_proxy_header(buf, mode).unwrap() {
            ProxyParse::Done(info, n) => (info, n),
            other => panic!("expected Done, got {other:?}"),
        }
    }

    fn err(buf: &[u8], mode: ProxyMode) -> ErrorKind {
        parse_proxy_header(buf, mode).unwrap_err().kind()
    }

    fn v2(cmd: u8, fam: u8, addr: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(cmd);
        v.push(fam);
        v.extend_from_slice(&(addr.len() as u16).to_be_bytes());
        v.extend_from_slice(addr);
        v
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let buf = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n\r\n";
        let (info, n) = done(buf, ProxyMode::Auto);
        assert_eq!(&buf[n..], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(info.protocol, "TCP4");
        assert_eq!(info.source, Some("192.168.0.1:56324".parse().unwrap()));
        assert_eq!(info.destination, Some("192.168.0.11:443".parse().unwrap()));
        let (info, _) = done(b"PROXY TCP6 2001:db8::1 ::1 0 65535\r\n", ProxyMode::V1);
        assert_eq!(info.source, Some("[2001:db8::1]:0".parse().unwrap()));
        assert_eq!(info.destination, Some("[::1]:65535".parse().unwrap()));
    }

    #[test]
    fn v1_errors() {
        for bad in [
            &b"PROXY TCP4 192.168.0.1 192.16...\r\n"[..],
            b"PROXY TCP4 192.168.0.1 192.168.0.11 65iii 100000\r\n",
            b"PROXY TCP4 not-an-ip 192.168.0.11 56324 443\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY UNKNOWN\r\n",
            b"PROXY UNKNOWN 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n",
            b"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n",
        ] {
            assert_eq!(
                err(bad, ProxyMode::Auto),
                ErrorKind::InvalidProxyLine,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 100));
        assert_eq!(err(&long, ProxyMode::V1), ErrorKind::InvalidProxyLine);
    }

    #[test]
    fn incomplete_and_not_proxy() {
        assert_eq!(parse_proxy_header(b"", ProxyMode::Auto).unwrap(), ProxyParse::Incomplete);
        assert_eq!(parse_proxy_header(b"PRO", ProxyMode::V1).unwrap(), ProxyParse::Incomplete);
        assert_eq!(
            parse_proxy_header(b"PROXY TCP4 1.2", ProxyMode::V1).unwrap(),
            ProxyParse::Incomplete
        );
        assert_eq!(
            parse_proxy_header(b"\r\n\r\n\0", ProxyMode::V2).unwrap(),
            ProxyParse::Incomplete
        );
        assert_eq!(parse_proxy_header(b"\r\n\r\n\0", ProxyMode::V1).unwrap(), ProxyParse::NotProxy);
        assert_eq!(parse_proxy_header(b"PRO", ProxyMode::V2).unwrap(), ProxyParse::NotProxy);
        assert_eq!(
            parse_proxy_header(b"GET / HTTP/1.1\r\n", ProxyMode::Auto).unwrap(),
            ProxyParse::NotProxy
        );
        assert_eq!(
            parse_proxy_header(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\n", ProxyMode::Off).unwrap(),
            ProxyParse::NotProxy
        );
        assert_eq!(
            parse_proxy_header(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\n", ProxyMode::V2).unwrap(),
            ProxyParse::NotProxy
        );
        let full = v2(0x21, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 80, 1, 187]);
        assert_eq!(parse_proxy_header(&full, ProxyMode::V1).unwrap(), ProxyParse::NotProxy);
        for i in 0..full.len() {
            assert_eq!(
                parse_proxy_header(&full[..i], ProxyMode::V2).unwrap(),
                ProxyParse::Incomplete,
                "{i}"
            );
        }
    }

    #[test]
    fn v2_ipv4_ipv6_with_tlvs() {
        let mut addr = vec![0xC0, 0xA8, 0x01, 0x0A, 0xC0, 0xA8, 0x01, 0x01, 0x30, 0x39, 0x01, 0xBB];
        addr.extend_from_slice(&[0x04, 0x00, 0x01, 0xAA]); // a TLV, skipped
        let mut buf = v2(0x21, 0x11, &addr);
        let hdr_len = buf.len();
        buf.extend_from_slice(b"GET /");
        let (info, n) = done(&buf, ProxyMode::Auto);
        assert_eq!(n, hdr_len);
        assert_eq!(info.protocol, "TCP4");
        assert_eq!(info.source, Some("192.168.1.10:12345".parse().unwrap()));
        assert_eq!(info.destination, Some("192.168.1.1:443".parse().unwrap()));

        let mut a6 = vec![0x20, 0x01, 0x0D, 0xB8];
        a6.extend_from_slice(&[0; 11]);
        a6.push(1);
        a6.extend_from_slice(&[0x20, 0x01, 0x0D, 0xB8]);
        a6.extend_from_slice(&[0; 11]);
        a6.push(2);
        a6.extend_from_slice(&[0xD4, 0x31, 0x00, 0x50]);
        let (info, n) = done(&v2(0x21, 0x21, &a6), ProxyMode::V2);
        assert_eq!(n, 16 + 36);
        assert_eq!(info.protocol, "TCP6");
        assert_eq!(info.source, Some("[2001:db8::1]:54321".parse().unwrap()));
        assert_eq!(info.destination, Some("[2001:db8::2]:80".parse().unwrap()));
    }

    #[test]
    fn v2_local_and_unspec() {
        let (info, n) = done(&v2(0x20, 0x00, &[9, 9, 9]), ProxyMode::Auto);
        assert_eq!((info.protocol.as_str(), info.source, n), ("LOCAL", None, 19));
        let (info, _) = done(&v2(0x21, 0x01, &[]), ProxyMode::Auto);
        assert_eq!((info.protocol.as_str(), info.destination), ("UNSPEC", None));
        let (info, _) = done(&v2(0x21, 0x00, &[]), ProxyMode::Auto);
        assert_eq!(info.protocol, "UNSPEC");
    }

    #[test]
    fn v2_errors() {
        assert_eq!(err(&v2(0x11, 0x11, &[0; 12]), ProxyMode::V2), ErrorKind::InvalidProxyHeader);
        assert_eq!(err(&v2(0x22, 0x11, &[0; 12]), ProxyMode::V2), ErrorKind::InvalidProxyHeader);
        assert_eq!(err(&v2(0x21, 0x12, &[0; 12]), ProxyMode::V2), ErrorKind::InvalidProxyHeader);
        assert_eq!(err(&v2(0x21, 0x11, &[0; 11]), ProxyMode::V2), ErrorKind::InvalidProxyHeader);
        assert_eq!(err(&v2(0x21, 0x21, &[0; 35]), ProxyMode::V2), ErrorKind::InvalidProxyHeader);
        assert_eq!(err(&v2(0x21, 0x31, &[0; 216]), ProxyMode::V2), ErrorKind::InvalidProxyHeader);
        // Version/command errors are reported before the whole header has arrived.
        let mut head = V2_SIGNATURE.to_vec();
        head.extend_from_slice(&[0x31, 0x11, 0x00, 0x0C]);
        assert_eq!(err(&head, ProxyMode::Auto), ErrorKind::InvalidProxyHeader);
    }
}
