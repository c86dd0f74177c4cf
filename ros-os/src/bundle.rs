//! The upgrade bundle, `ros-VERSION.upgrade`: one file holding a release's kernel,
//! initrd, root image and build manifest, the size and sha256 of each, and an Ed25519
//! signature over that list.
//!
//! It is a tar archive (ustar) in a fixed order: `ros-bundle.json` (the [`Meta`]: format,
//! release, architecture, signing key id, parts), `ros-bundle.sig` (64 bytes: the
//! signature of exactly the bytes of `ros-bundle.json`), then the parts in the order the
//! metadata lists them. A reader checks the signature before it reads a part, then each
//! part's name, size and hash as it streams by: a tampered, truncated or re-ordered bundle
//! is refused, and nothing it holds is used until all of it has been checked.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The metadata's format.
pub const BUNDLE_FORMAT: u32 = 1;
/// The metadata's name in the archive.
pub const META_NAME: &str = "ros-bundle.json";
/// The signature's name in the archive.
pub const SIG_NAME: &str = "ros-bundle.sig";
/// The parts, in their order.
pub const PARTS: [&str; 4] = ["vmlinuz", "initrd", "root.img", "manifest"];
/// The most metadata read (it lists four parts).
const META_MAX: u64 = 64 << 10;
/// How a public key file's line starts.
pub const KEY_KIND: &str = "ros-ed25519";

/// One part of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Its name ([`PARTS`]).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, lowercase hex.
    pub sha256: String,
}

/// What `ros-bundle.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// [`BUNDLE_FORMAT`].
    pub format: u32,
    /// The release (`ros os version` of it, without the `v`).
    pub version: String,
    /// The machine it runs on (`x86_64`).
    pub arch: String,
    /// The id of the key that signed it ([`key_id`]).
    pub key: String,
    /// The parts, in the order they follow.
    pub parts: Vec<Part>,
}

/// Why a bundle or a key is refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Not a bundle, or not whole.
    #[error("not a valid upgrade bundle: {0}")]
    Malformed(String),
    /// Its signature does not verify.
    #[error("the signature does not verify with key {key}: the bundle was changed after it was signed, or is not from that key")]
    BadSignature {
        /// The key id.
        key: String,
    },
    /// Signed by a key this system does not trust.
    #[error("signed by key {key}, which this system does not trust (trusted: {trusted})")]
    UntrustedKey {
        /// The key id.
        key: String,
        /// The trusted ones.
        trusted: String,
    },
    /// For another machine.
    #[error("built for {found}, but this machine is {want}")]
    Arch {
        /// What it says.
        found: String,
        /// This machine.
        want: String,
    },
    /// A part is not what the signed metadata says.
    #[error("{part}: {problem}")]
    Part {
        /// The part.
        part: String,
        /// How it differs.
        problem: String,
    },
    /// A key file that cannot be used.
    #[error("{path}: {problem}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        problem: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BundleError {
    let what = what.into();
    move |source| BundleError::Io { what, source }
}

/// A public key this system trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// [`key_id`] of it.
    pub id: String,
    /// The 32 bytes of the Ed25519 public key.
    pub public: Vec<u8>,
}

