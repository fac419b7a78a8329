//! Which URLs genq fetches input images from: `http(s)` only, no
//! credentials, and (unless `GENQ_ALLOW_PRIVATE_URLS` is set) only hosts
//! whose every address is public, so a producer cannot make a worker read
//! its own network (loopback, private ranges, link-local cloud metadata at
//! 169.254.169.254…). The check runs on the addresses the name resolves
//! to, and the fetch connects to exactly those addresses, so a name that
//! resolves differently a moment later (DNS rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Longest URL genq accepts as an input.
pub const MAX_URL_LEN: usize = 4096;

/// Whether private addresses may be fetched (`GENQ_ALLOW_PRIVATE_URLS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow_private: bool,
}

impl UrlPolicy {
    /// Private addresses allowed: for tests and trusted networks.
    pub const ALLOW_PRIVATE: UrlPolicy = UrlPolicy {
        allow_private: true,
    };
}

/// Why a URL is not fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("is not an http(s) URL")]
    NotHttp,
    #[error("is longer than {MAX_URL_LEN} characters")]
    TooLong,
    #[error("carries a user name or password; genq does not send credentials in URLs")]
    Credentials,
    #[error(
        "points at {host}{}, a private, loopback or link-local address; genq fetches \
         only public addresses unless GENQ_ALLOW_PRIVATE_URLS is set",
        resolved(host, addr)
    )]
    Private { host: String, addr: IpAddr },
    #[error("host {host} could not be resolved: {why}")]
    Resolve { host: String, why: String },
    #[error("no HTTP client could be set up: {0}")]
    Client(String),
}

/// ` (resolves to <addr>)` when `host` is a name, nothing for an address.
fn resolved(host: &str, addr: &IpAddr) -> String {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if literal.parse::<IpAddr>().is_ok() {
        String::new()
    } else {
        format!(" (resolves to {addr})")
    }
}

/// `url` parsed, if its shape is one genq fetches (the address is checked
/// by [`resolve`]).
pub fn parse(url: &str) -> Result<reqwest::Url, UrlError> {
    if url.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| UrlError::NotHttp)?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(UrlError::NotHttp);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Credentials);
    }
    Ok(parsed)
}

/// The addresses `url` may be fetched from: every address its host
/// resolves to, each of which must be public unless `policy` allows
/// private ones.
pub async fn resolve(url: &reqwest::Url, policy: UrlPolicy) -> Result<Vec<SocketAddr>, UrlError> {
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        _ => match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::lookup_host(format!("{literal}:{port}")),
        )
        .await
        {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                return Err(UrlError::Resolve {
                    host,
                    why: e.to_string(),
                });
            }
            Err(_) => {
                return Err(UrlError::Resolve {
                    host,
                    why: "no answer within 10 s".into(),
                });
            }
        },
    };
    if addrs.is_empty() {
        return Err(UrlError::Resolve {
            host,
            why: "no addresses".into(),
        });
    }
    if !policy.allow_private
        && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip()))
    {
        return Err(UrlError::Private {
            host,
            addr: bad.ip(),
        });
    }
    Ok(addrs)
}

/// A client for `url` that connects only to the addresses [`resolve`]
/// checked (so the name cannot resolve elsewhere between the check and the
/// connection), follows no redirects (a caller that follows them checks
/// each target the same way), and gives up after `timeout`.
pub async fn pinned_client(
    url: &reqwest::Url,
    policy: UrlPolicy,
    timeout: Duration,
) -> Result<reqwest::Client, UrlError> {
    let addrs = resolve(url, policy).await?;
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve_to_addrs(url.host_str().unwrap_or_default(), &addrs)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| UrlError::Client(crate::cause::chain(&e)))
}

/// The check at submit time: the URL's shape, and its addresses when they
/// can be learned now. A name that does not resolve yet is accepted (the
/// worker resolves it again, and checks again, when it fetches).
pub async fn check_at_submit(url: &str, policy: UrlPolicy) -> Result<(), UrlError> {
    let parsed = parse(url)?;
    match resolve(&parsed, policy).await {
        Err(UrlError::Resolve { .. }) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || a >= 240 // reserved
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || (a == 192 && b == 0 && c == 0)) // IETF protocol assignments
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (mapped || compatible || nat64).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_are_public() {
        let cases = [
            ("8.8.8.8", true),
            ("93.184.216.34", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("172.32.0.1", true),
            ("192.168.1.1", false),
            ("169.254.169.254", false), // cloud metadata
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("198.18.0.1", false),
            ("::1", false),
            ("::", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("64:ff9b::a9fe:a9fe", false), // NAT64 of 169.254.169.254
            ("::ffff:8.8.8.8", true),
            ("2606:4700:4700::1111", true),
            ("2001:db8::1", false),
        ];
        for (ip, want) in cases {
            assert_eq!(is_public(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn urls_of_other_shapes_are_refused() {
        let cases = [
            ("https://cdn.example.com/a.png", None),
            ("http://93.184.216.34:8080/a.png", None),
            ("ftp://example.com/a.png", Some(UrlError::NotHttp)),
            ("file:///etc/passwd", Some(UrlError::NotHttp)),
            ("not a url", Some(UrlError::NotHttp)),
            (
                "https://user:pw@example.com/a.png",
                Some(UrlError::Credentials),
            ),
        ];
        for (url, want) in cases {
            assert_eq!(parse(url).err(), want, "{url}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(parse(&long).err(), Some(UrlError::TooLong));
    }

    #[tokio::test]
    async fn private_literals_are_refused_unless_allowed() {
        let deny = UrlPolicy::default();
        for url in [
            "http://127.0.0.1/a.png",
            "http://[::1]:8080/a.png",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:9/a.png",
        ] {
            assert!(
                matches!(
                    check_at_submit(url, deny).await,
                    Err(UrlError::Private { .. })
                ),
                "{url}"
            );
            assert_eq!(check_at_submit(url, UrlPolicy::ALLOW_PRIVATE).await, Ok(()));
        }
        let said = |url: &'static str| async move {
            check_at_submit(url, deny).await.unwrap_err().to_string()
        };
        assert!(
            said("http://10.1.2.3/a.png")
                .await
                .starts_with("points at 10.1.2.3, a private"),
        );
        let named = said("http://localhost:9/a.png").await;
        assert!(
            named.starts_with("points at localhost (resolves to "),
            "{named}"
        );
        // A name that does not resolve (no DNS here) waits for the worker's check.
        assert_eq!(
            check_at_submit("https://images.invalid/a.png", deny).await,
            Ok(())
        );
    }
}
