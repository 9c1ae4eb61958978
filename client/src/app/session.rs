//! The demo's sign-in: server-side sessions named by a signed cookie (server only).
//!
//! EventSource cannot send headers but does send cookies, so the same cookie identifies the user
//! to server functions and to the SSE endpoint's `authorize`. The cookie holds a session id,
//! signed with the `cookie` crate (HMAC-SHA256) so a client cannot forge one; the session itself
//! (user, expiry) lives in the app's store, shared by instances on one Redis, so signing out or
//! expiring ends it everywhere at once, and open streams are closed at their next re-check.
//!
//! A page can also carry its session as a bearer token (`Authorization: Bearer ...`, from
//! [`Sessions::issue_token`]), as a single-page app against an API does: the token is a session
//! of its own, signed the same way, short-lived, and refreshed by asking for a new one. A request
//! that names a token is judged by it alone: an expired or forged token is nobody, whatever
//! cookie comes with it (a client that says who it is should not be taken for someone else).
//! A token hangs on the cookie's session that issued it: only that session issues tokens (a token
//! cannot issue another and so outlive its own expiry), none outlives it, and signing out ends
//! them all with it. A leaked token is good for its few minutes and no longer.
//!
//! A session's id is 64 random bits from the operating system, not the store's counter: a
//! counter starts again at 1 when the store loses its data (a Redis flush, a restart without
//! persistence, an embedded store's restart under the same `SESSION_SECRET`), and a still-valid
//! signed cookie naming id 1 would then open the next user's session. A random id names nothing
//! after a loss, and cannot be guessed (the signature already keeps it from being forged).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, COOKIE};
use serde::{Deserialize, Serialize};
use shared::crm::{find_user, User};

use super::table::{StoreError, Table};

/// The cookie's name.
pub const SESSION_COOKIE: &str = "crm_session";

/// The key that signs session cookies. Instances behind one load balancer need the same key
/// (`SESSION_SECRET`); without one each process makes its own.
#[derive(Clone)]
pub struct SessionKey(Key);

impl SessionKey {
    /// Derives the key from a secret of at least 32 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err(format!("must be at least 32 bytes, got {}", secret.len()));
        }
        Ok(Self(Key::derive_from(secret)))
    }

    /// A random key for this process only.
    pub fn random() -> Self {
        Self(Key::generate())
    }

    /// The value of a request's session cookie, if present and genuinely signed by this key.
    fn verified(&self, headers: &HeaderMap) -> Option<u64> {
        let mut jar = CookieJar::new();
        for value in headers.get_all(COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for cookie in Cookie::split_parse(value).flatten() {
                jar.add_original(cookie.into_owned());
            }
        }
        jar.signed(&self.0).get(SESSION_COOKIE)?.value().parse().ok()
    }

    /// The bearer token of a request (`Authorization: Bearer <token>`): `Some(None)` when the
    /// request names one that this key did not sign, `None` when it names none.
    fn verified_token(&self, headers: &HeaderMap) -> Option<Option<u64>> {
        let value = headers.get(AUTHORIZATION)?;
        // The scheme is case-insensitive (RFC 9110, 11.1).
        let token = value.to_str().ok().and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(SESSION_COOKIE, token.unwrap_or_default().to_owned()));
        Some(jar.signed(&self.0).get(SESSION_COOKIE).and_then(|c| c.value().parse().ok()))
    }

    /// A bearer token naming session `id`: its signed value, as the cookie would carry it.
    fn token(&self, id: u64) -> String {
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.0).add(Cookie::new(SESSION_COOKIE, id.to_string()));
        jar.get(SESSION_COOKIE).expect("the token just signed").value().to_owned()
    }

    /// The `Set-Cookie` value naming session `id`, kept by the browser for `ttl`.
    fn cookie(&self, id: u64, ttl: Duration) -> HeaderValue {
        let mut jar = CookieJar::new();
        let max_age = cookie::time::Duration::seconds(ttl.as_secs() as i64);
        jar.signed_mut(&self.0).add(
            Cookie::build((SESSION_COOKIE, id.to_string()))
                .path("/")
                .http_only(true)
                .same_site(SameSite::Lax)
                .max_age(max_age),
        );
        let cookie = jar.delta().next().expect("the cookie just added").to_string();
        HeaderValue::from_str(&cookie).expect("a signed cookie is a valid header value")
    }

    /// The `Set-Cookie` value that signs out.
    pub fn sign_out() -> HeaderValue {
        let mut cookie = Cookie::build((SESSION_COOKIE, "")).path("/").build();
        cookie.make_removal();
        HeaderValue::from_str(&cookie.to_string()).expect("valid header value")
    }
}