/// A key's id: the first 8 bytes of the sha256 of the public key, in hex.
pub fn key_id(public: &[u8]) -> String {
    hex(&Sha256::digest(public)[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The line of a public key file: `ros-ed25519 BASE64 COMMENT`.
pub fn public_key_line(public: &[u8], comment: &str) -> String {
    format!(
        "{KEY_KIND} {} {comment}\n",
        base64::engine::general_purpose::STANDARD.encode(public)
    )
}

/// Parse a public key file's text (`path` names it in errors).
pub fn parse_public_key(text: &str, path: &str) -> Result<TrustedKey, BundleError> {
    let bad = |problem: &str| BundleError::Key {
        path: path.to_string(),
        problem: problem.to_string(),
    };
    let mut words = text.split_whitespace();
    if words.next() != Some(KEY_KIND) {
        return Err(bad(&format!("does not start with {KEY_KIND}")));
    }
    let public = words
        .next()
        .and_then(|w| base64::engine::general_purpose::STANDARD.decode(w).ok())
        .filter(|k| k.len() == 32)
        .ok_or_else(|| bad("the key is not 32 bytes of base64"))?;
    Ok(TrustedKey {
        id: key_id(&public),
        public,
    })
}

/// Every `*.pub` key in `dir` (a file that cannot be used is an error naming it).
pub fn trusted_keys(dir: &Path) -> Result<Vec<TrustedKey>, BundleError> {
    let mut keys = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_err(dir.display().to_string()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(io_err(path.display().to_string()))?;
        keys.push(parse_public_key(&text, &path.display().to_string())?);
    }
    Ok(keys)
}

/// A new signing key: PKCS#8 bytes (keep them private).
pub fn generate_key() -> Result<Vec<u8>, BundleError> {
    Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| BundleError::Malformed("generating a key failed".into()))
}

/// The public half of a PKCS#8 signing key.
pub fn public_of(pkcs8: &[u8], path: &str) -> Result<Vec<u8>, BundleError> {
    Ed25519KeyPair::from_pkcs8(pkcs8)
        .map(|kp| kp.public_key().as_ref().to_vec())
        .map_err(|e| BundleError::Key {
            path: path.to_string(),
            problem: format!("not an Ed25519 PKCS#8 key ({e})"),
        })
}

fn sha256_of(path: &Path) -> Result<(u64, String), BundleError> {
    let mut file = File::open(path).map_err(io_err(path.display().to_string()))?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher).map_err(io_err(path.display().to_string()))?;
    Ok((size, hex(&hasher.finalize())))
}

fn append_file(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<(), BundleError> {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, data)
        .map_err(io_err(format!("writing {name} into the bundle")))
}

/// Write a bundle of `parts` (name and file, in [`PARTS`] order) for `version` and `arch`
/// to `out`, signed with the PKCS#8 key `pkcs8`.
pub fn pack(
    out: impl Write,
    version: &str,
    arch: &str,
    parts: &[(&str, &Path)],
    pkcs8: &[u8],
) -> Result<Meta, BundleError> {
    let names: Vec<&str> = parts.iter().map(|(n, _)| *n).collect();
    if names != PARTS {
        return Err(BundleError::Malformed(format!(
            "parts {names:?}, expected {PARTS:?}"
        )));
    }
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| BundleError::Key {
        path: "the signing key".into(),
        problem: format!("not an Ed25519 PKCS#8 key ({e})"),
    })?;
    let mut listed = Vec::new();
    for (name, path) in parts {
        let (size, sha256) = sha256_of(path)?;
        listed.push(Part {
            name: name.to_string(),
            size,
            sha256,
        });
    }
    let meta = Meta {
        format: BUNDLE_FORMAT,
        version: version.to_string(),
        arch: arch.to_string(),
        key: key_id(pair.public_key().as_ref()),
        parts: listed,
    };
    let meta_bytes = serde_json::to_vec_pretty(&meta)
        .map_err(|e| BundleError::Malformed(format!("metadata: {e}")))?;
    let sig = pair.sign(&meta_bytes);
    let mut tar = tar::Builder::new(out);
    append_file(
        &mut tar,
        META_NAME,
        meta_bytes.len() as u64,
        &meta_bytes[..],
    )?;
    append_file(&mut tar, SIG_NAME, sig.as_ref().len() as u64, sig.as_ref())?;
    for ((name, path), part) in parts.iter().zip(&meta.parts) {
        let file = File::open(path).map_err(io_err(path.display().to_string()))?;
        append_file(&mut tar, name, part.size, file.take(part.size))?;
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err("finishing the bundle"))?;
    Ok(meta)
}

/// Where the parts go while a bundle is read: nowhere (a check), or files.
pub trait PartSink {
    /// A part begins.
    fn begin(&mut self, part: &Part) -> io::Result<()>;
    /// Some of its bytes.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// It ended (all its bytes were written).
    fn end(&mut self) -> io::Result<()>;
}

/// A [`PartSink`] that keeps nothing: reading into it checks a bundle.
#[derive(Debug, Default)]
pub struct Check;

