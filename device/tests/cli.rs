//! The `varsel-device` binary end to end against the key-server test double: configure, give
//! consent, report, sync, read the log and exposures, wipe.

mod support;

use std::path::Path;
use std::process::Command;

use p256::ecdsa::SigningKey;
use rand_core::OsRng;
use support::{Double, GOOD_CODE};
use varsel_protocol::export::{Compression, Export, ExportSigner, TrustedKey, write_archive};

/// Runs the binary with `args` on the data directory `dir`; returns stdout, or panics with
/// stderr when it fails.
async fn run(dir: &Path, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_varsel-device"));
    command.arg("--data-dir").arg(dir).args(args);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_command_line_drives_the_device() {
    let double = Double::start().await;
    let signer = ExportSigner::new(SigningKey::random(&mut OsRng), "XX", "v1");
    let export = Export {
        batch_num: 1,
        batch_size: 1,
        ..Export::default()
    };
    let zip = write_archive(export, std::slice::from_ref(&signer), Compression::Stored).unwrap();
    double.put_file("1.zip", zip);
    double.put_file("index.txt", b"1.zip\n".to_vec());

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("device");
    let pem = dir.path().join("export-key.pem");
    let key = TrustedKey::any_id(signer.verifying_key());
    std::fs::write(&pem, key.to_pem().unwrap()).unwrap();
    let pem = pem.to_str().unwrap();

    run(
        &data,
        &["init", "--server", &double.url(), "--trusted-key", pem],
    )
    .await;
    assert!(run(&data, &["keys"]).await.contains(" 144 "));
    run(&data, &["consent", "grant", "upload"]).await;
    assert!(
        run(&data, &["report", "--code", GOOD_CODE])
            .await
            .contains("Reported")
    );
    assert!(run(&data, &["sync"]).await.contains("1 new"));
    assert!(run(&data, &["exposures"]).await.contains("No exposures"));

    let log: serde_json::Value =
        serde_json::from_str(&run(&data, &["log", "--json"]).await).unwrap();
    let purposes: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(purposes, ["report", "report", "report", "sync", "sync"]);
    assert_eq!(double.received().len(), purposes.len());

    run(&data, &["wipe", "--yes"]).await;
    assert!(!data.join("db").exists());
}
