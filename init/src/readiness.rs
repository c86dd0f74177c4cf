//! Readiness conditions beyond "the container runs": a default route exists (what
//! `io.rancher.os.after: network` waits for, as in RancherOS).
//!
//! Waits are event-driven: a rtnetlink socket subscribed to route changes wakes the
//! check, so nothing polls on a timer.

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// rtnetlink multicast group for IPv4 route changes.
const RTMGRP_IPV4_ROUTE: u32 = 0x40;

/// Whether `route` (the text of /proc/net/route) has an IPv4 default route that is up.
pub fn has_default_route(route: &str) -> bool {
    route.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags ... Mask: destination 0 with mask 0, flag RTF_UP.
        f.len() >= 8
            && f[1] == "00000000"
            && f[7] == "00000000"
            && u32::from_str_radix(f[3], 16).is_ok_and(|fl| fl & 0x1 != 0)
    })
}

/// Wait until `route_file` shows a default route, or `timeout` passes. Returns whether it did.
pub fn wait_for_default_route(route_file: &Path, timeout: Duration) -> bool {
    let check = || fs::read_to_string(route_file).is_ok_and(|t| has_default_route(&t));
    // Subscribe before the first check so a route added in between wakes us.
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkRoute,
    )
    .ok()
    .filter(|s| {
        bind(
            std::os::fd::AsRawFd::as_raw_fd(s),
            &NetlinkAddr::new(0, RTMGRP_IPV4_ROUTE),
        )
        .is_ok()
    });
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match &sock {
            Some(s) => {
                let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(ms));
                let mut buf = [0u8; 8192];
                while recv(
                    std::os::fd::AsRawFd::as_raw_fd(s),
                    &mut buf,
                    MsgFlags::MSG_DONTWAIT,
                )
                .is_ok_and(|n| n > 0)
                {}
            }
            // No netlink (tests in a sandbox): re-check a few times a second until the deadline.
            None => std::thread::sleep(left.min(Duration::from_millis(250))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn default_route_is_recognised() {
        let with = format!(
            "{HEADER}eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        );
        assert!(has_default_route(&with));
        let without =
            format!("{HEADER}eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert!(!has_default_route(&without));
        assert!(!has_default_route(HEADER));
    }

    #[test]
    fn waiting_times_out_without_a_route() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("route");
        fs::write(&f, HEADER).unwrap();
        let t = Instant::now();
        assert!(!wait_for_default_route(&f, Duration::from_millis(300)));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
