//! The URL forms of the HTTP API (`GET /h/hash?url=…`, `GET /m/lookup?url=…`, `POST /c/bank/…/content?url=…`):
//! a download into memory, never to disk, that can only reach what the operator allowed.
//!
//! - Off unless `http_fetch_hosts` names hosts (HMA's `ALLOWED_HOSTNAMES`, where an empty list allows every
//!   host; here it turns the feature off). A host is allowed when it equals an entry or ends with `.entry`;
//!   `*` allows any host.
//! - Every address a name resolves to is checked, and loopback, private, link-local, unique-local,
//!   CGNAT, multicast and unspecified addresses are refused unless `http_fetch_private` says otherwise. The
//!   check is in the resolver the connection itself uses, so a name cannot resolve to a public address for
//!   the check and a private one for the connection (DNS rebinding); IP literals are checked the same way.
//! - Redirects (at most 5) are followed only to http(s) URLs that pass the same checks.
//! - The body is read in chunks up to `max_bytes` (a `Content-Length` above it is refused before reading),
//!   within `timeout` for the whole download. No proxy from the environment is used.
//!
//! Errors carry HMA's status codes and messages: 400 `Invalid or unsafe URL provided`, 400 `Failed to
//! fetch URL: …`, 413 `Content too large`.

use axum::http::StatusCode;
use bytes::Bytes;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Where the fetcher may go, and how much it may bring back.
#[derive(Clone, Debug)]
pub(crate) struct FetchPolicy {
    /// Allowed hosts (`*`: any).
    pub(crate) hosts: Vec<String>,
    /// Whether loopback and private addresses may be reached.
    pub(crate) private: bool,
    /// Largest body, bytes.
    pub(crate) max_bytes: u64,
    /// Time for the whole download.
    pub(crate) timeout: Duration,
}

impl FetchPolicy {
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.iter().any(|a| {
            let a = a.trim_end_matches('.').to_ascii_lowercase();
            a == "*" || host == a || host.strip_suffix(&a).is_some_and(|rest| rest.ends_with('.'))
        })
    }

    fn address_allowed(&self, ip: IpAddr) -> bool {
        self.private || is_public(ip)
    }

    /// Whether a URL may be fetched at all (scheme, host in the allow-list, IP literal public).
    fn url_allowed(&self, url: &reqwest::Url) -> bool {
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        match url.host() {
            Some(url::Host::Domain(d)) => self.host_allowed(d),
            Some(url::Host::Ipv4(ip)) => {
                self.host_allowed(&ip.to_string()) && self.address_allowed(ip.into())
            }
            Some(url::Host::Ipv6(ip)) => {
                self.host_allowed(&ip.to_string()) && self.address_allowed(ip.into())
            }
            None => false,
        }
    }
}

/// Whether an address is on the public internet (not loopback, private, link-local, shared/CGNAT,
/// documentation, multicast, broadcast or unspecified; IPv4-mapped IPv6 judged as IPv4).
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // 100.64/10, shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24, protocol assignments
                || (o[0] == 198 && (18..20).contains(&o[1])) // 198.18/15, benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64, would reach IPv4 space unchecked
        }
    }
}

/// A failed fetch: the status and HMA's message.
pub(crate) type FetchError = (StatusCode, String);

/// A download.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The body.
    pub(crate) bytes: Bytes,
    /// The response's `Content-Type`, if it had one.
    pub(crate) content_type: Option<String>,
}

/// The resolver the fetcher's connections use: system lookup, then only allowed addresses.
struct GuardedResolver {
    policy: Arc<FetchPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.iter().copied().filter(|a| policy.address_allowed(a.ip())).collect();
            if allowed.is_empty() {
                let why = if found.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!("{host} resolves only to loopback or private addresses, which are not allowed")
                };
                return Err(Box::new(std::io::Error::new(std::io::ErrorKind::PermissionDenied, why))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The URL fetcher (one client, its connections pooled).
#[derive(Clone)]
pub(crate) struct Fetcher {
    policy: Arc<FetchPolicy>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").field("policy", &self.policy).finish()
    }
}

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

impl Fetcher {
    /// A fetcher for a policy; `None` when it allows no host (the URL forms then answer 400).
    pub(crate) fn new(policy: FetchPolicy) -> crate::Result<Option<Fetcher>> {
        if policy.hosts.is_empty() {
            return Ok(None);
        }
        let policy = Arc::new(policy);
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| crate::Error::Internal(format!("TLS for the URL fetcher: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let redirects = {
            let policy = policy.clone();
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else if !policy.url_allowed(attempt.url()) {
                    attempt.error("redirected to a URL outside the allowed hosts")
                } else {
                    attempt.follow()
                }
            })
        };
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
            .redirect(redirects)
            .no_proxy()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("pharos/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::Error::Internal(format!("the URL fetcher: {e}")))?;
        Ok(Some(Fetcher { policy, client }))
    }

    /// Downloads `url` into memory.
    pub(crate) async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let unsafe_url = || (StatusCode::BAD_REQUEST, "Invalid or unsafe URL provided".to_string());
        let parsed = reqwest::Url::parse(url).map_err(|_| unsafe_url())?;
        if !self.policy.url_allowed(&parsed) {
            return Err(unsafe_url());
        }
        let failed = |e: reqwest::Error| {
            // The chain of causes says what happened (refused address, timeout, TLS); the URL itself is
            // caller text and stays out of the message.
            let mut causes = String::new();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                causes += &format!(": {s}");
                source = s.source();
            }
            let msg = e.without_url().to_string() + &causes;
            (StatusCode::BAD_REQUEST, format!("Failed to fetch URL: {msg}"))
        };
        let mut resp = self.client.get(parsed).send().await.map_err(failed)?;
        if !resp.status().is_success() {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("Failed to fetch URL: the server answered {}", resp.status()),
            ));
        }
        let max = self.policy.max_bytes;
        let too_large = || (StatusCode::PAYLOAD_TOO_LARGE, "Content too large".to_string());
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if body.len() as u64 + chunk.len() as u64 > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { bytes: body.freeze(), content_type })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], private: bool) -> FetchPolicy {
        FetchPolicy {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            private,
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn hosts_match_exactly_or_as_subdomains() {
        let p = policy(&["example.org"], false);
        assert!(p.host_allowed("example.org"));
        assert!(p.host_allowed("img.EXAMPLE.org."));
        assert!(!p.host_allowed("badexample.org"));
        assert!(!p.host_allowed("example.org.evil.net"));
        assert!(policy(&["*"], false).host_allowed("anything.net"));
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let any = policy(&["*"], false);
        assert!(!any.url_allowed(&url("http://127.0.0.1:8080/x.jpg")));
        assert!(!any.url_allowed(&url("http://[::1]/x.jpg")));
        assert!(!any.url_allowed(&url("file:///etc/passwd")));
        assert!(any.url_allowed(&url("https://example.org/x.jpg")));
        assert!(policy(&["127.0.0.1"], true).url_allowed(&url("http://127.0.0.1:8080/x.jpg")));
    }
}
