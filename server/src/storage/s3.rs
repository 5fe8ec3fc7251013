//! S3-compatible object storage (AWS S3, MinIO, ...) in y-redis's layout: bucket
//! `ydocs` by default, object `{enc(room)}/{enc(docid)}/{uuid v4}` holding a v2
//! update. Path-style addressing (`{endpoint}/{bucket}/{key}`), requests signed with
//! AWS Signature Version 4.

use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine as _;
use md5::{Digest as _, Md5};
use reqwest::{Method, StatusCode, Url};
use ring::digest::{digest, SHA256};
use ring::hmac;

use super::http::{self, Reply, ATTEMPTS};
use super::objects::{ObjectStore, Page};
use super::{encode_strict, StorageError};

/// S3's limit of keys per multi-object delete.
const MAX_DELETE_KEYS: usize = 1000;

/// Where and how to reach the S3 server; mirrors y-redis's `S3_*` settings.
#[derive(Clone, Default)]
pub struct S3Options {
    /// Host name (y-redis's `S3_ENDPOINT`, e.g. `minio` or `s3.amazonaws.com`), or a
    /// full URL such as `http://127.0.0.1:9000`, whose scheme and port then win.
    pub endpoint: String,
    /// TCP port; default 443 with TLS, 80 without.
    pub port: Option<u16>,
    /// Use HTTPS (`S3_SSL=true`).
    pub ssl: bool,
    /// Access key id; requests are sent unsigned when it is missing.
    pub access_key: Option<String>,
    /// Secret access key: the signing key of every request (with `access_key`).
    pub secret_key: Option<String>,
    /// Session token of temporary credentials (AWS STS, IAM roles), sent as the
    /// signed header `x-amz-security-token`; only used with an access key.
    pub session_token: Option<String>,
    /// Bucket, created at start when missing.
    pub bucket: String,
    /// Region used in signatures (and for creating the bucket outside us-east-1).
    pub region: String,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("port", &self.port)
            .field("ssl", &self.ssl)
            .field("access_key", &self.access_key)
            .field("secret_key", &crate::log_text::redacted(&self.secret_key))
            .field(
                "session_token",
                &crate::log_text::redacted(&self.session_token),
            )
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .finish()
    }
}

/// Documents as objects in an S3 bucket, in the layout JavaScript y-redis servers
/// read and write.
pub struct S3Storage {
    http: reqwest::Client,
    base: Url,
    host: String,
    bucket: String,
    region: String,
    credentials: Option<Credentials>,
}

/// What signs requests.
struct Credentials {
    access_key: String,
    secret_key: String,
    /// Sent and signed as `x-amz-security-token` when the keys are temporary.
    session_token: Option<String>,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("base", &self.base.as_str())
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    /// Check that the server answers and the bucket exists, creating it when it is
    /// missing (as y-redis does at start). Unreachable servers and refused
    /// credentials fail here, within seconds.
    pub async fn open(options: S3Options) -> Result<Self, StorageError> {
        let storage = Self::new(options)?;
        storage.ensure_bucket().await?;
        Ok(storage)
    }

    /// Build the client without contacting the server.
    fn new(options: S3Options) -> Result<Self, StorageError> {
        if options.endpoint.trim().is_empty() {
            return Err(StorageError::Config("S3 endpoint is not set".into()));
        }
        if options.bucket.is_empty() {
            return Err(StorageError::Config("S3 bucket is not set".into()));
        }
        let base = base_url(&options)?;
        let host_name = base
            .host_str()
            .ok_or_else(|| StorageError::Config(format!("S3 endpoint {base} has no host")))?;
        let host = match base.port() {
            Some(port) => format!("{host_name}:{port}"),
            None => host_name.to_string(),
        };
        let credentials = match (options.access_key, options.secret_key) {
            (Some(access_key), Some(secret_key)) if !access_key.is_empty() => Some(Credentials {
                access_key,
                secret_key,
                session_token: options.session_token.filter(|token| !token.is_empty()),
            }),
            (Some(access), None) if !access.is_empty() => {
                return Err(StorageError::Config(
                    "S3 access key is set but the secret key is not".into(),
                ))
            }
            _ => None,
        };
        Ok(Self {
            http: http::client()?,
            base,
            host,
            bucket: options.bucket,
            region: if options.region.is_empty() {
                "us-east-1".into()
            } else {
                options.region
            },
            credentials,
        })
    }

