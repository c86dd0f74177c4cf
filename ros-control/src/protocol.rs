//! The control protocol between `ros` and PID 1, over the root-only Unix socket
//! [`CONTROL_SOCKET`]: per connection, the client writes one JSON request line and PID 1
//! answers with one JSON response line, then closes. Pure: types, encoding and decoding, and
//! the `ros service ps` state text; no I/O.
//!
//! Every message carries `"version": 1` next to a `"type"` tag:
//!
//! ```text
//! -> {"version":1,"type":"stop","services":["ntp"],"timeout_secs":10}
//! <- {"version":1,"type":"ok","messages":["ntp: stopped"]}
//! -> {"version":1,"type":"ps"}
//! <- {"version":1,"type":"ps","services":[{"name":"ntp","image":"ros/ntp:1",...}]}
//! <- {"version":1,"type":"error","kind":"not_found","message":"service ntpd: not defined"}
//! ```
//!
//! A request with another version gets an `unsupported` error response naming both
//! versions, so a newer `ros` talking to an older PID 1 fails clearly. Unknown fields are
//! refused (serde cannot check them on the field-less `reload` and `ps`): within one version
//! both sides agree on every field.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// PID 1's control socket (mode 0600, owned by root).
pub const CONTROL_SOCKET: &str = "/run/ros/control.sock";
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request or response line accepted, newline included. A `ps` of a few hundred
/// services is well under it.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// What `ros` asks PID 1 to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Create and start services (and what they need); empty means every enabled service.
    Up {
        /// Service names.
        #[serde(default)]
        services: Vec<String>,
    },
    /// Start existing (created or exited) services.
    Start {
        /// Service names.
        services: Vec<String>,
    },
    /// Stop services: SIGTERM, then SIGKILL after the timeout.
    Stop {
        /// Service names.
        services: Vec<String>,
        /// Seconds between SIGTERM and SIGKILL; PID 1's default when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u64>,
    },
    /// Stop, then start services.
    Restart {
        /// Service names.
        services: Vec<String>,
    },
    /// Remove the (stopped) containers of services.
    Remove {
        /// Service names.
        services: Vec<String>,
    },
    /// Re-read the config and converge: start what is newly enabled, stop what was disabled.
    Reload,
    /// List services and their state.
    Ps,
}

impl Request {
    /// The request's name, for messages (`stop`).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Up { .. } => "up",
            Request::Start { .. } => "start",
            Request::Stop { .. } => "stop",
            Request::Restart { .. } => "restart",
            Request::Remove { .. } => "remove",
            Request::Reload => "reload",
            Request::Ps => "ps",
        }
    }
}

/// What a service's container is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Created, never started (`io.rancher.os.createonly`, or not started yet).
    Created,
    /// Its process is running.
    Running,
    /// Its process has exited.
    Exited,
}

/// One row of `ros service ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRow {
    /// Service name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// The argv, joined with spaces.
    pub command: String,
    /// Created, running or exited.
    pub state: ServiceState,
    /// Host PID of its process while running.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Exit status once exited (128 + signal for a signal).
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// When it started (running) or exited (exited), in ms since the Unix epoch.
    #[serde(default)]
    pub since_unix_ms: Option<u64>,
    /// How many times PID 1 restarted it.
    #[serde(default)]
    pub restarts: u32,
    /// A one-shot service (`io.rancher.os.detach: "false"`).
    #[serde(default)]
    pub oneshot: bool,
}

/// What went wrong, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A named service does not exist.
    NotFound,
    /// The request (or the config it needs) is invalid.
    Invalid,
    /// The action was tried and failed.
    Failed,
    /// PID 1 does not support this request or protocol version.
    Unsupported,
}

/// PID 1's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Done; one line per thing that happened, for the user.
    Ok {
        /// Messages, e.g. `ntp: started`.
        #[serde(default)]
        messages: Vec<String>,
    },
    /// The answer to [`Request::Ps`].
    Ps {
        /// One row per service, by name.
        services: Vec<ServiceRow>,
    },
    /// The request failed.
    Error {
        /// What kind of failure.
        kind: ErrorKind,
        /// What failed, naming its subject.
        message: String,
    },
}

impl Response {
    /// An error response.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response::Error {
            kind,
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    version: u32,
    #[serde(flatten)]
    body: &'a T,
}

fn encode<T: Serialize>(body: &T) -> String {
    let mut line = serde_json::to_string(&Envelope {
        version: PROTOCOL_VERSION,
        body,
    })
    // Only maps with non-string keys fail to serialize; these types have none.
    .expect("protocol messages always serialize");
    line.push('\n');
    line
}

/// Why a line could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a JSON object, or not one of the messages of this version.
    Invalid(String),
    /// A `version` other than [`PROTOCOL_VERSION`].
    Version(u64),
}