/// One signed-in browser: who, and until when (Unix seconds); a bearer token's session also
/// names the session that issued it, and lasts only as long as that one does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub user: u64,
    pub expires: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<u64>,
}

/// The CRM's sessions: the signing key, the store that holds them, and how long they last.
#[derive(Clone)]
pub struct Sessions {
    key: SessionKey,
    table: Table<Session>,
    ttl: Duration,
    token_ttl: Duration,
}

/// 64 bits from the operating system's random source (see the module's note on why not a
/// counter).
fn random_session_id() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source");
    u64::from_le_bytes(bytes)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Sessions {
    /// Sessions signed by `key`, kept in `table`, lasting `ttl`; their bearer tokens last
    /// 15 minutes ([`Sessions::token_ttl`]).
    pub fn new(key: SessionKey, table: Table<Session>, ttl: Duration) -> Self {
        Self { key, table, ttl, token_ttl: Duration::from_secs(15 * 60) }
    }

    /// How long a bearer token lasts.
    pub fn token_ttl(self, token_ttl: Duration) -> Self {
        Self { token_ttl, ..self }
    }

    /// Starts a session for `user` under a new random id; the `Set-Cookie` value that names it.
    pub async fn sign_in(&self, user: u64) -> Result<HeaderValue, StoreError> {
        let id = random_session_id();
        self.table.put(id, &Session { user, expires: now_secs() + self.ttl.as_secs(), issued_by: None }).await?;
        Ok(self.key.cookie(id, self.ttl))
    }

    /// A bearer token for the request's signed-in user, and how long it lasts: a session of its
    /// own, issued by the cookie's session and ending with it, if not before. `None` when the
    /// request has no live cookie session, or names a token (a token issues no tokens).
    pub async fn issue_token(&self, headers: &HeaderMap) -> Result<Option<(String, Duration)>, StoreError> {
        if self.key.verified_token(headers).is_some() {
            return Ok(None);
        }
        let Some(issuer) = self.key.verified(headers) else { return Ok(None) };
        let Some(parent) = self.live(issuer).await else { return Ok(None) };
        let expires = (now_secs() + self.token_ttl.as_secs()).min(parent.expires);
        let id = random_session_id();
        self.table.put(id, &Session { user: parent.user, expires, issued_by: Some(issuer) }).await?;
        Ok(Some((self.key.token(id), Duration::from_secs(expires.saturating_sub(now_secs())))))
    }

    /// Session `id`, if it exists and has not expired (an expired one is deleted when found).
    async fn live(&self, id: u64) -> Option<Session> {
        let session = self.table.get(id).await.ok()??;
        if session.expires <= now_secs() {
            let _ = self.table.delete(id).await;
            return None;
        }
        Some(session)
    }

    /// The signed-in user of a request: a genuine bearer token or, when it names none, cookie,
    /// naming a live session; a token's session also needs the session that issued it live.
    pub async fn user(&self, headers: &HeaderMap) -> Option<User> {
        let id = match self.key.verified_token(headers) {
            Some(token) => token?,
            None => self.key.verified(headers)?,
        };
        let session = self.live(id).await?;
        if let Some(issuer) = session.issued_by {
            self.live(issuer).await?;
        }
        find_user(session.user)
    }

    /// Ends the request's session (on every instance) and answers the `Set-Cookie` value that
    /// removes the cookie.
    pub async fn sign_out(&self, headers: &HeaderMap) -> Result<HeaderValue, StoreError> {
        if let Some(id) = self.key.verified(headers) {
            self.table.delete(id).await?;
        }
        Ok(SessionKey::sign_out())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &HeaderValue) -> HeaderMap {
        let pair = cookie.to_str().unwrap().split(';').next().unwrap().to_owned();
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&format!("other=1; {pair}")).unwrap());
        h
    }

    fn sessions(key: SessionKey, ttl: Duration) -> Sessions {
        Sessions::new(key, Table::memory(), ttl)
    }

    #[tokio::test]
    async fn signed_session_round_trip_forgery_and_sign_out() {
        let key = SessionKey::from_secret(&[7u8; 32]).unwrap();
        let s = sessions(key.clone(), Duration::from_secs(3600));
        let set = s.sign_in(2).await.unwrap();
        assert!(set.to_str().unwrap().contains("Max-Age=3600"), "{set:?}");
        assert_eq!(s.user(&headers(&set)).await.unwrap().name, "bob");
        // Another key, or a tampered value, is nobody.
        assert!(sessions(SessionKey::random(), Duration::from_secs(60)).user(&headers(&set)).await.is_none());
        let value = set.to_str().unwrap();
        let tampered = value.replacen("=", "=0", 1);
        assert!(s.user(&headers(&HeaderValue::from_str(&tampered).unwrap())).await.is_none());
        assert!(s.user(&HeaderMap::new()).await.is_none());
        assert!(SessionKey::from_secret(b"short").is_err());
        // Signing out ends the session itself: the old cookie, replayed, is nobody.
        let removal = s.sign_out(&headers(&set)).await.unwrap();
        assert!(removal.to_str().unwrap().contains("Max-Age=0"), "{removal:?}");
        assert!(s.user(&headers(&set)).await.is_none());
    }

    #[tokio::test]
    async fn a_cookie_from_before_the_store_lost_its_data_names_nobody() {
        let key = SessionKey::from_secret(&[7u8; 32]).unwrap();
        let before = sessions(key.clone(), Duration::from_secs(3600));
        let bob = before.sign_in(2).await.unwrap();
        // The store comes back empty (same key, as instances sharing SESSION_SECRET have), and
        // carol signs in first: bob's still-valid signed cookie must not open her session.
        let after = sessions(key, Duration::from_secs(3600));
        let carol = after.sign_in(3).await.unwrap();
        assert_eq!(after.user(&headers(&carol)).await.unwrap().name, "carol");
        assert!(after.user(&headers(&bob)).await.is_none(), "bob's cookie named carol's session");
    }

    fn bearer(token: &str) -> HeaderMap {
        bearer_as(&format!("Bearer {token}"))
    }

    fn bearer_as(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[tokio::test]
    async fn a_bearer_token_names_its_user_until_it_expires_and_overrides_the_cookie() {
        let key = SessionKey::from_secret(&[7u8; 32]).unwrap();
        let s = sessions(key.clone(), Duration::from_secs(3600));
        let bob = s.sign_in(2).await.unwrap();
        let (token, lasts) = s.issue_token(&headers(&bob)).await.unwrap().expect("a token for bob");
        assert!(lasts <= Duration::from_secs(15 * 60) && lasts >= Duration::from_secs(15 * 60 - 2), "{lasts:?}");
        assert_eq!(s.user(&bearer(&token)).await.unwrap().name, "bob");
        assert_eq!(s.user(&bearer_as(&format!("bearer {token}"))).await.unwrap().name, "bob", "any case");
        // Forged, tampered, another key's, or not a bearer at all: nobody, even beside a good cookie.
        let carol = s.sign_in(3).await.unwrap();
        let mut with_cookie = headers(&carol);
        with_cookie.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}x")).unwrap());
        assert!(s.user(&with_cookie).await.is_none(), "a bad token fell back to the cookie");
        with_cookie.insert(AUTHORIZATION, HeaderValue::from_static("Basic Ym9iOmJvYg=="));
        assert!(s.user(&with_cookie).await.is_none());
        let other = sessions(SessionKey::random(), Duration::from_secs(3600));
        assert!(other.user(&bearer(&token)).await.is_none());
        // A token that has lasted its time is nobody.
        let short = sessions(key, Duration::from_secs(3600)).token_ttl(Duration::ZERO);
        let bob_again = short.sign_in(2).await.unwrap();
        let (expired, _) = short.issue_token(&headers(&bob_again)).await.unwrap().unwrap();
        assert!(short.user(&bearer(&expired)).await.is_none());
    }

    #[tokio::test]
    async fn a_token_issues_no_token_and_ends_with_the_session_that_issued_it() {
        let s = sessions(SessionKey::random(), Duration::from_secs(3600));
        let bob = s.sign_in(2).await.unwrap();
        let (token, _) = s.issue_token(&headers(&bob)).await.unwrap().unwrap();
        assert!(s.issue_token(&bearer(&token)).await.unwrap().is_none(), "a token issued a token");
        let mut both = headers(&bob);
        both.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        assert!(s.issue_token(&both).await.unwrap().is_none(), "a token beside the cookie issued one");
        assert!(s.issue_token(&HeaderMap::new()).await.unwrap().is_none());
        // Signing out (with the cookie) ends every token it issued.
        s.sign_out(&headers(&bob)).await.unwrap();
        assert!(s.user(&bearer(&token)).await.is_none(), "the token outlived the sign-out");
        // A token never outlives its session.
        let brief = sessions(SessionKey::random(), Duration::from_secs(60)).token_ttl(Duration::from_secs(3600));
        let carol = brief.sign_in(3).await.unwrap();
        let (_, lasts) = brief.issue_token(&headers(&carol)).await.unwrap().unwrap();
        assert!(lasts <= Duration::from_secs(60), "{lasts:?}");
    }

    #[tokio::test]
    async fn an_expired_session_is_nobody() {
        let s = sessions(SessionKey::random(), Duration::ZERO);
        let set = s.sign_in(1).await.unwrap();
        assert!(s.user(&headers(&set)).await.is_none());
    }
}