    async fn ensure_bucket(&self) -> Result<(), StorageError> {
        // One attempt only: at start an unreachable server must fail fast.
        let head = self
            .request(S3Request {
                attempts: 1,
                ..S3Request::new("checking the bucket", Method::HEAD)
            })
            .await?;
        match head.status {
            s if s.is_success() => return Ok(()),
            StatusCode::NOT_FOUND => {}
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                return Err(StorageError::Config(format!(
                    "S3 refused access to bucket {} ({}): check S3_ACCESS_KEY and S3_SECRET_KEY",
                    self.bucket, head.status
                )))
            }
            _ => return Err(self.failure("checking the bucket", &head)),
        }
        let body = if self.region == "us-east-1" {
            Vec::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml_escape(&self.region)
            )
            .into_bytes()
        };
        let created = self
            .request(S3Request {
                body: &body,
                ..S3Request::new("creating the bucket", Method::PUT)
            })
            .await?;
        if created.status.is_success() || error_code(&created.body) == "BucketAlreadyOwnedByYou" {
            tracing::info!(bucket = %self.bucket, "created S3 bucket");
            Ok(())
        } else {
            Err(StorageError::Config(format!(
                "cannot create S3 bucket {}: {}",
                self.bucket,
                Self::describe(&created)
            )))
        }
    }

    async fn delete_keys(&self, keys: &[String]) -> Result<(), StorageError> {
        for chunk in keys.chunks(MAX_DELETE_KEYS) {
            let mut body = String::from("<Delete><Quiet>true</Quiet>");
            for key in chunk {
                body.push_str("<Object><Key>");
                body.push_str(&xml_escape(key));
                body.push_str("</Key></Object>");
            }
            body.push_str("</Delete>");
            let md5 =
                base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
            let reply = self
                .request(S3Request {
                    query: vec![("delete", String::new())],
                    body: body.as_bytes(),
                    headers: vec![
                        ("content-md5", md5),
                        ("content-type", "application/xml".into()),
                    ],
                    ..S3Request::new("deleting objects", Method::POST)
                })
                .await?;
            if !reply.status.is_success() {
                return Err(self.failure("deleting objects", &reply));
            }
            let mut codes = Vec::new();
            for (path, text) in xml_leaves(&reply.body)? {
                if path == "DeleteResult/Error/Code" && text != "NoSuchKey" {
                    codes.push(text);
                }
            }
            if !codes.is_empty() {
                return Err(StorageError::Backend(format!(
                    "S3 did not delete {} objects: {}",
                    codes.len(),
                    codes.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Send one request, signed when credentials are set.
    async fn request(&self, request: S3Request<'_>) -> Result<Reply, StorageError> {
        let S3Request {
            what,
            attempts,
            method,
            key,
            query,
            body,
            headers,
        } = request;
        let mut path = format!("/{}", encode_strict(&self.bucket, false));
        if let Some(key) = key {
            path.push('/');
            path.push_str(&encode_strict(key, true));
        }
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (encode_strict(k, false), encode_strict(v, false)))
            .collect();
        pairs.sort();
        let canonical_query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let mut url = self.base.clone();
        url.set_path(&path);
        url.set_query((!canonical_query.is_empty()).then_some(canonical_query.as_str()));
        let payload_hash = hex::encode(digest(&SHA256, body));
        let body = bytes::Bytes::copy_from_slice(body);
        let describe = format!("S3 {what} ({} {path})", method.as_str());
        http::send(&describe, attempts, || {
            let mut builder = self
                .http
                .request(method.clone(), url.clone())
                .body(body.clone());
            for (name, value) in &headers {
                builder = builder.header(*name, value);
            }
            if let Some(credentials) = &self.credentials {
                let amz_date = amz_date(SystemTime::now());
                let mut signed: Vec<(&str, &str)> = vec![
                    ("host", self.host.as_str()),
                    ("x-amz-content-sha256", payload_hash.as_str()),
                    ("x-amz-date", amz_date.as_str()),
                ];
                signed.extend(headers.iter().map(|(n, v)| (*n, v.as_str())));
                if let Some(token) = &credentials.session_token {
                    signed.push(("x-amz-security-token", token.as_str()));
                    builder = builder.header("x-amz-security-token", token.as_str());
                }
                let authorization = authorization(&SigningInput {
                    method: method.as_str(),
                    canonical_uri: &path,
                    canonical_query: &canonical_query,
                    headers: &signed,
                    payload_hash: &payload_hash,
                    amz_date: &amz_date,
                    region: &self.region,
                    access_key: &credentials.access_key,
                    secret_key: &credentials.secret_key,
                });
                builder = builder
                    .header("x-amz-content-sha256", payload_hash.as_str())
                    .header("x-amz-date", amz_date)
                    .header("authorization", authorization);
            }
            std::future::ready(Ok(builder))
        })
        .await
    }
}

/// `scheme://host:port` from the options.
fn base_url(options: &S3Options) -> Result<Url, StorageError> {
    let endpoint = options.endpoint.trim().trim_end_matches('/');
    let text = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        let scheme = if options.ssl { "https" } else { "http" };
        format!("{scheme}://{endpoint}")
    };
    let mut url = Url::parse(&text)
        .map_err(|e| StorageError::Config(format!("invalid S3 endpoint {endpoint:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(StorageError::Config(format!(
            "S3 endpoint {endpoint:?} must use http or https"
        )));
    }
    if url.port().is_none() {
        if let Some(port) = options.port {
            url.set_port(Some(port))
                .map_err(|()| StorageError::Config(format!("invalid S3 endpoint {endpoint:?}")))?;
        }
    }
    url.set_path("/");
    Ok(url)
}

fn error_code(body: &[u8]) -> String {
    xml_leaves(body)
        .ok()
        .and_then(|leaves| {
            leaves
                .into_iter()
                .find(|(path, _)| path == "Error/Code")
                .map(|(_, text)| text)
        })
        .unwrap_or_default()
}

/// Every text node of an XML document with its element path (`A/B/C`, local names),
/// entities resolved. S3 answers are small and flat enough for this.
fn xml_leaves(body: &[u8]) -> Result<Vec<(String, String)>, StorageError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut leaves = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| StorageError::Backend(format!("S3 sent malformed XML: {e}")))?;
        match event {
            Event::Start(start) => {
                path.push(String::from_utf8_lossy(start.local_name().as_ref()).into_owned())
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(text) => {
                let text = text
                    .unescape()
                    .map_err(|e| StorageError::Backend(format!("S3 sent malformed XML: {e}")))?;
                if !path.is_empty() {
                    leaves.push((path.join("/"), text.into_owned()));
                }
            }
            Event::CData(data) => {
                leaves.push((path.join("/"), String::from_utf8_lossy(&data).into_owned()));
            }
            Event::Eof => return Ok(leaves),
            _ => {}
        }
        buf.clear();
    }
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// What a Signature Version 4 covers.
struct SigningInput<'a> {
    method: &'a str,
    /// The path exactly as sent (already percent-encoded).
    canonical_uri: &'a str,
    /// The query exactly as sent: encoded pairs sorted by name.
    canonical_query: &'a str,
    /// Signed headers, lowercase names (including `host`).
    headers: &'a [(&'a str, &'a str)],
    payload_hash: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    amz_date: &'a str,
    region: &'a str,
    access_key: &'a str,
    secret_key: &'a str,
}

