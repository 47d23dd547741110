//! The package's files agree with the code: the default config validates once the installer
//! sets its three required keys (and not before), and the unit, the package and the code name
//! the same paths.

use std::path::Path;

use acceso::Config;

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_packaged_config_is_valid_once_the_required_keys_are_set() {
    let shipped = repo("packaging/acceso.toml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acceso.toml");

    std::fs::write(&path, &shipped).unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    // As shipped, the required keys are commented out: it says one is missing, and where.
    assert!(
        e.contains("missing field") && e.contains("acceso.toml"),
        "as shipped it must name a missing key: {e}"
    );

    let set = shipped
        .replace("#device_id = ", "device_id = ")
        .replace("#name = ", "name = ")
        .replace("#host = ", "host = ");
    std::fs::write(&path, set).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    // What the unit and the package provide.
    assert_eq!(config.state_dir, Path::new("/var/lib/acceso"));
    assert_eq!(
        config.face.models_dir,
        Path::new("/usr/share/acceso/models")
    );
    assert!(config.broker.tls, "AWS IoT Core needs mutual TLS");
    assert_eq!(config.broker.port, 8883);
    for f in [
        &config.broker.ca_file,
        &config.broker.cert_file,
        &config.broker.key_file,
    ] {
        let f = f.as_ref().expect("set");
        assert!(f.starts_with("/etc/acceso/certs"), "{}", f.display());
    }
    // It pins the cloud's signing key where step 4 of the README installs it; `run` and
    // `check-config` load that file (here: any P-256 key in its place) before anything runs.
    let pinned = Path::new("/etc/acceso/certs/sync-signing-key.pem");
    assert_eq!(config.sync.public_keys, [pinned]);
    let key = dir.path().join("sync-signing-key.pem");
    std::fs::write(
        &key,
        acceso_protocol::SigningKey::generate()
            .unwrap()
            .public_key()
            .to_pem(),
    )
    .unwrap();
    // And the TLS files it names: readable is all `check-config` asks of them.
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    for f in [
        &config.broker.ca_file,
        &config.broker.cert_file,
        &config.broker.key_file,
    ] {
        let name = f.as_ref().unwrap().file_name().unwrap();
        std::fs::write(certs.join(name), "").unwrap();
    }
    let installed = std::fs::read_to_string(&path)
        .unwrap()
        .replace(pinned.to_str().unwrap(), key.to_str().unwrap())
        .replace("/etc/acceso/certs/", &format!("{}/", certs.display()));
    std::fs::write(&path, installed).unwrap();
    Config::load_checked(&path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_unit_and_the_package_name_the_paths_the_code_uses() {
    let unit = repo("systemd/acceso.service");
    assert!(unit.contains("\nExecStart=/usr/bin/acceso run --config /etc/acceso/acceso.toml\n"));
    assert!(unit.contains("\nStateDirectory=acceso\n"));
    assert!(unit.contains("\nConfigurationDirectory=acceso\n"));
    assert!(unit.contains("\nType=notify\n"));
    assert!(unit.contains("\nWatchdogSec="));
    assert!(unit.contains("\nUser=acceso\n"));
    assert_eq!(
        Config::sim_defaults(Path::new("/var/lib/acceso")).db_path(),
        Path::new("/var/lib/acceso/acceso.db")
    );
    let cargo = repo("Cargo.toml");
    for asset in [
        r#"["target/release/acceso", "usr/bin/", "755"]"#,
        r#"["systemd/acceso.service", "lib/systemd/system/", "644"]"#,
        r#"["packaging/acceso.toml", "etc/acceso/acceso.toml", "640"]"#,
        r#"conf-files = ["/etc/acceso/acceso.toml"]"#,
        r#"maintainer-scripts = "packaging/debian/""#,
    ] {
        assert!(cargo.contains(asset), "Cargo.toml lacks {asset}");
    }
    let postinst = repo("packaging/debian/postinst");
    assert!(postinst.contains("adduser --system"));
    assert!(unit.contains("\nSupplementaryGroups=spi gpio video\n"));
    // The groups exist on every image the package is installed on.
    assert!(postinst.contains("for group in spi gpio video; do"));
}
