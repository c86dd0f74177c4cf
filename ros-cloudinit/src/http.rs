//! Plain-HTTP GET of user-data with retries, exponential backoff and one overall deadline,
//! so that a slow or dead server delays boot by at most that deadline. Owns the retry
//! policy; must not keep state between calls or speak TLS.

use std::thread;
use std::time::{Duration, Instant};

use ros_config::MAX_FILE_BYTES;

/// Why a URL gave no user-data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
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

/// GET `url` (http only) and return its body, at most [`MAX_FILE_BYTES`]. Connection
/// errors, timeouts, 408, 429 and 5xx are retried with exponential backoff until
/// `policy.timeout` has passed in all; other 4xx answers are final at once. Returns within
/// `policy.timeout` plus scheduling slack.
pub fn get(url: &str, policy: &RetryPolicy) -> Result<Vec<u8>, HttpError> {
    check_url(url)?;
    let start = Instant::now();
    let deadline = start + policy.timeout;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(5)
        .user_agent(concat!("ros-cloudinit/", env!("CARGO_PKG_VERSION")))
        // PID 1 has no proxy variables; don't let a stray one redirect boot.
        .proxy(None)
        .build()
        .into();
    let mut delay = policy.first_delay;
    let mut attempts = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let last = if remaining.is_zero() {
            "no time left for an attempt".to_string()
        } else {
            attempts += 1;
            match attempt(&agent, url, remaining) {
                Ok(body) => return Ok(body),
                Err(Failure::Permanent(e)) => return Err(e),
                Err(Failure::Transient(why)) => why,
            }
        };
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
    if lower.starts_with("https://") {
        return Err(unsupported(
            "https is not supported (this build has no TLS); serve user-data over http",
        ));
    }
    match lower.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(unsupported("expected http://HOST[:PORT]/PATH")),
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
                ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::TooManyRedirects => {
                    permanent(e.to_string())
                }
                other => Failure::Transient(other.to_string()),
            })
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
    fn url_forms() {
        assert!(check_url("http://10.0.0.1/cc.yml").is_ok());
        assert!(check_url("HTTP://host:8080/").is_ok());
        let e = check_url("https://example.com/cc").unwrap_err();
        assert!(e.to_string().contains("https is not supported"), "{e}");
        assert!(check_url("ftp://x/y").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("/var/x").is_err());
    }
}
