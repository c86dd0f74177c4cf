//! A service's `volumes`, `devices` and `user`, parsed once, when the service file is
//! read: a bad entry is an error of that file, at its line and key, and the runtime only
//! maps what was parsed. A primitive: it imports nothing of this crate.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer};

/// Parse through [`FromStr`], its message the error's.
fn from_text<'de, D: Deserializer<'de>, T: FromStr<Err = String>>(d: D) -> Result<T, D::Error> {
    String::deserialize(d)?.parse().map_err(de::Error::custom)
}

/// A bind mount, `/host:/container[:ro|:rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host's path (absolute).
    pub host: String,
    /// Where the container sees it (absolute).
    pub container: String,
    /// `:ro`.
    pub read_only: bool,
}

impl FromStr for Volume {
    type Err = String;

    fn from_str(v: &str) -> Result<Volume, String> {
        let bad = |why: &str| Err(format!("`{v}`: {why}"));
        let parts: Vec<&str> = v.split(':').collect();
        let (host, container, read_only) = match parts.as_slice() {
            [host, container] => (*host, *container, false),
            [host, container, "ro"] => (*host, *container, true),
            [host, container, "rw"] => (*host, *container, false),
            [_, _, _] => return bad("the mode must be `ro` or `rw`"),
            [_] => return bad("anonymous volumes are not supported; write /host:/container"),
            _ => return bad("expected /host:/container[:ro]"),
        };
        if !host.starts_with('/') {
            return bad("named volumes are not supported; the host path must be absolute");
        }
        if !container.starts_with('/') {
            return bad("the container path must be absolute");
        }
        Ok(Volume {
            host: host.to_string(),
            container: container.to_string(),
            read_only,
        })
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.container)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Volume {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d)
    }
}

/// A host device given to the container, `/dev/HOST[:/dev/CONTAINER[:rwm]]` (Compose's
/// syntax). Whether the host has it is the runtime's question, when the container is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The host's node, or a directory standing for the nodes below it.
    pub host: String,
    /// Where the container sees it (the host's path when not given).
    pub container: String,
    /// `r`, `w` and `m` (mknod) for the device cgroup (all three when not given).
    pub access: String,
}

impl FromStr for Device {
    type Err = String;

    fn from_str(d: &str) -> Result<Device, String> {
        let parts: Vec<&str> = d.split(':').collect();
        let (host, container, access) = match parts.as_slice() {
            [host] => (*host, *host, "rwm"),
            [host, c] => (*host, *c, "rwm"),
            [host, c, access] => (*host, *c, *access),
            _ => ("", "", ""),
        };
        let ok = host.starts_with('/')
            && container.starts_with('/')
            && !access.is_empty()
            && access.chars().all(|p| matches!(p, 'r' | 'w' | 'm'));
        if !ok {
            return Err(format!(
                "`{d}`: expected /dev/HOST[:/dev/CONTAINER[:rwm]] with absolute paths"
            ));
        }
        Ok(Device {
            host: host.to_string(),
            container: container.to_string(),
            access: access.to_string(),
        })
    }
}

/// The shortest entry that says it (`/dev/input`, not `/dev/input:/dev/input:rwm`).
impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if self.container != self.host || self.access != "rwm" {
            write!(f, ":{}", self.container)?;
        }
        if self.access != "rwm" {
            write!(f, ":{}", self.access)?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d)
    }
}

/// Who a service runs as: numeric `uid[:gid]`; empty and `root` mean 0, and a missing gid
/// is 0, as for Docker when the uid has no passwd entry. Names would need the image's
/// /etc/passwd, which is not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct User {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

impl FromStr for User {
    type Err = String;

    fn from_str(text: &str) -> Result<User, String> {
        let (user, group) = match text.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (text, None),
        };
        let id = |s: &str| match s {
            "" | "root" => Some(0),
            _ => s.parse().ok(),
        };
        match (id(user), group.map_or(Some(0), id)) {
            (Some(uid), Some(gid)) => Ok(User { uid, gid }),
            _ => Err(format!(
                "`{text}`: the user must be a numeric uid[:gid] (or root); names are not \
                 looked up"
            )),
        }
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

impl<'de> Deserialize<'de> for User {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `user: 1000` is a YAML number: read as text, as RancherOS did.
        crate::text::Text::deserialize(d)?
            .0
            .parse()
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_and_bad_ones_say_why() {
        let v: Volume = "/run:/run:ro".parse().unwrap();
        assert_eq!(
            (v.host.as_str(), v.container.as_str(), v.read_only),
            ("/run", "/run", true)
        );
        assert_eq!(v.to_string(), "/run:/run:ro");
        assert!(!"/a:/b:rw".parse::<Volume>().unwrap().read_only);
        for (bad, why) in [
            ("data:/d", "named volumes"),
            ("/x", "anonymous volumes"),
            ("/a:b", "container path must be absolute"),
            ("/a:/b:rx", "`ro` or `rw`"),
            ("/a:/b:ro:x", "expected /host:/container"),
        ] {
            let e = bad.parse::<Volume>().unwrap_err();
            assert!(
                e.starts_with(&format!("`{bad}`: ")) && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn devices_default_to_the_same_path_and_every_access() {
        let d: Device = "/dev/input".parse().unwrap();
        assert_eq!(
            (d.container.as_str(), d.access.as_str()),
            ("/dev/input", "rwm")
        );
        assert_eq!(d.to_string(), "/dev/input");
        let d: Device = "/dev/ttyS1:/dev/modem:rw".parse().unwrap();
        assert_eq!(
            (d.container.as_str(), d.access.as_str()),
            ("/dev/modem", "rw")
        );
        assert_eq!(d.to_string(), "/dev/ttyS1:/dev/modem:rw");
        assert_eq!(
            "/dev/a:/dev/a:r".parse::<Device>().unwrap().to_string(),
            "/dev/a:/dev/a:r"
        );
        for bad in [
            "dev/x",
            "/dev/x:y",
            "/dev/x:/dev/y:",
            "/dev/x:/dev/y:rx",
            "/a:/b:r:w",
        ] {
            assert!(bad.parse::<Device>().is_err(), "{bad}");
        }
    }

    #[test]
    fn users_are_numeric_with_root_and_empty_as_zero() {
        assert_eq!(
            "1000:100".parse(),
            Ok(User {
                uid: 1000,
                gid: 100
            })
        );
        assert_eq!("1000".parse(), Ok(User { uid: 1000, gid: 0 }));
        assert_eq!("root".parse(), Ok(User::default()));
        assert_eq!("".parse(), Ok(User::default()));
        assert_eq!("root:5".parse(), Ok(User { uid: 0, gid: 5 }));
        let e = "nobody".parse::<User>().unwrap_err();
        assert!(e.contains("numeric"), "{e}");
        assert!("1:x".parse::<User>().is_err());
    }
}
