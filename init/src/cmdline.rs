//! The kernel command line as PID 1 needs it before any config is read.
//!
//! `rancher.*` keys that become config are the config crate's business; this module
//! only answers the few questions boot asks first (root device, recovery, debug).

use std::num::IntErrorKind;
use std::time::Duration;

/// How long boot waits for the root device when `rootdelay=` is not given.
pub const DEFAULT_ROOT_WAIT: Duration = Duration::from_secs(30);
/// Longest `rootdelay=`: an hour. A disk that has not appeared by then will not; and the
/// wait's deadline is computed from it, which a value near `u64::MAX` would overflow.
pub const MAX_ROOT_WAIT: Duration = Duration::from_secs(3600);

/// A kernel command line value that cannot be used as given. Boot goes on with
/// [`CmdlineError::fallback`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// `rootdelay=` is not a whole number of seconds.
    #[error(
        "rootdelay={value}: not a whole number of seconds; waiting the default {}s for the root device",
        DEFAULT_ROOT_WAIT.as_secs()
    )]
    RootDelayNotSeconds {
        /// The text given.
        value: String,
    },
    /// `rootdelay=` is longer than [`MAX_ROOT_WAIT`].
    #[error(
        "rootdelay={value}: longer than the most allowed, {}s; waiting that long for the root device",
        MAX_ROOT_WAIT.as_secs()
    )]
    RootDelayTooLong {
        /// The text given.
        value: String,
    },
}

impl CmdlineError {
    /// What boot uses instead of the value.
    pub fn fallback(&self) -> Duration {
        match self {
            CmdlineError::RootDelayNotSeconds { .. } => DEFAULT_ROOT_WAIT,
            CmdlineError::RootDelayTooLong { .. } => MAX_ROOT_WAIT,
        }
    }
}

/// Parsed words of `/proc/cmdline` ([`ros_config::CmdlineWords`]: the one reading of the
/// line, `ros`'s too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    words: ros_config::CmdlineWords,
}

impl KernelCmdline {
    /// Split the command line into `key[=value]` words (double quotes group spaces).
    pub fn parse(text: &str) -> Self {
        KernelCmdline {
            words: ros_config::CmdlineWords::parse(text),
        }
    }

