//! HTTP(S) GET of user-data with retries, exponential backoff and one overall deadline,
//! so that a slow or dead server delays boot by at most that deadline. https is rustls
//! (ring) with Mozilla's roots, or only the CAs given (`rancher.cloud_init.ca_certs`).
//! Owns the retry policy; must not keep state between calls.

use std::thread;
use std::time::{Duration, Instant};

use ros_config::MAX_FILE_BYTES;
use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};

/// Why a URL gave no user-data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// A CA certificate given to trust is not PEM.
    #[error("CA certificate {index} ({key}): {reason}")]
    BadCa {
        /// The config key that lists it.
        key: &'static str,
        /// Its position in the list.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The URL cannot be fetched by this client (bad form, or https).
    #[error("GET {url}: {reason}")]
    Unsupported {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with a status that retrying will not change (404, 403, ...).
    #[error("GET {url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body is larger than a config file may be.
    #[error("GET {url}: body larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// No usable answer before the deadline.
    #[error("GET {url}: gave up after {attempts} attempt(s) in {elapsed:.1?} (timeout {timeout:.1?}): {last}")]
    TimedOut {
        /// The URL.
        url: String,
        /// How many requests were made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The configured overall timeout.
        timeout: Duration,
        /// The last failure.
        last: String,
    },
}

/// Retry policy of [`get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Overall deadline for all attempts and waits together.
    pub timeout: Duration,
    /// Wait after the first failed attempt; doubled after each further one.
    pub first_delay: Duration,
    /// Longest wait between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_secs(60),
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

enum Failure {
    /// Worth another attempt: connection refused, timeout, 5xx, 408, 429.
    Transient(String),
    /// Final.
    Permanent(HttpError),
}

/// The roots https trusts: Mozilla's (webpki-roots), or only `ca_pems` when given (PEM
/// certificates, each one or more), which the config lists under `key`. For the
/// datasources and `ros os upgrade -i https://...` alike.
pub fn roots(ca_pems: &[String], key: &'static str) -> Result<RootCerts, HttpError> {
    if ca_pems.is_empty() {
        return Ok(RootCerts::WebPki);
    }
    let mut certs = Vec::new();
    for (index, pem) in ca_pems.iter().enumerate() {
        let bad = |reason: String| HttpError::BadCa { key, index, reason };
        let before = certs.len();
        for item in parse_pem(pem.as_bytes()) {
            match item.map_err(|e| bad(e.to_string()))? {
                PemItem::Certificate(c) => certs.push(c),
                _ => return Err(bad("not a certificate".into())),
            }
        }
        if certs.len() == before {
            return Err(bad("no PEM certificate in it".into()));
        }
    }
    Ok(RootCerts::new_with_certs(&certs))
}

/// GET `url` (http or https) and return its body, at most [`MAX_FILE_BYTES`]. https trusts
/// `ca_pems` when given, else the public roots. Connection errors, timeouts, 408, 429 and
/// 5xx are retried with exponential backoff until `policy.timeout` has passed in all; other
/// 4xx answers and certificates that do not verify are final at once. Returns within
/// `policy.timeout` plus scheduling slack.
pub fn get(url: &str, policy: &RetryPolicy, ca_pems: &[String]) -> Result<Vec<u8>, HttpError> {
    check_url(url)?;
    let start = Instant::now();
    let deadline = start + policy.timeout;
    let tls = TlsConfig::builder()
        .root_certs(roots(ca_pems, "rancher.cloud_init.ca_certs")?)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(5)
        .user_agent(concat!("ros-cloudinit/", env!("CARGO_PKG_VERSION")))
        // PID 1 has no proxy variables; don't let a stray one redirect boot.
        .proxy(None)
        .build()
        .into();
    let mut delay = policy.first_delay;
    let mut attempts = 0;
    // Why the last attempt failed: what the error says once time is up.
    let mut last = "no time left for an attempt".to_string();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if !remaining.is_zero() {
            attempts += 1;
            match attempt(&agent, url, remaining) {
                Ok(body) => return Ok(body),
                Err(Failure::Permanent(e)) => return Err(e),
                Err(Failure::Transient(why)) => last = why,
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(HttpError::TimedOut {
                url: url.to_string(),
                attempts,
                elapsed: start.elapsed(),
                timeout: policy.timeout,
                last,
            });
        }
        log::debug!("GET {url}: attempt {attempts}: {last}; retrying in {delay:?}");
        // Backoff between attempts, not synchronisation: nothing to wait for but time.
        thread::sleep(delay.min(remaining));
        delay = (delay * 2).min(policy.max_delay);
    }
}

fn check_url(url: &str) -> Result<(), HttpError> {
    let unsupported = |reason: &str| HttpError::Unsupported {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(unsupported("expected http(s)://HOST[:PORT]/PATH")),
    }
}

fn attempt(agent: &ureq::Agent, url: &str, budget: Duration) -> Result<Vec<u8>, Failure> {
    let permanent = |reason: String| {
        Failure::Permanent(HttpError::Unsupported {
            url: url.to_string(),
            reason,
        })
    };
    let request = agent.get(url).config().timeout_global(Some(budget)).build();
    let mut response = match request.call() {
        Ok(r) => r,
        Err(e) => {
            return Err(match e {
                // A certificate that does not verify will not verify on the next try (the
                // TLS stream reports it as invalid data).
                ureq::Error::BadUri(_)
                | ureq::Error::Http(_)
                | ureq::Error::TooManyRedirects
                | ureq::Error::Rustls(_) => permanent(e.to_string()),
                ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::InvalidData => {
                    permanent(e.to_string())
                }
                other => Failure::Transient(other.to_string()),
            });
        }
    };
    let status = response.status().as_u16();
    match status {
        200..=299 => {}
        408 | 429 | 500..=599 => return Err(Failure::Transient(format!("HTTP status {status}"))),
        _ => {
            return Err(Failure::Permanent(HttpError::Status {
                url: url.to_string(),
                status,
            }))
        }
    }
    let limit = u64::try_from(MAX_FILE_BYTES).unwrap_or(u64::MAX);
    response
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => Failure::Permanent(HttpError::TooLarge {
                url: url.to_string(),
                limit: MAX_FILE_BYTES,
            }),
            other => Failure::Transient(format!("reading the body: {other}")),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_cas_must_be_pem_certificates() {
        assert!(matches!(roots(&[], "k"), Ok(RootCerts::WebPki)));
        let e = roots(&["not a certificate".into()], "rancher.cloud_init.ca_certs").unwrap_err();
        assert!(e.to_string().contains("CA certificate 0"), "{e}");
    }

    #[test]
    fn url_forms() {
        assert!(check_url("http://10.0.0.1/cc.yml").is_ok());
        assert!(check_url("HTTP://host:8080/").is_ok());
        assert!(check_url("https://example.com/cc").is_ok());
        assert!(check_url("https://").is_err());
        assert!(check_url("ftp://x/y").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("/var/x").is_err());
    }
}
