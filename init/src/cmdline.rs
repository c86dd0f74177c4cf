//! The kernel command line as PID 1 needs it before any config is read.
//!
//! `rancher.*` keys that become config are the config crate's business; this module
//! only answers the few questions boot asks first (root device, recovery, debug).

use std::time::Duration;

/// Parsed words of `/proc/cmdline`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    words: Vec<(String, Option<String>)>,
}

impl KernelCmdline {
    /// Split the command line into `key[=value]` words; double quotes group spaces.
    pub fn parse(text: &str) -> Self {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut push = |w: &mut String| {
            if !w.is_empty() {
                let word = std::mem::take(w);
                match word.split_once('=') {
                    Some((k, v)) => words.push((k.to_string(), Some(v.to_string()))),
                    None => words.push((word, None)),
                }
            }
        };
        for c in text.chars() {
            match c {
                '"' => quoted = !quoted,
                c if c.is_whitespace() && !quoted => push(&mut cur),
                c => cur.push(c),
            }
        }
        push(&mut cur);
        KernelCmdline { words }
    }

    /// The value of the last `key=value` word for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.words
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A boolean flag: bare `key` or `key=true|1|yes` is true; `false|0|no` is false.
    pub fn flag(&self, key: &str) -> Option<bool> {
        let (_, v) = self.words.iter().rev().find(|(k, _)| k == key)?;
        match v.as_deref() {
            None | Some("true") | Some("1") | Some("yes") => Some(true),
            Some("false") | Some("0") | Some("no") => Some(false),
            Some(_) => None,
        }
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

    /// How long to wait for the root device (`rootdelay=` seconds, default 30).
    pub fn root_wait(&self) -> Duration {
        let secs = self
            .get("rootdelay")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(30);
        Duration::from_secs(secs)
    }

    /// On a fatal error: offer a recovery shell (default) or reboot (`rancher.recovery=false`).
    pub fn recovery_shell(&self) -> bool {
        self.flag("rancher.recovery").unwrap_or(true)
    }

    /// Verbose logging (`rancher.debug`).
    pub fn debug(&self) -> bool {
        self.flag("rancher.debug").unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!c.recovery_shell());
        assert_eq!(c.root_wait(), Duration::from_secs(2));
        assert!(KernelCmdline::parse("").recovery_shell());
    }

    #[test]
    fn last_word_wins() {
        let c = KernelCmdline::parse("root=/dev/vda root=/dev/vdc");
        assert_eq!(c.root_device(), "/dev/vdc");
    }
}
