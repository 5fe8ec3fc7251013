//! The `websocket` binary: help, configuration errors, signals.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use testkit::{free_port, wait_for_port, ServiceProcess};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_websocket"))
}

#[test]
fn help_documents_every_option() {
    let output = binary().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let variables = websocket::config::SETTINGS
        .iter()
        .flat_map(|setting| setting.env.iter().copied());
    for name in ["--config", "--port", "serve", "worker", "buffer_capacity"]
        .into_iter()
        .chain(variables)
    {
        assert!(help.contains(name), "--help mentions {name}:\n{help}");
    }
}

#[test]
fn invalid_configuration_is_one_line_and_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[websocket]\nport = \"not a port\"\n").unwrap();
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (vec!["--config".into(), bad.display().to_string()], vec![]),
        (vec![], vec![("WS_PORT", "abc")]),
        (vec!["--config".into(), "/nonexistent.toml".into()], vec![]),
        (vec![], vec![("REDIS_TASK_DEBOUNCE", "-5")]),
    ];
    for (args, env) in cases {
        let output = binary()
            .args(&args)
            .envs(env.iter().copied())
            .env_remove("REDIS_URL")
            .env_remove("REDIS")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
}

/// SIGTERM stops a serving embedded instance within 10 s with status 0, and
/// its documents are stored on the way out.
#[tokio::test]
async fn sigterm_stops_gracefully_and_keeps_documents() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let spawn = || {
        let mut command = binary();
        command
            .current_dir(data.path())
            .env_remove("REDIS_URL")
            .env_remove("REDIS")
            .env("WS_PORT", port.to_string())
            .env("WS_HOST", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit());
        let process = ServiceProcess::spawn("websocket", command).unwrap();
        wait_for_port(port, Duration::from_secs(20)).unwrap();
        process
    };
    let mut process = spawn();
    let room = format!("ws://127.0.0.1:{port}/kept");
    let (_a, b) = two_editors_after(&room, "survives").await;

    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = process.terminate(Duration::from_secs(10));
        (status, process)
    })
    .await
    .unwrap();
    let (status, _process) = status;
    let status = status.expect("stopped within 10 s");
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    b.wait_until("closed by the server", SOON, |c| c.closed().is_some())
        .await
        .unwrap();
    assert_eq!(b.closed(), Some(1001));
    assert!(!stored_files(&data.path().join("data"), "kept").is_empty());

    let _process = spawn();
    let c = YClient::connect(&room).await.unwrap();
    c.wait_synced(SOON).await.unwrap();
    assert_eq!(c.text("t"), "survives");
}

/// A single instance whose storage cannot take its final flush exits with
/// status 1 and names the documents it could not store: their edits were only
/// in its memory, and an orchestrator must not see a clean exit after a loss.
#[tokio::test]
async fn a_final_flush_that_fails_exits_non_zero_and_names_the_documents() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let mut child = binary()
        .current_dir(dir.path())
        .env_remove("REDIS_URL")
        .env_remove("REDIS")
        .env_remove("STORAGE_BACKEND")
        .env_remove("STORAGE_DIR")
        .env("WS_PORT", port.to_string())
        .env("WS_HOST", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    wait_for_port(port, Duration::from_secs(20)).unwrap();
    let room = format!("ws://127.0.0.1:{port}/unstored-room");
    let _editors = two_editors_after(&room, "only in memory").await;
    // The storage directory becomes a file: every write into it fails.
    let data = dir.path().join("data");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::write(&data, b"not a directory").unwrap();

    let started = Instant::now();
    // SAFETY: kill(2) on the child's own pid, which has not been waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("still running 15 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    })
    .await
    .unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "exit status {status}; stderr:\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line in:\n{stderr}");
    assert!(
        errors[0].contains("1 document not stored before stopping")
            && errors[0].contains("\"unstored-room\""),
        "{}",
        errors[0]
    );
    eprintln!("{}", errors[0]);
}
