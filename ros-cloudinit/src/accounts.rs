//! User and group names to numeric ids, from `<root>/etc/passwd` and `<root>/etc/group`
//! (no NSS: the host has only these files). Owns `write_files[].owner` parsing; reads files
//! only, changes nothing. The root is a directory on the host (`&Path`) or a container's
//! root ([`ContainerRoot`]: its account files are read without leaving it).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::confined::{ConfinedError, ContainerRoot};
use crate::host::Owner;
use crate::paths;

/// Why an owner could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The account file could not be read.
    #[error("reading {path}: {source}")]
    ReadAccounts {
        /// passwd or group.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No such user.
    #[error("owner `{owner}`: no user `{user}` in {path}")]
    UnknownUser {
        /// The owner text.
        owner: String,
        /// The user name.
        user: String,
        /// The passwd file.
        path: PathBuf,
    },
    /// No such group.
    #[error("owner `{owner}`: no group `{group}` in {path}")]
    UnknownGroup {
        /// The owner text.
        owner: String,
        /// The group name.
        group: String,
        /// The group file.
        path: PathBuf,
    },
    /// A container's account file could not be read inside its root.
    #[error(transparent)]
    ReadContainerAccounts(ConfinedError),
    /// Empty user and group.
    #[error("owner `{owner}`: expected USER[:GROUP]")]
    Malformed {
        /// The owner text.
        owner: String,
    },
}

/// Where `/etc/passwd` and `/etc/group` are read from.
pub trait AccountFiles {
    /// The text of `well_known` (an absolute path such as [`paths::ETC_PASSWD`]) below this
    /// root; `None` when it does not exist.
    fn read_account_file(&self, well_known: &str) -> Result<Option<String>, OwnerError>;
    /// Where `well_known` is, as the host sees it (for messages).
    fn account_file_path(&self, well_known: &str) -> PathBuf;
}

impl AccountFiles for Path {
    fn read_account_file(&self, well_known: &str) -> Result<Option<String>, OwnerError> {
        let path = paths::under(self, well_known);
        match fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(OwnerError::ReadAccounts { path, source }),
        }
    }

    fn account_file_path(&self, well_known: &str) -> PathBuf {
        paths::under(self, well_known)
    }
}

impl AccountFiles for ContainerRoot {
    fn read_account_file(&self, well_known: &str) -> Result<Option<String>, OwnerError> {
        let rel = Path::new(well_known.trim_start_matches('/'));
        self.read_optional(rel)
            .map_err(OwnerError::ReadContainerAccounts)
    }

    fn account_file_path(&self, well_known: &str) -> PathBuf {
        paths::under(self.path(), well_known)
    }
}

/// A user's uid and primary gid from the passwd file under `root`; `Ok(None)` when there
/// is no such user (or no passwd file).
pub fn lookup_user<R: AccountFiles + ?Sized>(
    root: &R,
    name: &str,
) -> Result<Option<Owner>, OwnerError> {
    Ok(read_table(root, paths::ETC_PASSWD)?
        .into_iter()
        .find_map(|fields| {
            // name:password:uid:gid:gecos:home:shell
            if fields.first().map(String::as_str) != Some(name) {
                return None;
            }
            let uid = fields.get(2)?.parse().ok()?;
            let gid = fields.get(3)?.parse().ok()?;
            Some(Owner { uid, gid })
        }))
}

/// A group's gid from the group file under `root`; `Ok(None)` when there is none.
pub fn lookup_group<R: AccountFiles + ?Sized>(
    root: &R,
    name: &str,
) -> Result<Option<u32>, OwnerError> {
    Ok(read_table(root, paths::ETC_GROUP)?
        .into_iter()
        .find_map(|fields| {
            // name:password:gid:members
            (fields.first().map(String::as_str) == Some(name))
                .then(|| fields.get(2)?.parse().ok())
                .flatten()
        }))
}

fn read_table<R: AccountFiles + ?Sized>(
    root: &R,
    well_known: &str,
) -> Result<Vec<Vec<String>>, OwnerError> {
    let text = root.read_account_file(well_known)?.unwrap_or_default();
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect())
}

/// Resolve `USER[:GROUP]` (or `:GROUP`): numbers are
/// ids, names are looked up under `root`. Without a group, a named user's primary group is
/// used (a numeric uid gets gid 0). `None` means `root:root`.
pub fn resolve_owner<R: AccountFiles + ?Sized>(
    root: &R,
    owner: Option<&str>,
) -> Result<Owner, OwnerError> {
    let Some(text) = owner.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Owner::ROOT);
    };
    let (user, group) = match text.split_once(':') {
        Some((u, g)) => (u.trim(), Some(g.trim()).filter(|g| !g.is_empty())),
        None => (text, None),
    };
    let passwd = root.account_file_path(paths::ETC_PASSWD);
    let (uid, primary_gid) = if user.is_empty() {
        (0, 0)
    } else if let Ok(uid) = user.parse::<u32>() {
        (uid, 0)
    } else {
        let found = lookup_user(root, user)?.ok_or_else(|| OwnerError::UnknownUser {
            owner: text.to_string(),
            user: user.to_string(),
            path: passwd,
        })?;
        (found.uid, found.gid)
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_group(root, g)?.ok_or_else(|| OwnerError::UnknownGroup {
                owner: text.to_string(),
                group: g.to_string(),
                path: root.account_file_path(paths::ETC_GROUP),
            })?,
        },
    };
    if user.is_empty() && group.is_none() {
        return Err(OwnerError::Malformed {
            owner: text.to_string(),
        });
    }
    Ok(Owner { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_accounts() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nrancher:x:1100:1100::/home/rancher:/bin/sh\ndocker-user:x:1200:1300::/:/bin/false\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nrancher:x:1100:\ndocker:x:233:rancher\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn owner_table() {
        let dir = root_with_accounts();
        let root = dir.path();
        let o = |uid, gid| Owner { uid, gid };
        let cases: [(Option<&str>, Owner); 9] = [
            (None, Owner::ROOT),
            (Some(""), Owner::ROOT),
            (Some("root:root"), Owner::ROOT),
            (Some("rancher:rancher"), o(1100, 1100)),
            (Some("rancher"), o(1100, 1100)),
            (Some("docker-user"), o(1200, 1300)),
            (Some("rancher:docker"), o(1100, 233)),
            (Some("1000:1001"), o(1000, 1001)),
            (Some(":docker"), o(0, 233)),
        ];
        for (text, want) in cases {
            assert_eq!(resolve_owner(root, text).unwrap(), want, "{text:?}");
        }
        let e = resolve_owner(root, Some("nobody:rancher")).unwrap_err();
        assert!(e.to_string().contains("no user `nobody`"), "{e}");
        assert!(e.to_string().contains("etc/passwd"), "{e}");
        let e = resolve_owner(root, Some("rancher:wheel")).unwrap_err();
        assert!(e.to_string().contains("no group `wheel`"), "{e}");
        assert!(resolve_owner(root, Some(":")).is_err());
    }

    #[test]
    fn missing_files_mean_no_accounts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lookup_user(dir.path(), "rancher").unwrap(), None);
        assert!(resolve_owner(dir.path(), Some("rancher")).is_err());
        assert_eq!(resolve_owner(dir.path(), Some("0:0")).unwrap(), Owner::ROOT);
    }
}
