//! Google Cloud Storage over its JSON API, in the same layout as the S3 backend:
//! objects `{enc(room)}/{enc(docid)}/{uuid v4}` in one bucket.
//!
//! With an emulator endpoint (`STORAGE_EMULATOR_HOST`, e.g. fake-gcs-server) no
//! credentials are used. Otherwise access tokens come from the standard Google
//! chain: the JSON key file named by `GOOGLE_APPLICATION_CREDENTIALS` (a service
//! account key or `gcloud auth application-default login` credentials), then
//! gcloud's application default credentials file, then the metadata server of the
//! Google Cloud machine the process runs on.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use futures_util::{stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::http::{self, error_chain, Reply, ATTEMPTS};
use super::objects::{ObjectStore, Page};
use super::{encode_strict, StorageError};

/// The production JSON API endpoint.
const GOOGLE_STORAGE: &str = "https://storage.googleapis.com";

/// The OAuth scope tokens are requested for.
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// How many objects are deleted at once.
const PARALLEL_REQUESTS: usize = 8;

/// Where the documents go.
#[derive(Debug, Clone, Default)]
pub struct GcsOptions {
    /// The bucket; it must exist (it is not created).
    pub bucket: String,
    /// An emulator such as fake-gcs-server (`http://127.0.0.1:4443`; a bare
    /// `host:port` means http). Requests then carry no credentials.
    pub emulator: Option<String>,
}

/// Documents as objects in a Google Cloud Storage bucket.
pub struct GcsStorage {
    http: reqwest::Client,
    base: String,
    bucket: String,
    auth: Option<TokenSource>,
}

impl std::fmt::Debug for GcsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStorage")
            .field("base", &self.base)
            .field("bucket", &self.bucket)
            .field("authenticated", &self.auth.is_some())
            .finish()
    }
}

#[derive(Deserialize)]
struct ObjectList {
    #[serde(default)]
    items: Vec<ObjectName>,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ObjectName {
    name: String,
}

impl GcsStorage {
    /// Find credentials (unless an emulator is used) and check that the bucket can be
    /// listed. A missing bucket is a [`StorageError::Config`]; an unreachable endpoint
    /// fails within seconds.
    pub async fn open(options: GcsOptions) -> Result<Self, StorageError> {
        if options.bucket.is_empty() {
            return Err(StorageError::Config("GCS bucket is not set".into()));
        }
        let http = http::client()?;
        let (base, auth) = match options.emulator.as_deref().map(str::trim) {
            Some(emulator) if !emulator.is_empty() => {
                let base = if emulator.contains("://") {
                    emulator.to_string()
                } else {
                    format!("http://{emulator}")
                };
                (base.trim_end_matches('/').to_string(), None)
            }
            _ => {
                let credentials = Credentials::discover(&|name| std::env::var(name).ok())?;
                (
                    GOOGLE_STORAGE.to_string(),
                    Some(TokenSource::new(credentials, http.clone())),
                )
            }
        };
        let storage = Self {
            http,
            base,
            bucket: options.bucket,
            auth,
        };
        storage.check_bucket().await?;
        Ok(storage)
    }

    async fn check_bucket(&self) -> Result<(), StorageError> {
        // Listing needs only object permissions, unlike reading bucket metadata.
        let url = format!(
            "{}/storage/v1/b/{}/o?maxResults=1&fields=nextPageToken",
            self.base,
            encode_strict(&self.bucket, false)
        );
        let reply = self
            .send("checking the bucket", 1, Method::GET, &url, None)
            .await?;
        match reply.status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(StorageError::Config(format!(
                "GCS bucket {} does not exist (create it first)",
                self.bucket
            ))),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(StorageError::Config(format!(
                "GCS refused access to bucket {}: {}",
                self.bucket,
                Self::describe(&reply)
            ))),
            _ => Err(self.failure("checking the bucket", &reply)),
        }
    }

