//! The model files and their integrity check. Hashing is plain Rust (no OpenCV), so a wrong or
//! truncated file is refused before OpenCV ever parses it.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::face::FaceError;

/// YuNet 2023mar face detector, as shipped in `models/`.
pub const YUNET_FILE: &str = "face_detection_yunet_2023mar.onnx";
/// SHA-256 of the upstream OpenCV Zoo YuNet 2023mar file.
pub const YUNET_SHA256: &str = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4";
/// SFace 2021dec face recognizer, as shipped in `models/`.
pub const SFACE_FILE: &str = "face_recognition_sface_2021dec.onnx";
/// SHA-256 of the upstream OpenCV Zoo SFace 2021dec file.
pub const SFACE_SHA256: &str = "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79";

/// Where the two model files of a models directory are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub yunet: PathBuf,
    pub sface: PathBuf,
}

impl ModelFiles {
    /// The standard file names inside `dir`.
    pub fn in_dir(dir: &Path) -> ModelFiles {
        ModelFiles {
            yunet: dir.join(YUNET_FILE),
            sface: dir.join(SFACE_FILE),
        }
    }

    /// Checks both files against their expected SHA-256.
    pub fn verify(&self) -> Result<(), FaceError> {
        verify_file(&self.yunet, YUNET_SHA256)?;
        verify_file(&self.sface, SFACE_SHA256)
    }
}

/// The SHA-256 of a file, lower-case hex. Streams the file: SFace is 38 MB and the Pi has
/// little memory to spare.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Refuses a file that is missing, unreadable or not the expected one, naming the path and
/// both hashes: a silently different model would change every match decision.
pub fn verify_file(path: &Path, expected_sha256: &str) -> Result<(), FaceError> {
    let model_err = |reason: String| FaceError::Model {
        path: path.display().to_string(),
        reason,
    };
    let actual = sha256_file(path).map_err(|e| {
        model_err(format!(
            "cannot read it ({e}); expected a file with sha256 {expected_sha256}"
        ))
    })?;
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        return Err(model_err(format!(
            "wrong file: sha256 is {actual}, expected {expected_sha256}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sha256_of_known_content() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"abc").unwrap();
        assert_eq!(
            sha256_file(f.path()).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sha256_streams_files_longer_than_the_buffer() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        // 1,000,000 times 'a', the FIPS 180-2 long test vector: crosses many buffer refills.
        f.write_all(&vec![b'a'; 1_000_000]).unwrap();
        assert_eq!(
            sha256_file(f.path()).unwrap(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn wrong_file_is_refused_with_path_and_both_hashes() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"abc").unwrap();
        let err = verify_file(f.path(), YUNET_SHA256).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, FaceError::Model { .. }), "{text}");
        assert!(text.contains(&f.path().display().to_string()), "{text}");
        assert!(text.contains(YUNET_SHA256), "{text}");
        assert!(
            text.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            "{text}"
        );
    }

    #[test]
    fn right_file_is_accepted() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"abc").unwrap();
        verify_file(
            f.path(),
            "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
        )
        .unwrap();
    }

    #[test]
    fn missing_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let files = ModelFiles::in_dir(dir.path());
        let text = files.verify().unwrap_err().to_string();
        assert!(text.contains(&files.yunet.display().to_string()), "{text}");
        assert!(text.contains("cannot read"), "{text}");
        assert!(text.contains(YUNET_SHA256), "{text}");
    }

    #[test]
    fn shipped_models_match_their_hashes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        ModelFiles::in_dir(&dir).verify().unwrap();
    }
}
