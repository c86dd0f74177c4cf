//! User-data as datasources deliver it: `#cloud-config` YAML or a `#!` script, either of
//! them possibly gzip-compressed. Owns recognising the format under size caps; fetching is
//! someone else's job, and so is validating the YAML (`resolve`).

use crate::file::MAX_FILE_BYTES;
use crate::schema::gunzip_capped;

/// What a piece of user-data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserData {
    /// `#cloud-config` YAML text.
    CloudConfig(String),
    /// A `#!` script, run once at boot.
    Script(Vec<u8>),
    /// Nothing (empty or only whitespace).
    Empty,
}

/// Why user-data cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    /// Larger than the limit (before or after decompression).
    #[error("reading user-data: larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Looks gzip-compressed but does not decompress.
    #[error("decompressing user-data: {reason}")]
    Decompress {
        /// Why.
        reason: String,
    },
    /// A `#cloud-config` document that is not UTF-8.
    #[error("reading user-data: #cloud-config is not UTF-8 text")]
    NotUtf8,
    /// Neither `#cloud-config` nor `#!`.
    #[error("reading user-data: starts with `{start}`, expected `#cloud-config` or `#!`")]
    Unrecognized {
        /// The first characters, for the message.
        start: String,
    },
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Recognise user-data. Gzip is undone once (bounded by [`MAX_FILE_BYTES`]); a UTF-8 byte
/// order mark is ignored.
pub fn parse_user_data(bytes: &[u8]) -> Result<UserData, UserDataError> {
    let too_large = UserDataError::TooLarge {
        limit: MAX_FILE_BYTES,
    };
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large);
    }
    let decompressed;
    let mut bytes = bytes;
    if bytes.starts_with(&GZIP_MAGIC) {
        decompressed = gunzip_capped(bytes, MAX_FILE_BYTES).map_err(|e| match e {
            Some(reason) => UserDataError::Decompress { reason },
            None => too_large.clone(),
        })?;
        bytes = &decompressed;
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(UserData::Empty);
    }
    if bytes.starts_with(b"#cloud-config") {
        let text = std::str::from_utf8(bytes).map_err(|_| UserDataError::NotUtf8)?;
        return Ok(UserData::CloudConfig(text.to_string()));
    }
    if bytes.starts_with(b"#!") {
        return Ok(UserData::Script(bytes.to_vec()));
    }
    let start: String = String::from_utf8_lossy(&bytes[..bytes.len().min(24)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    Err(UserDataError::Unrecognized { start })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn formats() {
        let cc = "#cloud-config\nhostname: a\n";
        assert_eq!(
            parse_user_data(cc.as_bytes()),
            Ok(UserData::CloudConfig(cc.into()))
        );
        assert_eq!(
            parse_user_data(&gzip(cc.as_bytes())),
            Ok(UserData::CloudConfig(cc.into()))
        );
        let sh = b"#!/bin/sh\necho hi\n";
        assert_eq!(parse_user_data(sh), Ok(UserData::Script(sh.to_vec())));
        assert_eq!(
            parse_user_data(&gzip(sh)),
            Ok(UserData::Script(sh.to_vec()))
        );
        assert_eq!(parse_user_data(b" \n"), Ok(UserData::Empty));
        assert_eq!(parse_user_data(b""), Ok(UserData::Empty));
        let bom = "\u{feff}#cloud-config\n";
        assert!(matches!(
            parse_user_data(bom.as_bytes()),
            Ok(UserData::CloudConfig(_))
        ));
        assert!(matches!(
            parse_user_data(b"hostname: a"),
            Err(UserDataError::Unrecognized { .. })
        ));
        assert!(matches!(
            parse_user_data(b"#cloud-config\n\xff"),
            Err(UserDataError::NotUtf8)
        ));
        assert!(matches!(
            parse_user_data(&[0x1f, 0x8b, 1, 2, 3]),
            Err(UserDataError::Decompress { .. })
        ));
    }

    #[test]
    fn gzip_bomb_is_refused() {
        let bomb = gzip(&vec![b'#'; 8 << 20]);
        assert!(bomb.len() < MAX_FILE_BYTES);
        assert_eq!(
            parse_user_data(&bomb),
            Err(UserDataError::TooLarge {
                limit: MAX_FILE_BYTES
            })
        );
        assert!(parse_user_data(&vec![b' '; MAX_FILE_BYTES + 1]).is_err());
    }
}