fn decode<T: for<'de> Deserialize<'de>>(line: &str) -> Result<T, DecodeError> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.len() > MAX_LINE_BYTES {
        return Err(DecodeError::Invalid(format!(
            "message longer than {MAX_LINE_BYTES} bytes"
        )));
    }
    let mut value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| DecodeError::Invalid(format!("not JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err(DecodeError::Invalid("not a JSON object".into()));
    };
    match object.remove("version") {
        None => return Err(DecodeError::Invalid("no `version` field".into())),
        Some(v) => match v.as_u64() {
            Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
            Some(v) => return Err(DecodeError::Version(v)),
            None => {
                return Err(DecodeError::Invalid(format!(
                    "`version` must be a number, found {v}"
                )))
            }
        },
    }
    serde_json::from_value(value).map_err(|e| DecodeError::Invalid(e.to_string()))
}

/// A request as the line to send, newline included.
pub fn encode_request(req: &Request) -> String {
    encode(req)
}

/// A response as the line to send, newline included.
pub fn encode_response(resp: &Response) -> String {
    encode(resp)
}

/// Decode a request line (server side). On failure, the error response to send back:
/// `unsupported` for another protocol version, `invalid` for anything else.
pub fn decode_request(line: &str) -> Result<Request, Response> {
    decode(line).map_err(|e| match e {
        DecodeError::Version(v) => Response::error(
            ErrorKind::Unsupported,
            format!(
                "control protocol version {v} is not supported (PID 1 speaks version {PROTOCOL_VERSION}); use the `ros` of this rOS release"
            ),
        ),
        DecodeError::Invalid(why) => {
            Response::error(ErrorKind::Invalid, format!("bad control request: {why}"))
        }
    })
}

/// Decode a response line (client side).
pub fn decode_response(line: &str) -> Result<Response, DecodeError> {
    decode(line)
}

