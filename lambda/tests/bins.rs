//! The function binaries refuse to start without their settings, naming the one missing,
//! before they touch the network.

use std::process::Command;

fn start(bin: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new(bin)
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .expect("run the binary");
    assert!(!out.status.success(), "{bin} started without its settings");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn each_function_names_the_setting_it_lacks() {
    let cases = [
        (
            env!("CARGO_BIN_EXE_ingest"),
            vec![],
            "EVENTS_TABLE is not set",
        ),
        (
            env!("CARGO_BIN_EXE_api"),
            vec![("EVENTS_TABLE", "e")],
            "DIRECTORY_TABLE is not set",
        ),
        (
            env!("CARGO_BIN_EXE_api"),
            vec![("EVENTS_TABLE", "e"), ("DIRECTORY_TABLE", "d")],
            "SIGNING_KEY_ID is not set",
        ),
        (
            env!("CARGO_BIN_EXE_sync"),
            vec![("DIRECTORY_TABLE", "")],
            "DIRECTORY_TABLE is empty",
        ),
        (env!("CARGO_BIN_EXE_authorizer"), vec![], "JWKS is not set"),
        (
            env!("CARGO_BIN_EXE_authorizer"),
            vec![("JWKS", r#"{"keys": []}"#)],
            "JWKS: the key set has no keys",
        ),
    ];
    for (bin, env, expect) in cases {
        let said = start(bin, &env);
        assert!(
            said.contains(expect),
            "{bin} {env:?}: {said:?} lacks {expect:?}"
        );
    }
}
