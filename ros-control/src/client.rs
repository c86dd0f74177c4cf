//! The synchronous control-socket client `ros` uses: connect, send one request line, read
//! one response line, with timeouts. std only (no tokio): `ros` is a short-lived command.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::{decode_response, encode_request, DecodeError, Request, Response};
use crate::protocol::{MAX_LINE_BYTES, PROTOCOL_VERSION};

/// Errors talking to PID 1, each naming the socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket is missing, refuses connections, or is not ours to open.
    #[error("connecting to PID 1 at {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the request failed.
    #[error("sending a request to PID 1 at {socket}: {source}")]
    Send {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading the response failed.
    #[error("reading PID 1's answer from {socket}: {source}")]
    Receive {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("PID 1 did not answer on {socket} within {} s", .timeout.as_secs_f64())]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// PID 1 closed the connection without a complete answer.
    #[error("PID 1 closed {socket} without answering")]
    Closed {
        /// The socket.
        socket: PathBuf,
    },
    /// The answer is not a response of this protocol version.
    #[error("PID 1's answer on {socket} is not understood: {reason}")]
    BadResponse {
        /// The socket.
        socket: PathBuf,
        /// Why.
        reason: String,
    },
}

impl ControlError {
    /// True when PID 1 could not be reached or did not answer (as opposed to answering
    /// something wrong): `ros` exits 4 for these.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ControlError::Connect { .. } | ControlError::Timeout { .. }
        )
    }
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Send `req` to PID 1 on `socket` and return its answer. `timeout` bounds each socket
/// operation (so the wait for the answer too); give a `stop` at least its own timeout.
/// An error response is `Ok(Response::Error {..})`: the exchange itself worked.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ControlError> {
    let socket_path = || socket.to_path_buf();
    let stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
        socket: socket_path(),
        source,
    })?;
    // A zero timeout means "block forever" to std; never ask for that.
    let timeout = timeout.max(Duration::from_millis(1));
    let set = stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)));
    if let Err(source) = set {
        return Err(ControlError::Connect {
            socket: socket_path(),
            source,
        });
    }
    let line = encode_request(req);
    (&stream)
        .write_all(line.as_bytes())
        .and_then(|()| (&stream).flush())
        .map_err(|source| {
            if timed_out(&source) {
                ControlError::Timeout {
                    socket: socket_path(),
                    timeout,
                }
            } else {
                ControlError::Send {
                    socket: socket_path(),
                    source,
                }
            }
        })?;
    // Tell a server that reads to end of input that the request is complete.
    let _ = stream.shutdown(std::net::Shutdown::Write);

    let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 1;
    let mut reader = BufReader::new((&stream).take(limit));
    let mut answer = String::new();
    match reader.read_line(&mut answer) {
        Ok(_) => {}
        Err(e) if timed_out(&e) => {
            return Err(ControlError::Timeout {
                socket: socket_path(),
                timeout,
            })
        }
        Err(source) => {
            return Err(ControlError::Receive {
                socket: socket_path(),
                source,
            })
        }
    }
    if answer.len() > MAX_LINE_BYTES {
        return Err(ControlError::BadResponse {
            socket: socket_path(),
            reason: format!("longer than {MAX_LINE_BYTES} bytes"),
        });
    }
    if !answer.ends_with('\n') {
        return Err(ControlError::Closed {
            socket: socket_path(),
        });
    }
    decode_response(&answer).map_err(|e| ControlError::BadResponse {
        socket: socket_path(),
        reason: match e {
            DecodeError::Version(v) => {
                format!("protocol version {v}, but this `ros` speaks version {PROTOCOL_VERSION}")
            }
            DecodeError::Invalid(why) => why,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_request, encode_response, ErrorKind, ServiceRow, ServiceState};
    use std::os::unix::net::UnixListener;
    use std::thread;

    const T: Duration = Duration::from_secs(5);

    /// A one-connection server on a thread: reads one line, answers with `answer(line)`.
    fn serve(
        dir: &Path,
        answer: impl FnOnce(&str) -> String + Send + 'static,
    ) -> (PathBuf, thread::JoinHandle<String>) {
        let path = dir.join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line).unwrap();
            let reply = answer(&line);
            (&conn).write_all(reply.as_bytes()).unwrap();
            line
        });
        (path, handle)
    }

    #[test]
    fn client_and_server_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let row = ServiceRow {
            name: "ntp".into(),
            image: "ros/ntp:1".into(),
            command: "ntpd -n".into(),
            state: ServiceState::Running,
            pid: Some(7),
            exit_status: None,
            since_unix_ms: Some(1),
            restarts: 1,
            oneshot: false,
        };
        let served = row.clone();
        let (path, server) = serve(dir.path(), move |line| match decode_request(line) {
            Ok(Request::Ps) => encode_response(&Response::Ps {
                services: vec![served],
            }),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(resp) => encode_response(&resp),
        });
        let resp = call(&path, &Request::Ps, T).unwrap();
        assert_eq!(
            resp,
            Response::Ps {
                services: vec![row]
            }
        );
        assert_eq!(server.join().unwrap(), "{\"version\":1,\"type\":\"ps\"}\n");
    }

    #[test]
    fn error_responses_are_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (path, server) = serve(dir.path(), |_| {
            encode_response(&Response::error(
                ErrorKind::NotFound,
                "service x: not defined",
            ))
        });
        let req = Request::Stop {
            services: vec!["x".into()],
            timeout_secs: Some(1),
        };
        assert_eq!(
            call(&path, &req, T).unwrap(),
            Response::error(ErrorKind::NotFound, "service x: not defined")
        );
        server.join().unwrap();
    }

    #[test]
    fn a_missing_socket_is_unreachable_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.sock");
        let err = call(&path, &Request::Ps, T).unwrap_err();
        assert!(err.is_unreachable(), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let started = std::time::Instant::now();
        let err = call(&path, &Request::Reload, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ControlError::Timeout { .. }), "{err:?}");
        assert!(err.is_unreachable());
        assert!(started.elapsed() < T, "{:?}", started.elapsed());
        drop(listener);
    }

    #[test]
    fn garbage_and_other_versions_are_bad_responses() {
        for (reply, want) in [
            ("hello\n", "not JSON"),
            (
                "{\"version\":2,\"type\":\"ok\"}\n",
                "protocol version 2, but this `ros` speaks version 1",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (path, server) = serve(dir.path(), move |_| reply.to_string());
            let err = call(&path, &Request::Reload, T).unwrap_err();
            assert!(matches!(err, ControlError::BadResponse { .. }), "{err:?}");
            assert!(!err.is_unreachable());
            assert!(err.to_string().contains(want), "{err}");
            server.join().unwrap();
        }
        // A server that hangs up mid-line.
        let dir = tempfile::tempdir().unwrap();
        let (path, server) = serve(dir.path(), |_| "{\"version\":1".to_string());
        let err = call(&path, &Request::Reload, T).unwrap_err();
        assert!(matches!(err, ControlError::Closed { .. }), "{err:?}");
        server.join().unwrap();
    }
}
