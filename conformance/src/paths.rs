//! Where the programs under comparison are: the Rust `websocket` binary (built
//! once per test process) and the JavaScript implementation's directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// The environment variable naming the JavaScript implementation's directory.
pub const JS_DIR_VAR: &str = "CONFORMANCE_JS_DIR";

/// The environment variable naming a prebuilt `websocket` binary (skips the build).
pub const BINARY_VAR: &str = "CONFORMANCE_WEBSOCKET_BIN";

/// The workspace root (the directory holding `conformance/`), so that fixtures,
/// `js-reference/` and the build are found wherever the tests run from.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// Our JavaScript reimplementation of y-redis 0.1.6, which also holds the sidecar.
pub fn js_reference_dir() -> PathBuf {
    workspace_root().join("js-reference")
}

/// The JavaScript implementation the Rust server is compared with: the directory
/// named by `CONFORMANCE_JS_DIR`, else `js-reference` at the workspace root. It must
/// hold `bin/server.js` and `bin/worker.js` reading y-redis's environment names;
/// anything else is an error, so a wrong setting fails loudly instead of skipping.
pub fn js_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os(JS_DIR_VAR) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => js_reference_dir(),
    };
    for script in ["bin/server.js", "bin/worker.js"] {
        if !dir.join(script).is_file() {
            bail!(
                "{} has no {script}: set {JS_DIR_VAR} to a y-redis compatible implementation",
                dir.display()
            );
        }
    }
    if !dir.join("node_modules").is_dir() {
        bail!(
            "{} has no node_modules: run `npm ci` there (ci/setup.sh does it for js-reference)",
            dir.display()
        );
    }
    Ok(dir)
}

/// The fixtures captured from y-redis 0.1.6.
pub fn fixture(name: &str) -> Result<serde_json::Value> {
    let path = workspace_root().join("fixtures/yredis-0.1.6").join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The `websocket` binary: `CONFORMANCE_WEBSOCKET_BIN` if set, else built once per
/// test process with `cargo build -p websocket --bin websocket` (the profile of the
/// tests themselves). Cargo does not build other packages' binaries for a test, so
/// the harness asks for it; an up-to-date build costs a second.
pub fn websocket_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| locate_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Cargo settings of the user that the nested build keeps.
const KEPT_CARGO_VARS: &[&str] = &[
    "CARGO_HOME",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_",
    "CARGO_NET_",
    "CARGO_REGISTR",
    "CARGO_HTTP_",
    "CARGO_TERM_",
    "CARGO_PROFILE_",
    "CARGO_INCREMENTAL",
];

fn locate_or_build() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_VAR).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{BINARY_VAR}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(workspace_root())
        .args(["build", "-p", "websocket", "--bin", "websocket"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    // Cargo gives tests its package variables (CARGO_MANIFEST_DIR, CARGO_PKG_*,
    // …); build scripts that watch them (ring's do) would rebuild on every run.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let kept = KEPT_CARGO_VARS.iter().any(|p| name.starts_with(p));
        if (name.starts_with("CARGO_") || name.starts_with("__CARGO")) && !kept {
            command.env_remove(name.as_ref());
        }
    }
    let mut child = command
        .spawn()
        .context("running cargo build for websocket")?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut executable = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == "websocket" {
            if let Some(path) = message["executable"].as_str() {
                executable = Some(PathBuf::from(path));
            }
        }
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "cargo build -p websocket failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    executable.context("cargo build reported no websocket executable")
}
