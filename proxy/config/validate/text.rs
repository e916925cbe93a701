//! Text as the user wrote it and as a message shows it: master addresses
//! (`host`, `host:port`, `[v6]:port`) parsed, user values quoted short and
//! escaped, any message made one bounded line. Pure: no key, no location.

use std::net::IpAddr;

use crate::config::master::Host;

/// Longest user value quoted in a message.
const MAX_QUOTED: usize = 64;
/// Longest message shown (a safety net: values are quoted short already).
const MAX_MESSAGE: usize = 512;

/// A user value as a message shows it: in backticks, control characters
/// escaped (one line, no forged log lines), at most `MAX_QUOTED` characters.
pub fn quoted(value: &str) -> String {
    let escaped: String = value.chars().flat_map(char::escape_default).collect();
    if escaped.chars().count() > MAX_QUOTED {
        let head: String = escaped.chars().take(MAX_QUOTED).collect();
        format!("`{head}…` ({} bytes)", value.len())
    } else {
        format!("`{escaped}`")
    }
}

/// One line, bounded: what any message (ours or the YAML parser's, which
/// may echo input) becomes before it is shown.
pub(crate) fn one_line(message: &str) -> String {
    let mut out = String::new();
    for c in message.chars() {
        if out.len() >= MAX_MESSAGE {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
pub fn parse_host_port(text: &str) -> Result<(Host, Option<u16>), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty master address".into());
    }
    let parse_port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) => Err("port 0 is not a port a master can listen on".into()),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("{} is not a port number (1-65535)", quoted(p))),
        }
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{}: missing `]` after an IPv6 address", quoted(text)))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{} is not an IPv6 address", quoted(ip)))?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':').ok_or_else(|| {
                format!("{}: expected `:port` after `]`", quoted(text))
            })?)?),
        };
        return Ok((Host::Ip(ip), port));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((Host::Ip(ip), None));
    }
    // Not an address as a whole, with two or more colons: an IPv6 address
    // and a port need brackets (`2001:db8::1:14506` is not "port 14506").
    if text.matches(':').count() > 1 {
        let fix = match text.rsplit_once(':') {
            Some((ip, port)) if ip.parse::<std::net::Ipv6Addr>().is_ok() => {
                format!("; write `[{ip}]:{port}`")
            }
            _ => String::new(),
        };
        return Err(format!(
            "{} is not an address: an IPv6 address with a port must be in brackets, `[addr]:port`{fix}",
            quoted(text)
        ));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(parse_port(p)?)),
        None => (text, None),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((Host::Ip(ip), port));
    }
    validate_hostname(host)?;
    Ok((Host::Name(host.to_ascii_lowercase()), port))
}

fn validate_hostname(host: &str) -> Result<(), String> {
    let name = host.strip_suffix('.').unwrap_or(host);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else if host.contains(':') {
        Err(format!(
            "{} is not a host name; write an IPv6 address with a port as `[addr]:port`",
            quoted(host)
        ))
    } else {
        Err(format!(
            "{} is not a valid host name or IP address",
            quoted(host)
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::{one_line, parse_host_port, quoted, MAX_MESSAGE, MAX_QUOTED};
    use crate::config::master::Host;

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse::<IpAddr>().expect("an address"))
    }

    #[test]
    fn every_address_form_parses() {
        let parsed = |t: &str| parse_host_port(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(
            parsed("Salt.Example.NET"),
            (Host::Name("salt.example.net".into()), None)
        );
        assert_eq!(
            parsed(" salt:4506 "),
            (Host::Name("salt".into()), Some(4506))
        );
        assert_eq!(parsed("192.0.2.1"), (ip("192.0.2.1"), None));
        assert_eq!(parsed("192.0.2.1:65535"), (ip("192.0.2.1"), Some(65535)));
        assert_eq!(parsed("2001:db8::1"), (ip("2001:db8::1"), None));
        assert_eq!(parsed("[2001:db8::1]"), (ip("2001:db8::1"), None));
        assert_eq!(parsed("[::1]:1"), (ip("::1"), Some(1)));
        assert_eq!(
            parsed("_salt._tcp.example.net."),
            (Host::Name("_salt._tcp.example.net.".into()), None)
        );
    }

    #[test]
    fn a_bad_address_says_what_is_wrong() {
        let refused = |t: &str| parse_host_port(t).expect_err(t);
        assert_eq!(refused("  "), "empty master address");
        assert_eq!(
            refused("salt:0"),
            "port 0 is not a port a master can listen on"
        );
        assert_eq!(
            refused("salt:65536"),
            "`65536` is not a port number (1-65535)"
        );
        assert_eq!(refused("salt:"), "`` is not a port number (1-65535)");
        assert_eq!(refused("[::1"), "`[::1`: missing `]` after an IPv6 address");
        assert_eq!(refused("[::1]x"), "`[::1]x`: expected `:port` after `]`");
        assert_eq!(refused("[salt]:1"), "`salt` is not an IPv6 address");
        assert_eq!(
            refused("2001:db8::1:14506:x"),
            "`2001:db8::1:14506:x` is not an address: an IPv6 address with a port must be in brackets, `[addr]:port`"
        );
        assert_eq!(
            refused("2001:db8::1:14506"),
            "`2001:db8::1:14506` is not an address: an IPv6 address with a port must be in brackets, `[addr]:port`; write `[2001:db8::1]:14506`"
        );
        assert_eq!(
            refused("salt master"),
            "`salt master` is not a valid host name or IP address"
        );
        assert_eq!(
            refused("-bad"),
            "`-bad` is not a valid host name or IP address"
        );
        assert_eq!(
            refused("a..b"),
            "`a..b` is not a valid host name or IP address"
        );
    }

    #[test]
    fn host_name_labels_are_at_most_63_and_names_253() {
        let label = "a".repeat(63);
        assert!(parse_host_port(&label).is_ok());
        assert!(parse_host_port(&"a".repeat(64)).is_err());
        let name = [label.as_str(); 4].join(".");
        assert_eq!(name.len(), 255);
        assert!(parse_host_port(&name).is_err());
        assert!(parse_host_port(&name[..253]).is_ok());
    }

    #[test]
    fn a_quoted_value_is_escaped_and_cut() {
        assert_eq!(quoted("salt"), "`salt`");
        assert_eq!(quoted("a\nb"), "`a\\nb`");
        let long = "x".repeat(MAX_QUOTED + 1);
        assert_eq!(
            quoted(&long),
            format!("`{}…` ({} bytes)", "x".repeat(MAX_QUOTED), MAX_QUOTED + 1)
        );
        assert_eq!(
            quoted(&long[..MAX_QUOTED]),
            format!("`{}`", &long[..MAX_QUOTED])
        );
    }

    #[test]
    fn a_message_is_one_bounded_line() {
        assert_eq!(one_line("a\nb\tc"), "a\\nb\\tc");
        let long = "y".repeat(MAX_MESSAGE + 10);
        assert_eq!(one_line(&long), format!("{}…", "y".repeat(MAX_MESSAGE)));
    }
}