    /// The value of the last `key=value` word for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.words.get(key)
    }

    /// A boolean flag: bare `key` or `key=true` is true; `key=false` is false.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.words.flag(key)
    }

    /// The root device (`root=`: a path, `LABEL=NAME` or `PARTUUID=SSSSSSSS-PP`);
    /// `/dev/vda2` by default, the root partition of the image on the first virtio disk.
    pub fn root_device(&self) -> String {
        self.get("root").unwrap_or("/dev/vda2").to_string()
    }

    /// The root image file on the root device (`rootimg=`, e.g. `/boot/root.img` on an
    /// installed disk): the device is mounted and the image attached to a loop device.
    pub fn root_image(&self) -> Option<String> {
        self.get("rootimg")
            .filter(|v| !v.is_empty())
            .map(String::from)
    }

    /// The root filesystem type (`rootfstype=`), squashfs by default.
    pub fn root_fstype(&self) -> String {
        self.get("rootfstype").unwrap_or("squashfs").to_string()
    }

    /// How long to wait for the root device: `rootdelay=` seconds, [`DEFAULT_ROOT_WAIT`]
    /// when not given, at most [`MAX_ROOT_WAIT`]. A value that cannot be used is an error
    /// saying what boot waits instead.
    pub fn root_delay(&self) -> Result<Duration, CmdlineError> {
        let Some(value) = self.get("rootdelay") else {
            return Ok(DEFAULT_ROOT_WAIT);
        };
        let too_long = || CmdlineError::RootDelayTooLong {
            value: value.to_string(),
        };
        match value.parse::<u64>() {
            Ok(secs) if secs <= MAX_ROOT_WAIT.as_secs() => Ok(Duration::from_secs(secs)),
            Ok(_) => Err(too_long()),
            Err(e) if *e.kind() == IntErrorKind::PosOverflow => Err(too_long()),
            Err(_) => Err(CmdlineError::RootDelayNotSeconds {
                value: value.to_string(),
            }),
        }
    }

    /// [`Self::root_delay`]; an unusable value is logged and its fallback used, since a
    /// typo in `rootdelay=` must not stop the boot.
    pub fn root_wait(&self) -> Duration {
        self.root_delay().unwrap_or_else(|e| {
            log::warn!("{e}");
            e.fallback()
        })
    }

    /// `rancher.recovery` as given (`None` when absent): what a fatal error leads to
    /// (see `recovery::offer_shell`).
    pub fn recovery(&self) -> Option<bool> {
        self.flag("rancher.recovery")
    }

    /// Verbose logging (`rancher.debug`).
    pub fn debug(&self) -> bool {
        self.flag("rancher.debug").unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_words_values_and_quotes() {
        let c = KernelCmdline::parse(
            "console=ttyS0 quiet root=/dev/vdb rancher.x=\"a b\" rancher.modules=[loop,nbd]\n",
        );
        assert_eq!(c.get("console"), Some("ttyS0"));
        assert_eq!(c.get("quiet"), None);
        assert_eq!(c.root_device(), "/dev/vdb");
        assert_eq!(c.root_image(), None);
        let installed = KernelCmdline::parse("root=LABEL=RANCHER_STATE rootimg=/boot/root.img");
        assert_eq!(installed.root_device(), "LABEL=RANCHER_STATE");
        assert_eq!(installed.root_image().as_deref(), Some("/boot/root.img"));
        assert_eq!(c.get("rancher.x"), Some("a b"));
    }

    #[test]
    fn defaults_and_flags() {
        let c = KernelCmdline::parse("rancher.debug rancher.recovery=false rootdelay=2");
        assert_eq!(c.root_device(), "/dev/vda2");
        assert_eq!(c.root_fstype(), "squashfs");
        assert!(c.debug());
        assert_eq!(c.recovery(), Some(false));
        assert_eq!(c.root_wait(), Duration::from_secs(2));
        assert_eq!(KernelCmdline::parse("").recovery(), None);
    }

    #[test]
    fn last_word_wins() {
        let c = KernelCmdline::parse("root=/dev/vda root=/dev/vdc");
        assert_eq!(c.root_device(), "/dev/vdc");
    }

    #[test]
    fn root_delay_is_bounded() {
        let too_long = |v: &str| {
            Err(CmdlineError::RootDelayTooLong {
                value: v.to_string(),
            })
        };
        let not_seconds = |v: &str| {
            Err(CmdlineError::RootDelayNotSeconds {
                value: v.to_string(),
            })
        };
        let huge = "9".repeat(40);
        let cases = [
            ("", Ok(DEFAULT_ROOT_WAIT)),
            ("rootdelay", Ok(DEFAULT_ROOT_WAIT)),
            ("rootdelay=0", Ok(Duration::ZERO)),
            ("rootdelay=3600", Ok(MAX_ROOT_WAIT)),
            ("rootdelay=3601", too_long("3601")),
            (
                "rootdelay=18446744073709551615",
                too_long("18446744073709551615"),
            ),
            (&format!("rootdelay={huge}"), too_long(&huge)),
            ("rootdelay=", not_seconds("")),
            ("rootdelay=-1", not_seconds("-1")),
            ("rootdelay=1.5", not_seconds("1.5")),
            ("rootdelay=soon", not_seconds("soon")),
        ];
        for (line, want) in cases {
            let c = KernelCmdline::parse(line);
            assert_eq!(c.root_delay(), want, "{line}");
            let fallback = want.unwrap_or_else(|e| e.fallback());
            assert_eq!(c.root_wait(), fallback, "{line}");
        }
        assert_eq!(
            KernelCmdline::parse("rootdelay=99999")
                .root_delay()
                .unwrap_err()
                .to_string(),
            "rootdelay=99999: longer than the most allowed, 3600s; waiting that long for the root device"
        );
    }

    /// Text a kernel command line may hold, weighted towards what trips parsers.
    fn cmdline_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            3 => any::<char>().prop_map(String::from),
            2 => prop::sample::select(vec![
                "\"", "=", "==", " ", "\t", "\n", "\0", "\u{7f}", "\u{a0}", "\u{2028}",
                "rootdelay=", "root=", "rancher.debug", "rancher.recovery=", "LABEL=",
            ])
            .prop_map(String::from),
            1 => "[0-9]{1,40}",
        ];
        prop::collection::vec(piece, 0..64).prop_map(|p| p.concat())
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_root_delay_stays_bounded(text in cmdline_text()) {
            let c = KernelCmdline::parse(&text);
            prop_assert!(c.root_wait() <= MAX_ROOT_WAIT);
            let _ = (c.root_device(), c.root_image(), c.root_fstype());
            let _ = (c.recovery(), c.debug(), c.get("root"), c.flag("quiet"));
        }

        #[test]
        fn a_last_unquoted_word_round_trips(
            noise in "[^\"]{0,60}",
            key in "[^\\s\"=]{1,20}",
            value in "[^\\s\"]{0,40}",
        ) {
            let c = KernelCmdline::parse(&format!("{noise} {key}={value}"));
            prop_assert_eq!(c.get(&key), Some(value.as_str()));
        }

        #[test]
        fn a_quoted_value_keeps_its_spaces(key in "[^\\s\"=]{1,20}", value in "[^\"]{0,40}") {
            let c = KernelCmdline::parse(&format!("console=ttyS0 {key}=\"{value}\" quiet"));
            prop_assert_eq!(c.get(&key), Some(value.as_str()));
        }

        #[test]
        fn root_delay_in_range_is_taken_as_given(secs in 0u64..=3600, noise in "[a-z=. ]{0,30}") {
            let c = KernelCmdline::parse(&format!("{noise} rootdelay={secs}"));
            prop_assert_eq!(c.root_delay(), Ok(Duration::from_secs(secs)));
        }
    }
}