    fn object_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            encode_strict(&self.bucket, false),
            encode_strict(name, false)
        )
    }

    async fn send(
        &self,
        what: &str,
        attempts: usize,
        method: Method,
        url: &str,
        body: Option<bytes::Bytes>,
    ) -> Result<Reply, StorageError> {
        let describe = format!("GCS {what}");
        http::send(&describe, attempts, || {
            let method = method.clone();
            let body = body.clone();
            async move {
                let mut builder = self.http.request(method, url);
                if let Some(body) = body {
                    builder = builder
                        .header("content-type", "application/octet-stream")
                        .body(body);
                }
                if let Some(auth) = &self.auth {
                    builder = builder.bearer_auth(auth.token().await?);
                }
                Ok(builder)
            }
        })
        .await
    }
}

#[async_trait]
impl ObjectStore for GcsStorage {
    const KIND: &'static str = "GCS";
    const NAME: &'static str = "gcs";

    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn list_page(&self, prefix: &str, page: Option<&str>) -> Result<Page, StorageError> {
        let mut url = format!(
            "{}/storage/v1/b/{}/o?prefix={}&fields=items(name),nextPageToken",
            self.base,
            encode_strict(&self.bucket, false),
            encode_strict(prefix, false)
        );
        if let Some(page) = page {
            url.push_str("&pageToken=");
            url.push_str(&encode_strict(page, false));
        }
        let reply = self
            .send("listing objects", ATTEMPTS, Method::GET, &url, None)
            .await?;
        if reply.status != StatusCode::OK {
            return Err(self.failure("listing objects", &reply));
        }
        let list: ObjectList = serde_json::from_slice(&reply.body).map_err(|e| {
            StorageError::Backend(format!("GCS sent an unexpected object list: {e}"))
        })?;
        Ok(Page {
            names: list.items.into_iter().map(|item| item.name).collect(),
            next: list.next_page_token.filter(|token| !token.is_empty()),
        })
    }

    async fn get_object(&self, name: &str) -> Result<Reply, StorageError> {
        let url = format!("{}?alt=media", self.object_url(name));
        self.send("downloading an object", ATTEMPTS, Method::GET, &url, None)
            .await
    }

    async fn put_object(&self, name: &str, body: &[u8]) -> Result<(), StorageError> {
        // ifGenerationMatch=0: never overwrite. A retry of an upload that did land
        // then answers 412, which means the object is there.
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=media&ifGenerationMatch=0&name={}",
            self.base,
            encode_strict(&self.bucket, false),
            encode_strict(name, false)
        );
        let body = bytes::Bytes::copy_from_slice(body);
        let reply = self
            .send(
                "uploading an object",
                ATTEMPTS,
                Method::POST,
                &url,
                Some(body),
            )
            .await?;
        if reply.status.is_success() || reply.status == StatusCode::PRECONDITION_FAILED {
            Ok(())
        } else {
            Err(self.failure("uploading an object", &reply))
        }
    }

    /// One DELETE per object (the JSON API has no multi-object delete), several
    /// at a time.
    async fn delete_objects(&self, names: &[String]) -> Result<(), StorageError> {
        let results: Vec<Result<(), StorageError>> = stream::iter(names.to_vec())
            .map(|name| async move {
                let url = self.object_url(&name);
                let reply = self
                    .send("deleting an object", ATTEMPTS, Method::DELETE, &url, None)
                    .await?;
                if reply.status.is_success() || reply.status == StatusCode::NOT_FOUND {
                    Ok(())
                } else {
                    Err(self.failure("deleting an object", &reply))
                }
            })
            .buffer_unordered(PARALLEL_REQUESTS)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// The `error.message` of the JSON error body.
    fn describe(reply: &Reply) -> String {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: ErrorDetail,
        }
        #[derive(Deserialize)]
        struct ErrorDetail {
            message: String,
        }
        match serde_json::from_slice::<ErrorBody>(&reply.body) {
            Ok(body) => format!("HTTP {}: {}", reply.status, body.error.message),
            Err(_) => format!("HTTP {}: {}", reply.status, http::excerpt(&reply.body)),
        }
    }
}

/// Where access tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Credentials {
    /// A service account key: a signed JWT is exchanged for a token.
    ServiceAccount {
        client_email: String,
        private_key: String,
        token_uri: String,
    },
    /// A user's refresh token (`gcloud auth application-default login`).
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
    },
    /// The metadata server of a Google Cloud machine.
    Metadata { host: String },
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

