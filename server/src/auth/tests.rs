use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use testkit::callback::Reply;
use testkit::PermissionCallback;

use super::jwt::{self, now_millis, sign_compact, signing_key_from_jwk};
use super::request::{encode_path_segment, room_segment};
use super::*;

const HEADER: &str = r#"{"alg":"ES384","typ":"JWT"}"#;

fn keys() -> (String, String) {
    generate_key_pair().unwrap()
}

fn authenticator(public: &str) -> Authenticator {
    Authenticator::new(
        public,
        "http://127.0.0.1:9/perm",
        Duration::from_millis(300),
    )
    .unwrap()
}

/// Signs an arbitrary payload with an arbitrary header.
fn sign(private: &str, header: &str, payload: &str) -> String {
    sign_compact(&signing_key_from_jwk(private).unwrap(), header, payload).unwrap()
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn mint_and_verify_roundtrip() {
    let (private, public) = keys();
    let auth = authenticator(&public);
    let token = mint_token(&private, "alice", Some(Duration::from_secs(60))).unwrap();
    assert_eq!(auth.verify_token(&token).unwrap(), "alice");
    let forever = mint_token(&private, "bob", None).unwrap();
    assert_eq!(auth.verify_token(&forever).unwrap(), "bob");

    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(!token.contains('='), "JOSE base64url has no padding");
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header, serde_json::json!({"alg": "ES384", "typ": "JWT"}));
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload["yuserid"], "alice");
    let exp = payload["exp"].as_u64().unwrap();
    let now = now_millis();
    assert!(exp > now + 55_000 && exp <= now + 60_000, "exp is in ms");
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 96);

    let forever_payload: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(forever.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(forever_payload.get("exp").is_none());
}

#[test]
fn generated_jwks_have_the_webcrypto_shape() {
    let (private, public) = keys();
    let private: serde_json::Value = serde_json::from_str(&private).unwrap();
    let public: serde_json::Value = serde_json::from_str(&public).unwrap();
    for jwk in [&private, &public] {
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-384");
        for c in ["x", "y"] {
            let bytes = URL_SAFE_NO_PAD.decode(jwk[c].as_str().unwrap()).unwrap();
            assert_eq!(bytes.len(), 48);
        }
        assert_eq!(jwk["x"], public["x"]);
        assert_eq!(jwk["y"], public["y"]);
    }
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(private["d"].as_str().unwrap())
            .unwrap()
            .len(),
        48
    );
    assert!(public.get("d").is_none());
    // WebCrypto's usages, which lib0's importKeyJwk (y-redis) needs.
    assert_eq!(private["key_ops"], serde_json::json!(["sign"]));
    assert_eq!(public["key_ops"], serde_json::json!(["verify"]));
    let (other_private, _) = keys();
    assert_ne!(other_private, private.to_string());
}

