//! The `varsel-key-server` binary: authority and key commands on a real database, and `serve`
//! answering on a real socket until SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_varsel-key-server");

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env("VARSEL_KEY_SERVER__SERVER__DATA_DIR", dir)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn authority_and_key_commands() {
    let dir = tempfile::tempdir().unwrap();
    let added = stdout(&run(
        dir.path(),
        &["authority", "add", "Lab One", "--daily-quota", "5"],
    ));
    let api_key = added.lines().last().unwrap().trim().to_owned();
    assert!(api_key.starts_with("vks_"));
    let again = run(dir.path(), &["authority", "add", "Lab One"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let listed = stdout(&run(dir.path(), &["authority", "list"]));
    assert!(listed.contains("Lab One\tquota 5") && listed.contains("active"));
    assert!(!listed.contains(&api_key), "list must not show API keys");
    stdout(&run(dir.path(), &["authority", "revoke", "Lab One"]));
    assert!(stdout(&run(dir.path(), &["authority", "list"])).contains("revoked at"));
    assert!(
        !run(dir.path(), &["authority", "revoke", "Nobody"])
            .status
            .success()
    );

    // Token and certificate keys are the lines starting with `kid`, each followed by its PEM.
    let signing_keys = |text: &str| text.lines().filter(|line| line.starts_with("kid ")).count();
    let keys = stdout(&run(dir.path(), &["keys", "list"]));
    assert_eq!(signing_keys(&keys), 1);
    assert!(keys.contains("-----BEGIN PUBLIC KEY-----"));
    let rotated = stdout(&run(dir.path(), &["keys", "rotate"]));
    assert_eq!(signing_keys(&rotated), 2);
    assert!(rotated.contains("(verifying only)") && rotated.contains("(signing)"));
    let old = keys.split_whitespace().nth(1).unwrap();
    let retired = stdout(&run(dir.path(), &["keys", "retire", old]));
    assert_eq!(signing_keys(&retired), 1);
    assert!(!retired.contains(old));

    let bad_config = Command::new(BINARY)
        .args(["authority", "list"])
        .env("VARSEL_KEY_SERVER__SERVER__DATA_DIR", dir.path())
        .env("VARSEL_KEY_SERVER__VERIFICATION__BOGUS", "1")
        .output()
        .unwrap();
    assert!(!bad_config.status.success());
}

#[test]
fn openapi_command_prints_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let printed = stdout(&run(dir.path(), &["openapi"]));
    assert_eq!(
        printed.trim_end(),
        varsel_key_server::openapi::render().trim_end()
    );
}

#[test]
fn serve_answers_until_terminated() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    let data = dir.path().join("data");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
        data
    );
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(BINARY)
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // A watchdog ends the server if the test stalls, so a failure cannot hang the suite.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    });

    // The address is in the start-up log line.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split("address=")
                .nth(1)
                .map(|rest| rest.trim().to_owned())
        })
        .expect("a listening line");
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    assert!(data.join("verification").exists());
}
