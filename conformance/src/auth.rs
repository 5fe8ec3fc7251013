//! Auth for a fleet, the y-redis way: an ES384 key pair (the public JWK goes to
//! every server as `AUTH_PUBLIC_KEY`), tokens minted per user, and the permission
//! callback (`GET {callback}/{room}/{user}` → `{"yaccess": "rw" | "r", "yuserid"}`)
//! served over HTTP on 127.0.0.1. Tests can also make the callback answer
//! anything else per (room, user), hang, or go down, and sign tokens of any shape.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p384::ecdsa::signature::Signer as _;
use p384::ecdsa::{Signature, SigningKey};
use testkit::callback::{self, PermissionCallback};
pub use websocket::auth::Access;

use crate::paths;

/// How long minted tokens stay valid.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What the permission callback answers to `GET {callback}/{room}/{user}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `200 {"yaccess": "rw" | "r", "yuserid": user}`, the answer y-redis expects.
    Grant(Access),
    /// Any status with any body (sent as `application/json`): refusals (403, 500),
    /// bodies that are not JSON, `yaccess` values other than `rw` and `r`.
    Raw {
        /// The HTTP status.
        status: u16,
        /// The body, as sent.
        body: String,
    },
    /// No answer until the service stops: a callback that hangs, to see whether a
    /// server waits for it forever.
    Hang,
}

/// Where a fleet's key pair comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// `websocket::auth::generate_key_pair`, called in the harness.
    Library,
    /// The two JWK lines `websocket auth keygen` prints (private, then public).
    Cli,
}

/// The key pair, the permission table and the callback server of a fleet with
/// auth. Users without a grant get `404` from the callback, which every server
/// must treat as a refusal (HTTP 401 at upgrade).
pub struct AuthService {
    private_jwk: String,
    public_jwk: String,
    callback: PermissionCallback,
}

impl AuthService {
    /// Generate a key pair and start the callback server on a free port of
    /// 127.0.0.1 (in the current Tokio runtime).
    pub async fn start() -> Result<Self> {
        Self::start_with(Keys::Library).await
    }

    /// [`AuthService::start`] with a key pair from `keys`.
    pub async fn start_with(keys: Keys) -> Result<Self> {
        let (private_jwk, public_jwk) = match keys {
            Keys::Library => {
                websocket::auth::generate_key_pair().context("generating an ES384 key pair")?
            }
            Keys::Cli => keygen_from_cli()?,
        };
        let callback = PermissionCallback::start().await?;
        Ok(Self {
            private_jwk,
            public_jwk,
            callback,
        })
    }

    /// Take the callback down, as an operator's outage would: hanging requests are
    /// answered 503, open connections are closed, and the port refuses new ones.
    /// Returns once nothing listens any more.
    pub async fn stop_callback(&self) -> Result<()> {
        self.callback.stop().await
    }

    /// The public key as JWK JSON text (`AUTH_PUBLIC_KEY`).
    pub fn public_jwk(&self) -> &str {
        &self.public_jwk
    }

    /// The private key as JWK JSON text, for minting tokens of other shapes.
    pub fn private_jwk(&self) -> &str {
        &self.private_jwk
    }

    /// The permission callback base URL (`AUTH_PERM_CALLBACK`), no trailing `/`.
    pub fn perm_callback(&self) -> &str {
        self.callback.url()
    }

    /// Give `user` this access in every room (replacing an earlier grant).
    pub fn grant(&self, user: &str, access: Access) {
        self.reply_user(user, Reply::Grant(access));
    }

    /// Give `user` this access in `room` only (the room as it appears in the URL
    /// path), winning over [`AuthService::grant`].
    pub fn grant_room(&self, room: &str, user: &str, access: Access) {
        self.reply(room, user, Reply::Grant(access));
    }

    /// Answer requests for (`room`, `user`) with `reply` (both as the path
    /// segments the callback receives), winning over [`AuthService::grant`].
    pub fn reply(&self, room: &str, user: &str, reply: Reply) {
        self.callback.reply(room, user, reply.into());
    }

    /// Answer every request for `user`, in any room, with `reply` (replacing an
    /// earlier grant or reply for every room).
    pub fn reply_user(&self, user: &str, reply: Reply) {
        self.callback.reply_user(user, reply.into());
    }

    /// Withdraw every grant of `user`.
    pub fn revoke(&self, user: &str) {
        self.callback.forget_user(user);
    }

