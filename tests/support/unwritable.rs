//! Makes a file or directory unwritable for this process for as long as the guard lives: by
//! its mode, or for root (whom modes do not stop) by the immutable attribute as well.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Unwritable {
    path: PathBuf,
    before: std::fs::Permissions,
    immutable: bool,
}

impl Unwritable {
    pub fn make(path: &Path) -> Unwritable {
        let before = std::fs::metadata(path).unwrap().permissions();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
        let root = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap();
        if root {
            let ok = Command::new("chattr").arg("+i").arg(path).status().unwrap();
            assert!(
                ok.success(),
                "running as root and chattr +i failed on {path:?}"
            );
        }
        Unwritable {
            path: path.to_owned(),
            before,
            immutable: root,
        }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
        }
        let _ = std::fs::set_permissions(&self.path, self.before.clone());
    }
}