#[test]
fn token_signed_by_another_key_is_refused() {
    let (_, public) = keys();
    let (other_private, _) = keys();
    let token = mint_token(&other_private, "mallory", None).unwrap();
    assert!(matches!(
        authenticator(&public).verify_token(&token),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn tampered_token_is_refused() {
    let (private, public) = keys();
    let auth = authenticator(&public);
    let token = mint_token(&private, "alice", None).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(r#"{"yuserid":"admin"}"#),
        parts[2]
    );
    assert!(matches!(
        auth.verify_token(&forged),
        Err(AuthError::BadSignature)
    ));
    // A signature of the wrong length.
    let short = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]);
    assert!(matches!(
        auth.verify_token(&short),
        Err(AuthError::BadSignature)
    ));
    // A DER signature is not what JOSE carries.
    let der = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode([0x30; 102])
    );
    assert!(matches!(
        auth.verify_token(&der),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn malformed_tokens_are_refused() {
    let (private, public) = keys();
    let auth = authenticator(&public);
    let good = mint_token(&private, "alice", None).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let payload = b64(r#"{"yuserid":"alice"}"#);

    let cases = [
        ("empty", String::new()),
        ("one part", "abc".to_owned()),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("four parts", format!("{good}.x")),
        (
            "header not base64",
            format!("!!!.{}.{}", parts[1], parts[2]),
        ),
        (
            "header not JSON",
            format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
        ),
        (
            "header without alg",
            format!("{}.{}.{}", b64(r#"{"typ":"JWT"}"#), parts[1], parts[2]),
        ),
        (
            "alg none",
            format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#)),
        ),
        (
            "alg HS256",
            format!(
                "{}.{payload}.{}",
                b64(r#"{"alg":"HS256","typ":"JWT"}"#),
                b64("mac")
            ),
        ),
        (
            "alg ES256",
            format!("{}.{payload}.{}", b64(r#"{"alg":"ES256"}"#), parts[2]),
        ),
        (
            "signature not base64",
            format!("{}.{}.***", parts[0], parts[1]),
        ),
        ("payload not JSON", sign(&private, HEADER, "not json")),
        ("payload not an object", sign(&private, HEADER, "[1,2]")),
        (
            "exp not a number",
            sign(&private, HEADER, r#"{"yuserid":"a","exp":"soon"}"#),
        ),
        (
            "yuserid not a string",
            sign(&private, HEADER, r#"{"yuserid":7}"#),
        ),
    ];
    for (name, token) in cases {
        let result = auth.verify_token(&token);
        assert!(
            matches!(
                result,
                Err(AuthError::Malformed(_)) | Err(AuthError::BadSignature)
            ),
            "{name}: {result:?}"
        );
    }
    // Token parts may carry canonical `=` padding, as lib0 decodes it; the
    // signature covers the padded text.
    let signing = signing_key_from_jwk(&private).unwrap();
    let signed_over = |header: &str, payload: &str| {
        use p384::ecdsa::signature::Signer as _;
        let input = format!("{header}.{payload}");
        let signature: p384::ecdsa::Signature = signing.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    };
    for (name, token) in [
        (
            "payload padded",
            signed_over(
                &b64(HEADER),
                &format!("{}==", b64(r#"{"yuserid":"a","x":"abc"}"#)),
            ),
        ),
        (
            "header padded",
            signed_over(
                &format!("{}=", b64(r#"{"alg":"ES384","x":"a"}"#)),
                &b64(r#"{"yuserid":"a"}"#),
            ),
        ),
    ] {
        let result = auth.verify_token(&token);
        assert_eq!(result.ok().as_deref(), Some("a"), "{name}");
    }
    // Padding where none belongs is not base64url.
    let padded_signature = format!("{}.{}.{}==", parts[0], parts[1], parts[2]);
    assert!(auth.verify_token(&padded_signature).is_err());
    let overpadded = signed_over(
        &b64(HEADER),
        &format!("{}===", b64(r#"{"yuserid":"a","x":"ab"}"#)),
    );
    assert!(matches!(
        auth.verify_token(&overpadded),
        Err(AuthError::Malformed(_))
    ));
    // The same tokens unpadded are fine (the payload's trailing bits included).
    let unpadded = signed_over(&b64(HEADER), &b64(r#"{"yuserid":"a","x":"ab"}"#));
    assert_eq!(auth.verify_token(&unpadded).unwrap(), "a");

    // The signature is checked before the payload is decoded, as lib0 does.
    let bad_payload = format!("{}.@@@.{}", parts[0], parts[2]);
    assert!(matches!(
        auth.verify_token(&bad_payload),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn errors_never_contain_the_token() {
    let (private, public) = keys();
    let auth = authenticator(&public);
    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQ";
    let tokens = [
        format!("{secret}.{secret}"),
        format!("{secret}.{secret}.{secret}"),
        format!("{}.{secret}.{secret}", b64(HEADER)),
        sign(
            &private,
            HEADER,
            &format!(r#"{{"yuserid":1,"x":"{secret}"}}"#),
        ),
    ];
    for token in tokens {
        let err = auth.verify_token(&token).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains(secret), "{text}");
    }
}

#[test]
fn missing_user_id_is_refused() {
    let (private, public) = keys();
    let auth = authenticator(&public);
    for payload in [
        r#"{}"#.to_owned(),
        r#"{"yuserid":null}"#.to_owned(),
        r#"{"yuserid":""}"#.to_owned(),
        format!(r#"{{"exp":{}}}"#, now_millis() + 60_000),
    ] {
        let token = sign(&private, HEADER, &payload);
        assert!(
            matches!(auth.verify_token(&token), Err(AuthError::MissingUserId)),
            "{payload}"
        );
    }
    assert!(matches!(
        mint_token(&private, "", None),
        Err(AuthError::MissingUserId)
    ));
}

#[test]
fn exp_is_compared_in_milliseconds() {
    let (private, public) = keys();
    let auth = authenticator(&public);
    let now_ms = now_millis();
    let now_secs = now_ms / 1000;
    let token = |exp: String| {
        sign(
            &private,
            HEADER,
            &format!(r#"{{"yuserid":"u","exp":{exp}}}"#),
        )
    };

    // A minute in the past, in ms.
    assert!(matches!(
        auth.verify_token(&token((now_ms - 60_000).to_string())),
        Err(AuthError::Expired)
    ));
    // An hour ahead, in SECONDS: still far in the past when read as ms.
    assert!(matches!(
        auth.verify_token(&token((now_secs + 3600).to_string())),
        Err(AuthError::Expired)
    ));
    // An hour ahead in ms, also written as a float.
    assert_eq!(
        auth.verify_token(&token((now_ms + 3_600_000).to_string()))
            .unwrap(),
        "u"
    );
    assert_eq!(
        auth.verify_token(&token(format!("{}.5", now_ms + 3_600_000)))
            .unwrap(),
        "u"
    );
    // exp null counts as absent, as in lib0.
    assert_eq!(auth.verify_token(&token("null".into())).unwrap(), "u");
    // The boundary: expired only once the clock has passed exp.
    let key = jwt::PublicKey::from_jwk(&public).unwrap();
    let at = token("1000".into());
    let verified = jwt::verify(&key, &at, 1000).unwrap();
    assert_eq!(verified.user_id, "u");
    assert_eq!(
        verified.expires_at,
        Some(1000),
        "exp is carried, in milliseconds"
    );
    let fractional = token("1000.5".into());
    assert_eq!(
        jwt::verify(&key, &fractional, 1000).unwrap().expires_at,
        Some(1000),
        "valid through its whole millisecond"
    );
    assert!(jwt::verify(&key, &fractional, 1001).is_err());
    assert_eq!(
        jwt::verify(&key, &token("null".into()), 1000)
            .unwrap()
            .expires_at,
        None
    );
    assert!(matches!(
        jwt::verify(&key, &at, 1001),
        Err(AuthError::Expired)
    ));
    // A minted token with a ttl that has run out.
    let minted = mint_token(&private, "u", Some(Duration::ZERO)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(matches!(
        auth.verify_token(&minted),
        Err(AuthError::Expired)
    ));
}

#[test]
fn public_keys_with_webcrypto_extras_are_accepted() {
    let (private, public) = keys();
    let mut jwk: serde_json::Value = serde_json::from_str(&public).unwrap();
    jwk["alg"] = "ES384".into();
    jwk["key_ops"] = serde_json::json!(["verify"]);
    jwk["ext"] = true.into();
    let auth = authenticator(&jwk.to_string());
    let token = mint_token(&private, "alice", None).unwrap();
    assert_eq!(auth.verify_token(&token).unwrap(), "alice");
    // Keys without key_ops (as older versions of `auth keygen` wrote them), or
    // with other usages, are accepted too: the member is never read.
    let mut bare_public: serde_json::Value = serde_json::from_str(&public).unwrap();
    bare_public.as_object_mut().unwrap().remove("key_ops");
    let mut bare_private: serde_json::Value = serde_json::from_str(&private).unwrap();
    bare_private["key_ops"] = serde_json::json!(["sign", "verify"]);
    let bob = mint_token(&bare_private.to_string(), "bob", None).unwrap();
    assert_eq!(
        authenticator(&bare_public.to_string())
            .verify_token(&bob)
            .unwrap(),
        "bob"
    );
    // Surrounding whitespace, as an env file may leave.
    let padded = format!("\n {public} \n");
    assert_eq!(
        authenticator(&padded).verify_token(&token).unwrap(),
        "alice"
    );
}

#[test]
fn bad_configuration_is_reported() {
    let (private, public) = keys();
    let timeout = Duration::from_secs(1);
    let callback = "http://127.0.0.1:1/perm";
    let mut wrong_curve: serde_json::Value = serde_json::from_str(&public).unwrap();
    wrong_curve["crv"] = "P-256".into();
    let mut off_curve: serde_json::Value = serde_json::from_str(&public).unwrap();
    off_curve["y"] = URL_SAFE_NO_PAD.encode([7u8; 48]).into();
    let mut short: serde_json::Value = serde_json::from_str(&public).unwrap();
    short["x"] = URL_SAFE_NO_PAD.encode([7u8; 32]).into();
    for jwk in [
        "".to_owned(),
        "not json".to_owned(),
        r#"{"kty":"RSA","crv":"P-384"}"#.to_owned(),
        wrong_curve.to_string(),
        off_curve.to_string(),
        short.to_string(),
    ] {
        assert!(
            matches!(
                Authenticator::new(&jwk, callback, timeout),
                Err(AuthError::Config(_))
            ),
            "{jwk}"
        );
    }
    for url in ["", "not a url", "ftp://example.com/perm", "http://h/p?q=1"] {
        assert!(
            matches!(
                Authenticator::new(&public, url, timeout),
                Err(AuthError::Config(_))
            ),
            "{url}"
        );
    }
    // Minting needs the private part, and it must match x and y when present.
    assert!(matches!(
        mint_token(&public, "u", None),
        Err(AuthError::Config(_))
    ));
    let mut mismatched: serde_json::Value = serde_json::from_str(&private).unwrap();
    let other: serde_json::Value = serde_json::from_str(&keys().1).unwrap();
    mismatched["x"] = other["x"].clone();
    mismatched["y"] = other["y"].clone();
    assert!(matches!(
        mint_token(&mismatched.to_string(), "u", None),
        Err(AuthError::Config(_))
    ));
    // A private key without x and y is enough to mint.
    let mut d_only: serde_json::Value = serde_json::from_str(&private).unwrap();
    d_only.as_object_mut().unwrap().remove("x");
    d_only.as_object_mut().unwrap().remove("y");
    let token = mint_token(&d_only.to_string(), "u", None).unwrap();
    assert_eq!(authenticator(&public).verify_token(&token).unwrap(), "u");
}

fn run_node(script: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let mut command = Command::new("node");
    command.arg("-e").arg(script);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command
        .output()
        .expect("node (v20 or later) must be installed for the JavaScript cross-check");
    assert!(
        output.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// WebCrypto in Node verifies what this module mints, and signs with a key this module
/// generated.
#[test]
fn javascript_accepts_our_keys_and_tokens() {
    let script = r#"
const { subtle } = require('crypto').webcrypto;
const alg = { name: 'ECDSA', namedCurve: 'P-384' };
const sig = { name: 'ECDSA', hash: 'SHA-384' };
(async () => {
  const pub = await subtle.importKey('jwk', JSON.parse(process.env.PUBLIC_JWK), alg, true, ['verify']);
  const priv = await subtle.importKey('jwk', JSON.parse(process.env.PRIVATE_JWK), alg, true, ['sign']);
  const [h, p, s] = process.env.TOKEN.split('.');
  const ok = await subtle.verify(sig, pub, Buffer.from(s, 'base64url'), Buffer.from(h + '.' + p));
  const tamperedPayload = Buffer.from(JSON.stringify({ yuserid: 'admin' })).toString('base64url');
  const tampered = await subtle.verify(sig, pub, Buffer.from(s, 'base64url'), Buffer.from(h + '.' + tamperedPayload));
  const header = JSON.parse(Buffer.from(h, 'base64url').toString());
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
  const nh = Buffer.from(JSON.stringify({ alg: 'ES384', typ: 'JWT' })).toString('base64url');
  const np = Buffer.from(JSON.stringify({ yuserid: 'signed-in-node', exp: Date.now() + 60000 })).toString('base64url');
  const ns = Buffer.from(await subtle.sign(sig, priv, Buffer.from(nh + '.' + np))).toString('base64url');
  process.stdout.write(JSON.stringify({ ok, tampered, header, payload, now: Date.now(), token: nh + '.' + np + '.' + ns }));
})().catch((e) => { console.error(e); process.exit(1); });
"#;
    let (private, public) = keys();
    let token = mint_token(&private, "alice", Some(Duration::from_secs(60))).unwrap();
    let out = run_node(
        script,
        &[
            ("PUBLIC_JWK", &public),
            ("PRIVATE_JWK", &private),
            ("TOKEN", &token),
        ],
    );
    assert_eq!(out["ok"], true, "WebCrypto verifies our ES384 signature");
    assert_eq!(out["tampered"], false, "WebCrypto really checks");
    assert_eq!(out["header"]["alg"], "ES384");
    assert_eq!(out["payload"]["yuserid"], "alice");
    // lib0's rule: exp against Date.now(), in ms.
    let exp = out["payload"]["exp"].as_f64().unwrap();
    let js_now = out["now"].as_f64().unwrap();
    assert!(exp > js_now && exp < js_now + 61_000.0);
    let node_token = out["token"].as_str().unwrap();
    assert_eq!(
        authenticator(&public).verify_token(node_token).unwrap(),
        "signed-in-node"
    );
}

/// Keys and tokens made by WebCrypto in Node (as y-redis's tools make them) are
/// accepted here.
#[test]
fn we_accept_javascript_keys_and_tokens() {
    let script = r#"
const { subtle } = require('crypto').webcrypto;
const sig = { name: 'ECDSA', hash: 'SHA-384' };
(async () => {
  const pair = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify']);
  const pub = await subtle.exportKey('jwk', pair.publicKey);
  const priv = await subtle.exportKey('jwk', pair.privateKey);
  const enc = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const jwt = async (payload) => {
    const input = enc({ alg: 'ES384', typ: 'JWT' }) + '.' + enc(payload);
    const s = Buffer.from(await subtle.sign(sig, pair.privateKey, Buffer.from(input))).toString('base64url');
    return input + '.' + s;
  };
  process.stdout.write(JSON.stringify({
    pub: JSON.stringify(pub),
    priv: JSON.stringify(priv),
    token: await jwt({ yuserid: 'node-user', exp: Date.now() + 60000 }),
    expired: await jwt({ yuserid: 'node-user', exp: Date.now() - 60000 }),
    seconds: await jwt({ yuserid: 'node-user', exp: Math.floor(Date.now() / 1000) + 3600 }),
  }));
})().catch((e) => { console.error(e); process.exit(1); });
"#;
    let out = run_node(script, &[]);
    let public = out["pub"].as_str().unwrap();
    let private = out["priv"].as_str().unwrap();
    let exported: serde_json::Value = serde_json::from_str(public).unwrap();
    assert!(
        exported.get("key_ops").is_some() && exported.get("ext").is_some(),
        "WebCrypto's export carries extra members: {exported}"
    );
    let auth = authenticator(public);
    assert_eq!(
        auth.verify_token(out["token"].as_str().unwrap()).unwrap(),
        "node-user"
    );
    assert!(matches!(
        auth.verify_token(out["expired"].as_str().unwrap()),
        Err(AuthError::Expired)
    ));
    assert!(matches!(
        auth.verify_token(out["seconds"].as_str().unwrap()),
        Err(AuthError::Expired)
    ));
    // The private JWK WebCrypto exported mints tokens its public key accepts.
    let ours = mint_token(private, "minted-here", None).unwrap();
    assert_eq!(auth.verify_token(&ours).unwrap(), "minted-here");
}

fn protocol_headers(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(v).unwrap(),
        );
    }
    headers
}

#[test]
fn token_from_subprotocol() {
    let found = token_from_request(&protocol_headers(&["foo, yauth-abc"]), None).unwrap();
    assert_eq!(found.token, "abc");
    assert_eq!(found.subprotocol.as_deref(), Some("yauth-abc"));

    let found = token_from_request(&protocol_headers(&["yauth-a.b.c,other"]), None).unwrap();
    assert_eq!(found.token, "a.b.c");
    assert_eq!(found.subprotocol.as_deref(), Some("yauth-a.b.c"));

    // The header may repeat; the first yauth entry wins over the query.
    let found = token_from_request(
        &protocol_headers(&["foo", " bar ,  yauth-xyz  "]),
        Some("yauth=fromquery"),
    )
    .unwrap();
    assert_eq!(found.token, "xyz");
    assert_eq!(found.subprotocol.as_deref(), Some("yauth-xyz"));
}

#[test]
fn token_from_query() {
    let found = token_from_request(&HeaderMap::new(), Some("yauth=abc")).unwrap();
    assert_eq!(found.token, "abc");
    assert!(found.subprotocol.is_none());

    let found = token_from_request(
        &protocol_headers(&["foo"]),
        Some("room=1&yauth=a%2Eb%2ec&yauth=second"),
    )
    .unwrap();
    assert_eq!(found.token, "a.b.c");
    // A query token is answered with the first offered subprotocol, as y-redis
    // answers: the first entry of the first header line.
    assert_eq!(found.subprotocol.as_deref(), Some("foo"));
    let found = token_from_request(
        &protocol_headers(&[" first , second", "third"]),
        Some("yauth=abc"),
    )
    .unwrap();
    assert_eq!(found.subprotocol.as_deref(), Some("first"));
    let found = token_from_request(&protocol_headers(&[""]), Some("yauth=abc")).unwrap();
    assert!(found.subprotocol.is_none());
}

/// Only the first `yauth-` entry counts, even when it is empty: the JavaScript
/// server then refuses, so falling through to a later entry or to the query would
/// accept what it refuses.
#[test]
fn empty_subprotocol_token_is_no_token() {
    assert!(token_from_request(&protocol_headers(&["yauth-"]), Some("?yauth=q")).is_none());
    assert!(token_from_request(&protocol_headers(&["other, yauth-"]), Some("yauth=q")).is_none());
    assert!(token_from_request(&protocol_headers(&["yauth-, yauth-abc"]), None).is_none());
    assert!(token_from_request(&protocol_headers(&["yauth-", "yauth-abc"]), None).is_none());
}

#[test]
fn no_token_in_request() {
    assert!(token_from_request(&HeaderMap::new(), None).is_none());
    assert!(token_from_request(&protocol_headers(&["foo, bar"]), None).is_none());
    assert!(token_from_request(&HeaderMap::new(), Some("")).is_none());
    assert!(token_from_request(&HeaderMap::new(), Some("other=1&yauthx=2")).is_none());
    assert!(token_from_request(&HeaderMap::new(), Some("yauth=")).is_none());
    assert!(token_from_request(&HeaderMap::new(), Some("yauth")).is_none());
}

#[test]
fn request_token_debug_hides_the_token() {
    let found = token_from_request(&protocol_headers(&["yauth-topsecret"]), None).unwrap();
    let text = format!("{found:?}");
    assert!(!text.contains("topsecret"), "{text}");
}

#[test]
fn rooms_stay_one_path_segment() {
    assert_eq!(room_segment("my%20room").as_deref(), Some("my%20room"));
    assert_eq!(room_segment("a/b?c#d").as_deref(), Some("a%2Fb%3Fc%23d"));
    for bad in ["", ".", "..", "%2e", ".%2E", "%2e%2e"] {
        assert!(room_segment(bad).is_none(), "{bad}");
    }
}

#[test]
fn user_ids_stay_one_path_segment() {
    assert_eq!(encode_path_segment("alice"), "alice");
    assert_eq!(encode_path_segment("a.b-c_d~e@f:g+h"), "a.b-c_d~e@f:g+h");
    assert_eq!(encode_path_segment("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
    assert_eq!(encode_path_segment("é"), "%C3%A9");
}

/// A permission callback that answers by room, whoever asks.
async fn start_callback() -> PermissionCallback {
    let callback = PermissionCallback::start().await.unwrap();
    let raw = |status: u16, body: &str| Reply::Raw {
        status,
        body: body.to_string(),
    };
    callback.reply_room("rw-room", Reply::grant("rw"));
    callback.reply_room("my%20room", Reply::grant("rw"));
    callback.reply_room("r-room", Reply::grant("r"));
    callback.reply_room("x-room", Reply::grant("x"));
    callback.reply_room("forbidden", raw(403, r#"{"yaccess":"rw"}"#));
    callback.reply_room("badjson", raw(200, "this is not json"));
    callback.reply_room("noaccess", raw(200, r#"{"yuserid":"alice"}"#));
    callback.reply_room("slow", Reply::Hang);
    callback
}

#[tokio::test]
async fn authorize_against_a_permission_callback() {
    let callback = start_callback().await;
    let base = callback.url().to_string();
    let (private, public) = keys();
    let timeout = Duration::from_millis(300);
    let token = mint_token(&private, "alice", Some(Duration::from_secs(60))).unwrap();

    for base in [base.clone(), format!("{base}/")] {
        let auth = Authenticator::new(&public, &base, timeout).unwrap();
        callback.clear_requests();

        let grant = auth.authorize("rw-room", &token).await.unwrap();
        assert_eq!(grant.user_id, "alice");
        assert_eq!(grant.access, Access::ReadWrite);

        let grant = auth.authorize("r-room", &token).await.unwrap();
        assert_eq!(grant.access, Access::ReadOnly);

        // The room goes out as given: the raw path segment.
        let grant = auth.authorize("my%20room", &token).await.unwrap();
        assert_eq!(grant.access, Access::ReadWrite);

        assert_eq!(
            callback.paths(),
            [
                "/perm/rw-room/alice",
                "/perm/r-room/alice",
                "/perm/my%20room/alice"
            ],
            "callback base {base}"
        );
    }

    let auth = Authenticator::new(&public, &base, timeout).unwrap();
    let result = auth.authorize("forbidden", &token).await;
    assert!(
        matches!(&result, Err(AuthError::CallbackRefused(m)) if m.contains("403")),
        "{result:?}"
    );
    let result = auth.authorize("badjson", &token).await;
    assert!(
        matches!(result, Err(AuthError::CallbackFailed(_))),
        "{result:?}"
    );
    let result = auth.authorize("x-room", &token).await;
    assert!(
        matches!(result, Err(AuthError::CallbackRefused(_))),
        "{result:?}"
    );
    let result = auth.authorize("noaccess", &token).await;
    assert!(
        matches!(result, Err(AuthError::CallbackRefused(_))),
        "{result:?}"
    );

    let started = Instant::now();
    let result = auth.authorize("slow", &token).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(AuthError::CallbackFailed(_))),
        "{result:?}"
    );
    // The callback never answers: the refusal is the timeout's, and a timeout
    // never fires early.
    assert!(
        elapsed >= Duration::from_millis(250),
        "timed out after {elapsed:?}"
    );

    // A bad or expired token never reaches the callback.
    callback.clear_requests();
    let (other_private, _) = keys();
    let forged = mint_token(&other_private, "alice", None).unwrap();
    assert!(matches!(
        auth.authorize("rw-room", &forged).await,
        Err(AuthError::BadSignature)
    ));
    let expired = sign(
        &private,
        HEADER,
        &format!(r#"{{"yuserid":"alice","exp":{}}}"#, now_millis() - 60_000),
    );
    assert!(matches!(
        auth.authorize("rw-room", &expired).await,
        Err(AuthError::Expired)
    ));
    assert!(matches!(
        auth.authorize("rw-room", "garbage").await,
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        auth.authorize("..", &token).await,
        Err(AuthError::CallbackRefused(_))
    ));
    assert!(callback.paths().is_empty());
}

#[tokio::test]
async fn authorize_with_nothing_listening() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (private, public) = keys();
    let auth = Authenticator::new(
        &public,
        &format!("http://{addr}"),
        Duration::from_millis(300),
    )
    .unwrap();
    let token = mint_token(&private, "alice", None).unwrap();
    let result = auth.authorize("rw-room", &token).await;
    assert!(
        matches!(&result, Err(AuthError::CallbackFailed(m)) if !m.contains(&token)),
        "{result:?}"
    );
}

#[test]
fn authenticator_is_cheap_to_clone_and_debug_is_safe() {
    let (_, public) = keys();
    let auth = authenticator(&public);
    let clone = auth.clone();
    assert!(Arc::ptr_eq(&auth.inner, &clone.inner));
    let text = format!("{auth:?}");
    assert!(text.contains("127.0.0.1:9/perm/"), "{text}");
}
