//! Who may call a route: the shared secret (`X-API-Secret`, or as a `Bearer`
//! token) may call every route; a y-redis token (`Authorization: Bearer`,
//! where `AUTH_PUBLIC_KEY` is set) may read a room its permission callback
//! grants `r` and write one it grants `rw`; admin routes need the secret.
//! With neither configured the API is open (the start-up warning says so).

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;

use super::{ApiError, ApiState};
use crate::auth::Access;

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing (unknown routes' 404).
    Nothing,
    /// Read access to the room.
    Read,
    /// Write access to the room.
    Write,
    /// The API secret.
    Admin,
}

/// The header carrying the shared secret.
pub const SECRET_HEADER: &str = "x-api-secret";

/// Check that the caller of a request with `headers` may do what `needs`
/// says in `room`.
pub async fn authorize(
    state: &ApiState,
    headers: &HeaderMap,
    room: &str,
    needs: Needs,
) -> Result<(), ApiError> {
    if needs == Needs::Nothing {
        return Ok(());
    }
    let header = |name| headers.get(name).and_then(|value| value.to_str().ok());
    let bearer = header(AUTHORIZATION.as_str()).and_then(|value| {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let offered = header(SECRET_HEADER);
    if let Some(secret) = &state.secret {
        if offered.or(bearer).is_some_and(|given| same(given, secret)) {
            return Ok(());
        }
        if offered.is_some() {
            return Err(ApiError::Unauthorized);
        }
    }
    let Some(auth) = &state.auth else {
        return match state.secret {
            Some(_) => Err(ApiError::Unauthorized),
            None => Ok(()),
        };
    };
    if needs == Needs::Admin {
        return match state.secret {
            Some(_) => Err(ApiError::Unauthorized),
            None => Err(ApiError::Forbidden(
                "this route needs the API secret, and none is configured".into(),
            )),
        };
    }
    let Some(token) = bearer else {
        return Err(ApiError::Unauthorized);
    };
    let grant = auth
        .authorize(room, token)
        .await
        .map_err(|_| ApiError::Unauthorized)?;
    match (needs, grant.access) {
        (Needs::Write, Access::ReadOnly) => Err(ApiError::Forbidden(
            "the token grants read-only access to this room".into(),
        )),
        _ => Ok(()),
    }
}

/// Compare a given secret with the configured one in time independent of
/// where they differ.
pub fn same(given: &str, secret: &str) -> bool {
    let (given, secret) = (given.as_bytes(), secret.as_bytes());
    let mut differ = given.len() ^ secret.len();
    for (i, byte) in secret.iter().enumerate() {
        differ |= usize::from(byte ^ given.get(i).copied().unwrap_or(!*byte));
    }
    differ == 0
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn secrets_compare_whole() {
        assert!(same("s3cret", "s3cret"));
        assert!(!same("s3cre", "s3cret"));
        assert!(!same("s3cretx", "s3cret"));
        assert!(!same("", "s3cret"));
        assert!(!same("S3cret", "s3cret"));
    }
}
