//! Browser scripts: a Node script in `conformance/browser/` drives Debian's
//! Chromium through puppeteer-core and prints one JSON line of what it saw.
//! This module checks that everything such a script needs is installed (so a
//! missing Chromium fails with what to install, never a skip), runs the script
//! with the packages of `js-reference/` and reads its last line.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;

use crate::paths;

/// Chromium as a script will launch it (`CHROMIUM`, else Debian's path).
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fail with what to install when Chromium, Node or one of `packages` (in
/// `js-reference/node_modules`) is missing.
pub async fn check_prerequisites(packages: &[&str]) -> Result<()> {
    let browser = chromium();
    if !browser.is_file() {
        bail!(
            "no Chromium at {}: install Debian's `chromium` package (ci/setup.sh does) \
             or set CHROMIUM to a Chromium binary",
            browser.display()
        );
    }
    let node = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await;
    match node {
        Ok(output) if output.status.success() => {}
        _ => bail!("no `node` on PATH: install Node.js 20 or later (ci/setup.sh does)"),
    }
    let js_reference = paths::js_reference_dir();
    for package in std::iter::once(&"puppeteer-core").chain(packages) {
        if !js_reference.join("node_modules").join(package).is_dir() {
            bail!(
                "{} has no node_modules/{package}: run `npm ci` there (ci/setup.sh does)",
                js_reference.display()
            );
        }
    }
    Ok(())
}

/// Run `conformance/browser/{script}` with `args`, for at most `limit`, and
/// read the last line it printed as `T`. A failing script's error carries its
/// output.
pub async fn run_script<T: DeserializeOwned>(
    script: &str,
    args: &[String],
    limit: Duration,
) -> Result<T> {
    let js_reference = paths::js_reference_dir();
    let script = paths::workspace_root()
        .join("conformance/browser")
        .join(script);
    let child = tokio::process::Command::new("node")
        .arg(&script)
        .args(args)
        // The browser's packages come from js-reference, like the sidecar's,
        // whichever implementation CONFORMANCE_JS_DIR puts in the fleet.
        .env(paths::JS_DIR_VAR, &js_reference)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting node")?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("{} ran longer than {limit:?}", script.display()))?
        .context("waiting for node")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{} failed ({}):\nstderr:\n{stderr}\nstdout:\n{stdout}",
            script.display(),
            output.status
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("the browser script printed nothing; stderr:\n{stderr}"))?;
    serde_json::from_str(line).with_context(|| format!("reading the browser's result {line}"))
}