impl Credentials {
    /// The standard chain: `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application
    /// default credentials, the metadata server.
    fn discover(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, StorageError> {
        if let Some(path) = get("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()) {
            return Self::from_file(&PathBuf::from(path));
        }
        let gcloud_dir = get("CLOUDSDK_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| get("HOME").map(|home| PathBuf::from(home).join(".config/gcloud")));
        if let Some(dir) = gcloud_dir {
            let file = dir.join("application_default_credentials.json");
            if file.is_file() {
                return Self::from_file(&file);
            }
        }
        let host = get("GCE_METADATA_HOST")
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "metadata.google.internal".to_string());
        Ok(Credentials::Metadata { host })
    }

    fn from_file(path: &std::path::Path) -> Result<Self, StorageError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StorageError::Config(format!("cannot read credentials {}: {e}", path.display()))
        })?;
        Self::from_json(&text)
            .map_err(|e| StorageError::Config(format!("credentials {}: {e}", path.display())))
    }

    fn from_json(text: &str) -> Result<Self, String> {
        let key: KeyFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let token_uri = key
            .token_uri
            .filter(|uri| !uri.is_empty())
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
        match key.kind.as_str() {
            "service_account" => match (key.client_email, key.private_key) {
                (Some(client_email), Some(private_key)) => Ok(Credentials::ServiceAccount {
                    client_email,
                    private_key,
                    token_uri,
                }),
                _ => Err("service account key without client_email or private_key".into()),
            },
            "authorized_user" => match (key.client_id, key.client_secret, key.refresh_token) {
                (Some(client_id), Some(client_secret), Some(refresh_token)) => {
                    Ok(Credentials::AuthorizedUser {
                        client_id,
                        client_secret,
                        refresh_token,
                        token_uri,
                    })
                }
                _ => Err("authorized_user credentials are incomplete".into()),
            },
            other => Err(format!("unsupported credentials type {other:?}")),
        }
    }
}

/// Hands out access tokens, fetching a new one shortly before the cached one
/// expires.
struct TokenSource {
    credentials: Credentials,
    http: reqwest::Client,
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: Option<u64>,
}

impl TokenSource {
    fn new(credentials: Credentials, http: reqwest::Client) -> Self {
        Self {
            credentials,
            http,
            cached: Mutex::new(None),
        }
    }

    async fn token(&self) -> Result<String, StorageError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, valid_until)) = cached.as_ref() {
            if Instant::now() < *valid_until {
                return Ok(token.clone());
            }
        }
        let reply = self.fetch().await?;
        let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(300));
        // Renew a minute early (or halfway for short-lived tokens).
        let margin = Duration::from_secs(60).min(lifetime / 2);
        *cached = Some((
            reply.access_token.clone(),
            Instant::now() + lifetime - margin,
        ));
        Ok(reply.access_token)
    }

    async fn fetch(&self) -> Result<TokenReply, StorageError> {
        let request = match &self.credentials {
            Credentials::ServiceAccount {
                client_email,
                private_key,
                token_uri,
            } => {
                let assertion = service_account_jwt(client_email, private_key, token_uri)?;
                self.http.post(token_uri).form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ])
            }
            Credentials::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => self.http.post(token_uri).form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.as_str()),
                ("refresh_token", refresh_token.as_str()),
            ]),
            Credentials::Metadata { host } => {
                let base = if host.contains("://") {
                    host.clone()
                } else {
                    format!("http://{host}")
                };
                self.http
                    .get(format!(
                        "{base}/computeMetadata/v1/instance/service-accounts/default/token"
                    ))
                    .header("Metadata-Flavor", "Google")
                    .timeout(Duration::from_secs(10))
            }
        };
        let response = request.send().await.map_err(|e| {
            StorageError::Backend(format!(
                "fetching a Google access token: {}",
                error_chain(&e)
            ))
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            StorageError::Backend(format!(
                "fetching a Google access token: {}",
                error_chain(&e)
            ))
        })?;
        if !status.is_success() {
            return Err(StorageError::Backend(format!(
                "fetching a Google access token: HTTP {status}: {}",
                http::excerpt(&body)
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| StorageError::Backend(format!("unexpected Google token response: {e}")))
    }
}

/// A JWT signed RS256 with the service account's key, asking for [`SCOPE`].
fn service_account_jwt(
    client_email: &str,
    private_key_pem: &str,
    token_uri: &str,
) -> Result<String, StorageError> {
    let der = pem_to_der(private_key_pem)
        .ok_or_else(|| StorageError::Config("service account private_key is not PEM".into()))?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| {
        StorageError::Config(format!("service account private_key is unusable: {e}"))
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": client_email,
        "scope": SCOPE,
        "aud": token_uri,
        "iat": now,
        "exp": now + 3600,
    });
    let claims = b64.encode(claims.to_string());
    let message = format!("{header}.{claims}");
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        message.as_bytes(),
        &mut signature,
    )
    .map_err(|_| StorageError::Backend("signing the token request failed".into()))?;
    Ok(format!("{message}.{}", b64.encode(signature)))
}