    /// A token for `user`, valid for an hour (`exp` in milliseconds, as y-redis
    /// checks it). The user still needs a grant to connect.
    pub fn token(&self, user: &str) -> Result<String> {
        websocket::auth::mint_token(&self.private_jwk, user, Some(TOKEN_TTL))
            .with_context(|| format!("minting a token for {user}"))
    }

    /// Grant `access` to `user` in every room and return a token for it.
    pub fn user(&self, user: &str, access: Access) -> Result<String> {
        self.grant(user, access);
        self.token(user)
    }

    /// A token for `user` minted by the `websocket auth token` command, valid for
    /// `ttl_secs`: what an operator using the Rust CLI hands out.
    pub fn token_from_cli(&self, user: &str, ttl_secs: u64) -> Result<String> {
        let output = Command::new(paths::websocket_binary()?)
            .args([
                "auth",
                "token",
                "--private-key",
                &self.private_jwk,
                "--user",
                user,
            ])
            .args(["--ttl", &ttl_secs.to_string()])
            .env_clear()
            .output()
            .context("running websocket auth token")?;
        if !output.status.success() {
            bail!(
                "websocket auth token failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_string())
    }

    /// A compact JWT with exactly this header and payload JSON text, ES384-signed
    /// with the fleet's key by the harness itself (independently of the server's
    /// minting), for tokens of shapes no minting tool produces.
    pub fn sign(&self, header_json: &str, payload_json: &str) -> Result<String> {
        self.sign_encoded(
            &URL_SAFE_NO_PAD.encode(header_json),
            &URL_SAFE_NO_PAD.encode(payload_json),
        )
    }

    /// `{header}.{payload}.{signature}` with the signature (ES384, the fleet's key)
    /// over exactly the two given texts: for tokens whose parts are not plain
    /// base64url (padding, other alphabets), which only the decoding can refuse.
    pub fn sign_encoded(&self, header: &str, payload: &str) -> Result<String> {
        let jwk: serde_json::Value = serde_json::from_str(&self.private_jwk)?;
        let d = jwk["d"].as_str().context("the private JWK has no d")?;
        let key = SigningKey::from_slice(&URL_SAFE_NO_PAD.decode(d)?)?;
        let input = format!("{header}.{payload}");
        let signature: Signature = key.sign(input.as_bytes());
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }

    /// A token with this payload JSON text, signed by Node's WebCrypto with the
    /// fleet's private JWK and the header `{"alg":"ES384","typ":"JWT"}`, as
    /// y-redis's JavaScript tools (lib0) sign them.
    pub fn sign_with_node(&self, payload_json: &str) -> Result<String> {
        let script = r#"
const { subtle } = require('node:crypto').webcrypto;
(async () => {
  const key = await subtle.importKey('jwk', JSON.parse(process.env.PRIVATE_JWK),
    { name: 'ECDSA', namedCurve: 'P-384' }, false, ['sign']);
  const enc = (text) => Buffer.from(text).toString('base64url');
  const input = enc(JSON.stringify({ alg: 'ES384', typ: 'JWT' })) + '.' + enc(process.env.PAYLOAD);
  const signature = await subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, key, Buffer.from(input));
  process.stdout.write(input + '.' + Buffer.from(signature).toString('base64url'));
})().catch((e) => { console.error(e); process.exit(1); });
"#;
        let output = Command::new("node")
            .arg("-e")
            .arg(script)
            .env("PRIVATE_JWK", &self.private_jwk)
            .env("PAYLOAD", payload_json)
            .output()
            .context("running node (v20 or later) to sign a token with WebCrypto")?;
        if !output.status.success() {
            bail!(
                "node could not sign a token: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_string())
    }

    /// The (room, user) path segments of every callback request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.callback.requests()
    }
}

impl From<Reply> for callback::Reply {
    fn from(reply: Reply) -> Self {
        match reply {
            Reply::Grant(Access::ReadWrite) => Self::grant("rw"),
            Reply::Grant(Access::ReadOnly) => Self::grant("r"),
            Reply::Raw { status, body } => Self::Raw { status, body },
            Reply::Hang => Self::Hang,
        }
    }
}

/// The private and the public JWK printed by `websocket auth keygen`.
fn keygen_from_cli() -> Result<(String, String)> {
    let output = Command::new(paths::websocket_binary()?)
        .args(["auth", "keygen"])
        .env_clear()
        .output()
        .context("running websocket auth keygen")?;
    if !output.status.success() {
        bail!(
            "websocket auth keygen failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout)?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let [private, public] = lines.as_slice() else {
        bail!("websocket auth keygen printed {} lines, not 2", lines.len());
    };
    Ok((private.to_string(), public.to_string()))
}