/// HMAC-SHA256 of `data` under `key`, one step of the signing-key derivation.
fn hmac_sha256(key: &[u8], data: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
}

/// The `Authorization` header value of AWS Signature Version 4 for service `s3`.
fn authorization(input: &SigningInput<'_>) -> String {
    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(name, value)| {
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            (name.to_ascii_lowercase(), value)
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let signed_headers = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method,
        input.canonical_uri,
        input.canonical_query,
        canonical_headers,
        signed_headers,
        input.payload_hash
    );
    let date = &input.amz_date[..8.min(input.amz_date.len())];
    let scope = format!("{date}/{}/s3/aws4_request", input.region);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        input.amz_date,
        hex::encode(digest(&SHA256, canonical_request.as_bytes()))
    );
    let k_date = hmac_sha256(
        format!("AWS4{}", input.secret_key).as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac_sha256(k_date.as_ref(), input.region.as_bytes());
    let k_service = hmac_sha256(k_region.as_ref(), b"s3");
    let k_signing = hmac_sha256(k_service.as_ref(), b"aws4_request");
    let signature = hex::encode(hmac_sha256(k_signing.as_ref(), string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        input.access_key
    )
}

/// `YYYYMMDDTHHMMSSZ` (UTC) for `x-amz-date`.
fn amz_date(time: SystemTime) -> String {
    let t = time::OffsetDateTime::from(time);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// One request to the bucket or to one of its objects.
struct S3Request<'a> {
    /// What it does, for errors ("listing objects").
    what: &'a str,
    /// Tries in all (see [`http::send`]).
    attempts: usize,
    method: Method,
    /// The object; `None` addresses the bucket.
    key: Option<&'a str>,
    /// Query parameters, not encoded yet.
    query: Vec<(&'a str, String)>,
    body: &'a [u8],
    /// Extra headers, all signed.
    headers: Vec<(&'a str, String)>,
}

impl<'a> S3Request<'a> {
    /// A request without key, query, body or extra headers, tried [`ATTEMPTS`] times.
    fn new(what: &'a str, method: Method) -> Self {
        Self {
            what,
            attempts: ATTEMPTS,
            method,
            key: None,
            query: Vec::new(),
            body: &[],
            headers: Vec::new(),
        }
    }
}

#[async_trait]
impl ObjectStore for S3Storage {
    const KIND: &'static str = "S3";
    const NAME: &'static str = "s3";

    fn bucket(&self) -> &str {
        &self.bucket
    }

    /// ListObjectsV2.
    async fn list_page(&self, prefix: &str, page: Option<&str>) -> Result<Page, StorageError> {
        let mut query = vec![
            ("list-type", "2".to_string()),
            ("prefix", prefix.to_string()),
        ];
        if let Some(token) = page {
            query.push(("continuation-token", token.to_string()));
        }
        let reply = self
            .request(S3Request {
                query,
                ..S3Request::new("listing objects", Method::GET)
            })
            .await?;
        if reply.status != StatusCode::OK {
            return Err(self.failure("listing objects", &reply));
        }
        let mut names = Vec::new();
        let mut truncated = false;
        let mut next = None;
        for (path, text) in xml_leaves(&reply.body)? {
            match path.as_str() {
                "ListBucketResult/Contents/Key" => names.push(text),
                "ListBucketResult/IsTruncated" => truncated = text == "true",
                "ListBucketResult/NextContinuationToken" => next = Some(text),
                _ => {}
            }
        }
        Ok(Page {
            names,
            next: next.filter(|_| truncated),
        })
    }

    async fn get_object(&self, name: &str) -> Result<Reply, StorageError> {
        self.request(S3Request {
            key: Some(name),
            ..S3Request::new("downloading an object", Method::GET)
        })
        .await
    }

    async fn put_object(&self, name: &str, body: &[u8]) -> Result<(), StorageError> {
        let reply = self
            .request(S3Request {
                key: Some(name),
                body,
                ..S3Request::new("uploading an object", Method::PUT)
            })
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(self.failure("uploading an object", &reply))
        }
    }

    async fn delete_objects(&self, names: &[String]) -> Result<(), StorageError> {
        self.delete_keys(names).await
    }

    /// The `Code` and `Message` of S3's XML error body.
    fn describe(reply: &Reply) -> String {
        let code = error_code(&reply.body);
        let message = xml_leaves(&reply.body)
            .ok()
            .and_then(|leaves| {
                leaves
                    .into_iter()
                    .find(|(path, _)| path == "Error/Message")
                    .map(|(_, text)| text)
            })
            .unwrap_or_else(|| http::excerpt(&reply.body));
        if code.is_empty() {
            format!("HTTP {}: {message}", reply.status)
        } else {
            format!("HTTP {} {code}: {message}", reply.status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// The "GET Object" example of the Signature Version 4 documentation.
    #[test]
    fn signs_the_documented_get_object_example() {
        let auth = authorization(&SigningInput {
            method: "GET",
            canonical_uri: "/test.txt",
            canonical_query: "",
            headers: &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_HASH),
                ("x-amz-date", "20130524T000000Z"),
            ],
            payload_hash: EMPTY_HASH,
            amz_date: "20130524T000000Z",
            region: "us-east-1",
            access_key: ACCESS,
            secret_key: SECRET,
        });
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// The "GET Bucket (List Objects)" example of the same documentation.
    #[test]
    fn signs_the_documented_list_objects_example() {
        let auth = authorization(&SigningInput {
            method: "GET",
            canonical_uri: "/",
            canonical_query: "max-keys=2&prefix=J",
            headers: &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("x-amz-content-sha256", EMPTY_HASH),
                ("x-amz-date", "20130524T000000Z"),
            ],
            payload_hash: EMPTY_HASH,
            amz_date: "20130524T000000Z",
            region: "us-east-1",
            access_key: ACCESS,
            secret_key: SECRET,
        });
        assert!(auth.ends_with(
            "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        ));
    }

    #[test]
    fn formats_amz_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_369_353_600);
        assert_eq!(amz_date(t), "20130524T000000Z");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_825_599);
        assert_eq!(amz_date(t), "20000229T115959Z");
    }

    #[test]
    fn endpoints_accept_host_names_and_urls() {
        let mut options = S3Options {
            endpoint: "minio".into(),
            port: Some(9000),
            ..S3Options::default()
        };
        assert_eq!(
            base_url(&options).ok().map(String::from),
            Some("http://minio:9000/".into())
        );
        options.ssl = true;
        options.port = None;
        assert_eq!(
            base_url(&options).ok().map(String::from),
            Some("https://minio/".into())
        );
        options.endpoint = "http://127.0.0.1:4567".into();
        assert_eq!(
            base_url(&options).ok().map(String::from),
            Some("http://127.0.0.1:4567/".into())
        );
    }

    #[test]
    fn parses_listings_with_entities() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>ydocs</Name>
<Contents><Key>a&apos;b/index/1</Key></Contents><Contents><Key>x(y)/index/2</Key></Contents>
<IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken></ListBucketResult>"#;
        let leaves = xml_leaves(xml).unwrap_or_default();
        let keys: Vec<&str> = leaves
            .iter()
            .filter(|(p, _)| p == "ListBucketResult/Contents/Key")
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(keys, ["a'b/index/1", "x(y)/index/2"]);
    }
}