/// The DER bytes of the first PEM block.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|line| !line.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn discovers_the_credential_chain() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.json");
        std::fs::write(
            &file,
            r#"{"type":"authorized_user","client_id":"i","client_secret":"s","refresh_token":"r"}"#,
        )
        .unwrap();
        let path = file.to_string_lossy().into_owned();
        let env: HashMap<&str, String> = [("GOOGLE_APPLICATION_CREDENTIALS", path)].into();
        let found = Credentials::discover(&|name| env.get(name).cloned()).unwrap();
        assert_eq!(
            found,
            Credentials::AuthorizedUser {
                client_id: "i".into(),
                client_secret: "s".into(),
                refresh_token: "r".into(),
                token_uri: DEFAULT_TOKEN_URI.into(),
            }
        );
        let env: HashMap<&str, String> = [("HOME", "/nonexistent".to_string())].into();
        let found = Credentials::discover(&|name| env.get(name).cloned()).unwrap();
        assert_eq!(
            found,
            Credentials::Metadata {
                host: "metadata.google.internal".into()
            }
        );
        assert!(Credentials::from_json(r#"{"type":"external_account"}"#).is_err());
    }

    /// A service account key is turned into a signed JWT, exchanged at the token
    /// URI, and the token is cached.
    #[tokio::test]
    async fn service_account_tokens_are_fetched_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("key.pem");
        let status = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key_path)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl must be installed for this test");
        assert!(status.success());
        let pem = std::fs::read_to_string(&key_path).unwrap();

        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: String| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let form: HashMap<String, String> = body
                        .split('&')
                        .filter_map(|pair| pair.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    assert_eq!(
                        form.get("grant_type").map(String::as_str),
                        Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer")
                    );
                    let jwt = form.get("assertion").cloned().unwrap_or_default();
                    let parts: Vec<&str> = jwt.split('.').collect();
                    assert_eq!(parts.len(), 3);
                    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(parts[1])
                        .unwrap();
                    let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
                    assert_eq!(claims["iss"], "sa@example.iam.gserviceaccount.com");
                    assert_eq!(claims["scope"], SCOPE);
                    r#"{"access_token":"token-1","expires_in":3600,"token_type":"Bearer"}"#
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let credentials = Credentials::from_json(
            &serde_json::json!({
                "type": "service_account",
                "client_email": "sa@example.iam.gserviceaccount.com",
                "private_key": pem,
                "token_uri": format!("http://{addr}/token"),
            })
            .to_string(),
        )
        .unwrap();
        let source = TokenSource::new(credentials, http::client().unwrap());
        assert_eq!(source.token().await.unwrap(), "token-1");
        assert_eq!(source.token().await.unwrap(), "token-1");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn metadata_server_tokens_need_the_flavor_header() {
        let app = axum::Router::new().route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                assert_eq!(
                    headers.get("metadata-flavor").and_then(|v| v.to_str().ok()),
                    Some("Google")
                );
                r#"{"access_token":"meta","expires_in":100}"#
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let source = TokenSource::new(
            Credentials::Metadata {
                host: addr.to_string(),
            },
            http::client().unwrap(),
        );
        assert_eq!(source.token().await.unwrap(), "meta");
    }
}