impl PartSink for Check {
    fn begin(&mut self, _: &Part) -> io::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn end(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Read the bundle `input`: the signature with one of `keys`, the architecture `arch`,
/// then every part, passed to `sink` as it is hashed. `Ok` only when all of it is as
/// signed; on `Err` whatever `sink` received must not be used.
pub fn read(
    input: impl Read,
    keys: &[TrustedKey],
    arch: &str,
    sink: &mut dyn PartSink,
) -> Result<Meta, BundleError> {
    let malformed = |m: &str| BundleError::Malformed(m.to_string());
    let mut archive = tar::Archive::new(input);
    let mut entries = archive
        .entries()
        .map_err(|e| BundleError::Malformed(e.to_string()))?;
    let mut next = |want: &str| -> Result<tar::Entry<'_, _>, BundleError> {
        let entry = entries
            .next()
            .ok_or_else(|| BundleError::Malformed(format!("it ends before {want} (truncated?)")))?
            .map_err(|e| BundleError::Malformed(format!("reading {want}: {e} (truncated?)")))?;
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if name != want {
            return Err(BundleError::Malformed(format!(
                "found {name:?} where {want} should be"
            )));
        }
        Ok(entry)
    };
    let read_small = |entry: &mut dyn Read, what: &str| -> Result<Vec<u8>, BundleError> {
        let mut bytes = Vec::new();
        entry
            .take(META_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| BundleError::Malformed(format!("reading {what}: {e} (truncated?)")))?;
        if bytes.len() as u64 > META_MAX {
            return Err(BundleError::Malformed(format!("{what} is too large")));
        }
        Ok(bytes)
    };
    let meta_bytes = read_small(&mut next(META_NAME)?, META_NAME)?;
    let sig = read_small(&mut next(SIG_NAME)?, SIG_NAME)?;
    // The key id is read from the unverified metadata only to pick the key; nothing else
    // in it is looked at before the signature is checked.
    #[derive(Deserialize)]
    struct KeyOnly {
        key: String,
    }
    let claimed: KeyOnly = serde_json::from_slice(&meta_bytes)
        .map_err(|e| BundleError::Malformed(format!("{META_NAME}: {e}")))?;
    let key =
        keys.iter()
            .find(|k| k.id == claimed.key)
            .ok_or_else(|| BundleError::UntrustedKey {
                key: claimed.key.clone(),
                trusted: if keys.is_empty() {
                    "none".into()
                } else {
                    keys.iter()
                        .map(|k| k.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })?;
    signature::UnparsedPublicKey::new(&signature::ED25519, &key.public)
        .verify(&meta_bytes, &sig)
        .map_err(|_| BundleError::BadSignature {
            key: key.id.clone(),
        })?;
    let meta: Meta = serde_json::from_slice(&meta_bytes)
        .map_err(|e| BundleError::Malformed(format!("{META_NAME}: {e}")))?;
    if meta.format != BUNDLE_FORMAT {
        return Err(BundleError::Malformed(format!(
            "format {}, but this release reads format {BUNDLE_FORMAT}",
            meta.format
        )));
    }
    if meta.arch != arch {
        return Err(BundleError::Arch {
            found: meta.arch,
            want: arch.to_string(),
        });
    }
    let names: Vec<&str> = meta.parts.iter().map(|p| p.name.as_str()).collect();
    if names != PARTS {
        return Err(malformed(&format!("parts {names:?}, expected {PARTS:?}")));
    }
    for part in &meta.parts {
        let mut entry = next(&part.name)?;
        if entry.size() != part.size {
            return Err(BundleError::Part {
                part: part.name.clone(),
                problem: format!(
                    "{} bytes, but the signed size is {}",
                    entry.size(),
                    part.size
                ),
            });
        }
        let sink_err = io_err(format!("writing {}", part.name));
        sink.begin(part).map_err(sink_err)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut seen = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(|e| BundleError::Part {
                part: part.name.clone(),
                problem: format!("reading it: {e} (truncated?)"),
            })?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            hasher.update(&buf[..n]);
            sink.write(&buf[..n])
                .map_err(io_err(format!("writing {}", part.name)))?;
        }
        if seen != part.size {
            return Err(BundleError::Part {
                part: part.name.clone(),
                problem: format!(
                    "only {seen} of its {} bytes are there (truncated)",
                    part.size
                ),
            });
        }
        let got = hex(&hasher.finalize());
        if got != part.sha256 {
            return Err(BundleError::Part {
                part: part.name.clone(),
                problem: format!("sha256 {got}, but the signed sha256 is {}", part.sha256),
            });
        }
        sink.end()
            .map_err(io_err(format!("writing {}", part.name)))?;
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        key: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in PARTS.iter().enumerate() {
            std::fs::write(dir.path().join(name), vec![b'a' + i as u8; 1000 + i * 7000]).unwrap();
        }
        Fixture {
            dir,
            key: generate_key().unwrap(),
        }
    }

    impl Fixture {
        fn bundle(&self, version: &str, arch: &str) -> Vec<u8> {
            let paths: Vec<PathBuf> = PARTS.iter().map(|n| self.dir.path().join(n)).collect();
            let parts: Vec<(&str, &Path)> = PARTS
                .iter()
                .zip(&paths)
                .map(|(n, p)| (*n, p.as_path()))
                .collect();
            let mut out = Vec::new();
            pack(&mut out, version, arch, &parts, &self.key).unwrap();
            out
        }

        fn trusted(&self) -> Vec<TrustedKey> {
            let public = public_of(&self.key, "k").unwrap();
            vec![parse_public_key(&public_key_line(&public, "test"), "k.pub").unwrap()]
        }
    }

    /// Collects what it is given.
    #[derive(Default)]
    struct Keep(Vec<(String, Vec<u8>)>);

    impl PartSink for Keep {
        fn begin(&mut self, part: &Part) -> io::Result<()> {
            self.0.push((part.name.clone(), Vec::new()));
            Ok(())
        }
        fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.0.last_mut().unwrap().1.extend_from_slice(bytes);
            Ok(())
        }
        fn end(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_packed_bundle_reads_back_whole() {
        let f = fixture();
        let bundle = f.bundle("2.0+abc", "x86_64");
        let mut keep = Keep::default();
        let meta = read(&bundle[..], &f.trusted(), "x86_64", &mut keep).unwrap();
        assert_eq!(meta.version, "2.0+abc");
        assert_eq!(keep.0.len(), 4);
        for (name, bytes) in &keep.0 {
            assert_eq!(
                bytes,
                &std::fs::read(f.dir.path().join(name)).unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn tampered_truncated_foreign_and_untrusted_bundles_are_refused() {
        let f = fixture();
        let good = f.bundle("2.0", "x86_64");
        let keys = f.trusted();
        // A byte of a part changed: its hash.
        let mut tampered = good.clone();
        let at = tampered.len() - 2000;
        tampered[at] ^= 1;
        let err = read(&tampered[..], &keys, "x86_64", &mut Check).unwrap_err();
        assert!(err.to_string().contains("signed sha256"), "{err}");
        // The signed metadata changed (the version): the signature.
        let mut relabelled = good.clone();
        let pos = relabelled
            .windows(7)
            .position(|w| w == b"\"2.0\",\n")
            .unwrap();
        relabelled[pos + 1] = b'3';
        let err = read(&relabelled[..], &keys, "x86_64", &mut Check).unwrap_err();
        assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
        // Cut short anywhere.
        for cut in [100, 1500, good.len() / 2, good.len() - 1100] {
            let err = read(&good[..cut], &keys, "x86_64", &mut Check).unwrap_err();
            assert!(err.to_string().contains("truncated"), "cut {cut}: {err}");
        }
        // Another machine's, and another key's.
        let err = read(&good[..], &keys, "aarch64", &mut Check).unwrap_err();
        assert!(matches!(err, BundleError::Arch { .. }), "{err}");
        let stranger = fixture();
        let err = read(&good[..], &stranger.trusted(), "x86_64", &mut Check).unwrap_err();
        assert!(err.to_string().contains("does not trust"), "{err}");
        assert!(read(&b"not a tar"[..], &keys, "x86_64", &mut Check).is_err());
    }

    #[test]
    fn key_files_are_parsed_and_bad_ones_named() {
        let key = generate_key().unwrap();
        let public = public_of(&key, "k").unwrap();
        let line = public_key_line(&public, "build tree");
        let parsed = parse_public_key(&line, "a.pub").unwrap();
        assert_eq!(parsed.id, key_id(&public));
        assert_eq!(parsed.id.len(), 16);
        let err = parse_public_key("ssh-ed25519 AAAA", "/keys/b.pub").unwrap_err();
        assert!(err.to_string().starts_with("/keys/b.pub: "), "{err}");
        assert!(parse_public_key("ros-ed25519 AAAA", "c").is_err());
        assert!(public_of(b"junk", "k").is_err());
    }
}