/// How long ago, as Docker prints it: `Less than a second`, `1 second`, `3 seconds`,
/// `About a minute`, `9 minutes`, `About an hour`, `5 hours`, `3 days`, `2 weeks`,
/// `3 months`, `2 years` (the same thresholds as Docker's go-units `HumanDuration`).
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    // Hours are rounded to the nearest, as Go's `d.Round(time.Hour)`.
    let hours = (seconds + 1800) / 3600;
    match () {
        _ if seconds < 1 => "Less than a second".into(),
        _ if seconds == 1 => "1 second".into(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// The STATE column of `ros service ps`, as Docker and RancherOS print it: `Up 9 minutes`,
/// `Exited (0) 2 minutes ago`, `Created`. A time in the future (clock step) counts as now.
pub fn state_text(row: &ServiceRow, now: SystemTime) -> String {
    let ago = row.since_unix_ms.map(|ms| {
        let since = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        human_duration(now.duration_since(since).unwrap_or_default())
    });
    match row.state {
        ServiceState::Created => "Created".into(),
        ServiceState::Running => match ago {
            Some(ago) => format!("Up {ago}"),
            None => "Up".into(),
        },
        ServiceState::Exited => {
            let mut s = String::from("Exited");
            if let Some(status) = row.exit_status {
                s.push_str(&format!(" ({status})"));
            }
            if let Some(ago) = ago {
                s.push_str(&format!(" {ago} ago"));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: ServiceState) -> ServiceRow {
        ServiceRow {
            name: "ntp".into(),
            image: "ros/ntp:1".into(),
            command: "ntpd -n".into(),
            state,
            pid: None,
            exit_status: None,
            since_unix_ms: None,
            restarts: 0,
            oneshot: false,
        }
    }

    #[test]
    fn every_request_round_trips() {
        let services = vec!["ntp".to_string(), "udev".to_string()];
        let requests = [
            Request::Up { services: vec![] },
            Request::Up {
                services: services.clone(),
            },
            Request::Start {
                services: services.clone(),
            },
            Request::Stop {
                services: services.clone(),
                timeout_secs: Some(10),
            },
            Request::Stop {
                services: services.clone(),
                timeout_secs: None,
            },
            Request::Restart {
                services: services.clone(),
            },
            Request::Remove { services },
            Request::Reload,
            Request::Ps,
        ];
        for req in requests {
            let line = encode_request(&req);
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line}"
            );
            assert!(line.starts_with("{\"version\":1,"), "{line}");
            assert_eq!(decode_request(&line), Ok(req.clone()), "{line}");
        }
    }

    #[test]
    fn every_response_round_trips() {
        let mut running = row(ServiceState::Running);
        running.pid = Some(42);
        running.since_unix_ms = Some(1_700_000_000_000);
        running.restarts = 3;
        let mut exited = row(ServiceState::Exited);
        exited.exit_status = Some(-1);
        exited.oneshot = true;
        let responses = [
            Response::Ok { messages: vec![] },
            Response::Ok {
                messages: vec!["ntp: started".into()],
            },
            Response::Ps {
                services: vec![row(ServiceState::Created), running, exited],
            },
            Response::error(ErrorKind::NotFound, "service x: not defined"),
            Response::error(ErrorKind::Invalid, "i"),
            Response::error(ErrorKind::Failed, "f"),
            Response::error(ErrorKind::Unsupported, "u"),
        ];
        for resp in responses {
            let line = encode_response(&resp);
            assert_eq!(decode_response(&line), Ok(resp.clone()), "{line}");
        }
    }

    #[test]
    fn wire_format_is_stable() {
        assert_eq!(
            encode_request(&Request::Stop {
                services: vec!["ntp".into()],
                timeout_secs: Some(5)
            }),
            "{\"version\":1,\"type\":\"stop\",\"services\":[\"ntp\"],\"timeout_secs\":5}\n"
        );
        assert_eq!(
            encode_request(&Request::Ps),
            "{\"version\":1,\"type\":\"ps\"}\n"
        );
        assert_eq!(
            encode_response(&Response::error(ErrorKind::NotFound, "x")),
            "{\"version\":1,\"type\":\"error\",\"kind\":\"not_found\",\"message\":\"x\"}\n"
        );
    }

    #[test]
    fn bad_requests_get_error_responses() {
        let kind = |line: &str| match decode_request(line) {
            Err(Response::Error { kind, message }) => (kind, message),
            other => panic!("{line}: {other:?}"),
        };
        let cases = [
            (
                "{\"version\":2,\"type\":\"ps\"}",
                ErrorKind::Unsupported,
                "control protocol version 2 is not supported (PID 1 speaks version 1)",
            ),
            (
                "{\"type\":\"ps\"}",
                ErrorKind::Invalid,
                "no `version` field",
            ),
            (
                "{\"version\":\"1\",\"type\":\"ps\"}",
                ErrorKind::Invalid,
                "`version` must be a number",
            ),
            ("garbage", ErrorKind::Invalid, "not JSON"),
            ("[1,2]", ErrorKind::Invalid, "not a JSON object"),
            ("", ErrorKind::Invalid, "not JSON"),
            (
                "{\"version\":1,\"type\":\"explode\"}",
                ErrorKind::Invalid,
                "unknown variant `explode`",
            ),
            (
                "{\"version\":1,\"type\":\"start\"}",
                ErrorKind::Invalid,
                "missing field `services`",
            ),
            (
                "{\"version\":1,\"type\":\"stop\",\"services\":[],\"force\":true}",
                ErrorKind::Invalid,
                "unknown field `force`",
            ),
        ];
        for (line, want_kind, want_text) in cases {
            let (kind, message) = kind(line);
            assert_eq!(kind, want_kind, "{line}");
            assert!(message.contains(want_text), "{line}: {message}");
        }
        // `up` without services means everything.
        assert_eq!(
            decode_request("{\"version\":1,\"type\":\"up\"}"),
            Ok(Request::Up { services: vec![] })
        );
    }

    #[test]
    fn human_duration_table() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (3, "3 seconds"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (9 * 60 + 30, "9 minutes"),
            (59 * 60, "59 minutes"),
            (60 * 60, "About an hour"),
            (90 * 60, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (13 * 86400, "13 days"),
            (14 * 86400, "2 weeks"),
            (59 * 86400, "8 weeks"),
            (60 * 86400, "2 months"),
            (800 * 86400, "2 years"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn state_text_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |secs_ago: u64| Some((1_700_000_000 - secs_ago) * 1000);
        let make = |state, status, since| ServiceRow {
            exit_status: status,
            since_unix_ms: since,
            ..row(state)
        };
        let cases = [
            (make(ServiceState::Created, None, None), "Created"),
            (
                make(ServiceState::Running, None, at(9 * 60)),
                "Up 9 minutes",
            ),
            (make(ServiceState::Running, None, at(3)), "Up 3 seconds"),
            (
                make(ServiceState::Running, None, at(0)),
                "Up Less than a second",
            ),
            (make(ServiceState::Running, None, None), "Up"),
            (
                make(ServiceState::Exited, Some(0), at(150)),
                "Exited (0) 2 minutes ago",
            ),
            (
                make(ServiceState::Exited, Some(137), at(7200)),
                "Exited (137) 2 hours ago",
            ),
            (make(ServiceState::Exited, None, None), "Exited"),
            // A start time in the future (the clock stepped back) reads as now.
            (
                make(ServiceState::Running, None, Some(1_800_000_000_000)),
                "Up Less than a second",
            ),
        ];
        for (row, want) in cases {
            assert_eq!(state_text(&row, now), want, "{row:?}");
        }
    }
}
