//! PID 1's control socket: `ros` asks for `up`, `start`, `stop`, `restart`, `rm`,
//! `reload` and `ps` here (protocol in `ros_control::protocol`).
//!
//! The socket is root-only: its directory is 0700 and the socket 0600. Each connection
//! carries one request line and gets one response line.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ros_control::protocol::{
    decode_request, encode_response, ErrorKind, Request, Response, ServiceRow, ServiceState,
    MAX_LINE_BYTES,
};
use ros_runtime::ServiceRuntime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::desired::Desired;
use crate::supervisor::{State, Supervisor, SupervisorError};

/// The reconciler a reload asks what should run ([`Desired::reload`]).
pub type Planner = Arc<Desired>;

/// Default SIGTERM→SIGKILL grace for `stop`.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Bind the socket and serve requests on a task. Failures are logged: the system runs
/// on without `ros service` control.
pub fn spawn<R: ServiceRuntime + 'static>(
    sup: Arc<Supervisor<R>>,
    planner: Planner,
    socket: PathBuf,
) {
    let listener = match bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            log::error!(
                "control: binding {}: {e} (`ros service` won't work)",
                socket.display()
            );
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let sup = sup.clone();
                    let planner = planner.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_one(stream, &sup, &planner).await {
                            log::debug!("control: connection: {e}");
                        }
                    });
                }
                Err(e) => log::warn!("control: accept: {e}"),
            }
        }
    });
}

fn bind(socket: &PathBuf) -> std::io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let _ = fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn serve_one<R: ServiceRuntime + 'static>(
    stream: UnixStream,
    sup: &Arc<Supervisor<R>>,
    planner: &Planner,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_LINE_BYTES as u64))
        .read_line(&mut line)
        .await?;
    let response = match decode_request(&line) {
        Ok(req) => handle(req, sup, planner).await,
        Err(resp) => resp,
    };
    write
        .write_all(encode_response(&response).as_bytes())
        .await?;
    write.shutdown().await
}

fn to_response(err: SupervisorError) -> Response {
    match err {
        SupervisorError::NotFound(_) => Response::error(ErrorKind::NotFound, err.to_string()),
        SupervisorError::Failed { .. } => Response::error(ErrorKind::Failed, err.to_string()),
    }
}

fn unix_ms(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// The `ps` rows for the supervisor's records.
pub fn rows<R: ServiceRuntime + 'static>(sup: &Supervisor<R>) -> Vec<ServiceRow> {
    sup.snapshot()
        .into_iter()
        .map(|(name, r)| {
            let argv = r
                .spec
                .entrypoint
                .iter()
                .chain(r.spec.command.iter())
                .flat_map(|c| c.argv())
                .collect::<Vec<_>>()
                .join(" ");
            let (state, pid, exit_status, since) = match &r.state {
                State::Created | State::Starting => (ServiceState::Created, None, None, None),
                State::Running { pid, since } => {
                    (ServiceState::Running, Some(*pid), None, unix_ms(*since))
                }
                State::Exited { status, at } => (
                    ServiceState::Exited,
                    None,
                    Some(*status as i32),
                    unix_ms(*at),
                ),
                State::Failed { at, .. } => (ServiceState::Exited, None, Some(-1), unix_ms(*at)),
            };
            ServiceRow {
                name,
                image: r.spec.image.clone(),
                command: argv,
                state,
                pid,
                exit_status,
                since_unix_ms: since,
                restarts: r.restarts,
                oneshot: r.spec.is_oneshot(),
            }
        })
        .collect()
}

async fn handle<R: ServiceRuntime + 'static>(
    req: Request,
    sup: &Arc<Supervisor<R>>,
    planner: &Planner,
) -> Response {
    let mut messages = Vec::new();
    match req {
        Request::Ps => {
            return Response::Ps {
                services: rows(sup),
            }
        }
        Request::Reload | Request::Up { .. } => {
            let planner = planner.clone();
            let plan = match tokio::task::spawn_blocking(move || planner.reload()).await {
                Ok(p) => p,
                Err(e) => return Response::error(ErrorKind::Failed, format!("reload: {e}")),
            };
            messages.extend(plan.problems.iter().cloned());
            let wake: Vec<String> = match &req {
                Request::Up { services } if services.is_empty() => {
                    plan.services.keys().cloned().collect()
                }
                Request::Up { services } => {
                    for s in services {
                        if !plan.services.contains_key(s) {
                            return Response::error(
                                ErrorKind::NotFound,
                                format!("service {s}: not defined or not enabled (try `ros service enable {s}`)"),
                            );
                        }
                    }
                    services.clone()
                }
                _ => Vec::new(),
            };
            sup.converge(plan.services, plan.order, &wake).await;
            for (name, r) in sup.snapshot() {
                if wake.contains(&name) {
                    messages.push(format!("{name}: {}", describe(&r.state)));
                }
            }
        }
        Request::Start { services } => {
            let _ops = sup.lock_ops().await;
            for s in services {
                match sup.start_one(&s).await {
                    Ok(pid) => messages.push(format!("{s}: started (pid {pid})")),
                    Err(e) => return to_response(e),
                }
            }
        }
        Request::Stop {
            services,
            timeout_secs,
        } => {
            let _ops = sup.lock_ops().await;
            let grace = timeout_secs.map_or(STOP_GRACE, Duration::from_secs);
            for s in services {
                match sup.stop_one(&s, grace).await {
                    Ok(()) => messages.push(format!("{s}: stopped")),
                    Err(e) => return to_response(e),
                }
            }
        }
        Request::Restart { services } => {
            let _ops = sup.lock_ops().await;
            for s in services {
                if let Err(e) = sup.stop_one(&s, STOP_GRACE).await {
                    return to_response(e);
                }
                match sup.start_one(&s).await {
                    Ok(pid) => messages.push(format!("{s}: restarted (pid {pid})")),
                    Err(e) => return to_response(e),
                }
            }
        }
        Request::Remove { services } => {
            let _ops = sup.lock_ops().await;
            for s in services {
                if let Err(e) = sup.stop_one(&s, STOP_GRACE).await {
                    return to_response(e);
                }
                sup.forget(&s);
                messages.push(format!("{s}: removed"));
            }
        }
    }
    Response::Ok { messages }
}

fn describe(state: &State) -> String {
    match state {
        State::Created => "created".into(),
        State::Starting => "starting".into(),
        State::Running { pid, .. } => format!("running (pid {pid})"),
        State::Exited { status, .. } => format!("exited ({status})"),
        State::Failed { message, .. } => format!("failed: {message}"),
    }
}
