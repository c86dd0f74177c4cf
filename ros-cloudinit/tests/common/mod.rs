//! Helpers shared by the integration tests: configs from YAML text, temp roots, and a tiny
//! HTTP server on 127.0.0.1 that stops by itself.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ros_config::schema::CloudConfig;
use ros_config::{resolve, Layer, Mode};

/// A typed config from cloud-config text, failing the test on any error diagnostic.
pub fn config(text: &str) -> CloudConfig {
    let r = resolve(vec![Layer::parse("test.yml", text).unwrap()], Mode::Boot);
    let errors: Vec<_> = r
        .diagnostics
        .iter()
        .filter(|d| d.severity == ros_config::Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    r.config
}

/// Write `bytes` at `rel` under `root`, creating directories.
pub fn put(root: &Path, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, bytes).unwrap();
    p
}

pub fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// What the test server does with each connection.
#[derive(Clone)]
pub enum Answer {
    /// 200 with this body.
    Ok(Vec<u8>),
    /// This status, empty body.
    Status(u16),
    /// Read the request, then say nothing until the test process ends.
    Hang,
    /// 503 for the first `n` connections, then 200 with this body.
    FailThenOk(usize, Vec<u8>),
}

/// A server on 127.0.0.1 answering at most `max_connections` connections, then exiting.
pub struct TestServer {
    pub url: String,
    pub connections: Arc<AtomicUsize>,
}

pub fn serve(answer: Answer, max_connections: usize) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/user-data", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(max_connections) {
            let Ok(mut stream) = stream else { continue };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            read_request(&mut stream);
            let reply = match &answer {
                Answer::Ok(body) => Some((200, body.clone())),
                Answer::Status(code) => Some((*code, Vec::new())),
                Answer::FailThenOk(k, body) if n >= *k => Some((200, body.clone())),
                Answer::FailThenOk(..) => Some((503, Vec::new())),
                Answer::Hang => None,
            };
            match reply {
                Some((code, body)) => {
                    let head = format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                }
                // Keep the socket open and silent.
                None => held.push(stream),
            }
        }
        // A hanging server keeps its sockets until the process ends.
        if !held.is_empty() {
            thread::sleep(Duration::from_secs(600));
        }
    });
    TestServer { url, connections }
}

fn read_request(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
