//! Checks a test definition before it is stored and sent to nodes: the node re-checks, but a bad
//! test should fail at the API with a message, not as a string of error results.

use foureyes_proto::v1::{self as pb, probe_config::Kind};

const MIN_INTERVAL_MS: u32 = 100;

fn host(h: &str, what: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 253 {
        return Err(format!(
            "{what}: a hostname or IP address is required (at most 253 characters)"
        ));
    }
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = h.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: {h:?} is not a valid hostname or IP address"
        ))
    }
}

fn dns_name(n: &str, what: &str) -> Result<(), String> {
    host(n.trim_end_matches('.'), what)
}

fn label(s: &str, what: &str, max: usize) -> Result<(), String> {
    if s.len() > max || s.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{what}: at most {max} characters, no control characters"
        ));
    }
    Ok(())
}

/// Fills defaults and rejects what no executor could run.
pub fn test(mut t: pb::Test) -> Result<pb::Test, String> {
    label(&t.name, "name", 200)?;
    if t.interval_ms == 0 {
        t.interval_ms = 60_000;
    }
    if t.interval_ms < MIN_INTERVAL_MS {
        return Err(format!("interval_ms must be at least {MIN_INTERVAL_MS}"));
    }
    if t.timeout_ms == 0 {
        t.timeout_ms = 2_000;
    }
    if t.timeout_ms > 120_000 {
        return Err("timeout_ms must be at most 120000".into());
    }
    if t.count > 10_000 {
        return Err("count must be at most 10000".into());
    }
    for a in &t.agent_ids {
        label(a, "agent_ids", 64)?;
    }
    let kind = t
        .config
        .as_ref()
        .and_then(|c| c.kind.as_ref())
        .ok_or("config: one of icmp, tcp, http, dns, traceroute is required")?;
    match kind {
        Kind::Icmp(c) => host(&c.host, "icmp.host")?,
        Kind::Tcp(c) => {
            host(&c.host, "tcp.host")?;
            if c.port == 0 || c.port > 65535 {
                return Err("tcp.port must be 1-65535".into());
            }
        }
        Kind::Http(c) => {
            let rest = c
                .url
                .strip_prefix("http://")
                .or_else(|| c.url.strip_prefix("https://"))
                .ok_or("http.url must start with http:// or https://")?;
            label(&c.url, "http.url", 2048)?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let hostpart = if let Some(v6) = authority.strip_prefix('[') {
                v6.split(']').next().unwrap_or_default()
            } else {
                authority
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(authority)
            };
            host(hostpart, "http.url host")?;
            if !c.ca_certificate_der.is_empty()
                && x509_parser::parse_x509_certificate(&c.ca_certificate_der).is_err()
            {
                return Err("http.ca_certificate_der is not an X.509 certificate".into());
            }
        }
        Kind::Dns(c) => {
            host(&c.server, "dns.server")?;
            dns_name(&c.query_name, "dns.query_name")?;
            label(&c.expect_answer, "dns.expect_answer", 512)?;
            if c.port > 65535 {
                return Err("dns.port must be 1-65535".into());
            }
        }
        Kind::Traceroute(c) => {
            host(&c.host, "traceroute.host")?;
            if c.max_hops > 64 {
                return Err("traceroute.max_hops must be at most 64".into());
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(kind: Kind) -> pb::Test {
        pb::Test {
            config: Some(pb::ProbeConfig { kind: Some(kind) }),
            ..Default::default()
        }
    }

    #[test]
    fn rejects_what_no_executor_runs() {
        assert!(test(pb::Test::default()).is_err());
        assert!(
            test(with(Kind::Icmp(pb::IcmpConfig {
                host: "a b;rm -rf /".into(),
                ..Default::default()
            })))
            .is_err()
        );
        assert!(
            test(with(Kind::Http(pb::HttpConfig {
                url: "file:///etc/passwd".into(),
                ..Default::default()
            })))
            .is_err()
        );
        assert!(
            test(with(Kind::Tcp(pb::TcpConfig {
                host: "x".into(),
                port: 70000,
                ..Default::default()
            })))
            .is_err()
        );
        let ok = test(with(Kind::Http(pb::HttpConfig {
            url: "http://[::1]:8080/healthz".into(),
            ..Default::default()
        })))
        .expect("ok");
        assert_eq!(ok.interval_ms, 60_000);
        assert_eq!(ok.timeout_ms, 2_000);
    }
}
