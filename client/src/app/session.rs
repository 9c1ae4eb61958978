//! The demo's sign-in: a signed cookie holding the user's id (server only).
//!
//! EventSource cannot send headers but does send cookies, so the same cookie identifies the user
//! to server functions and to the SSE endpoint's `authorize`. Signed with the `cookie` crate
//! (HMAC-SHA256): a client cannot forge another user's id.

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::{HeaderMap, HeaderValue, COOKIE};
use shared::crm::{find_user, User};

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

    /// The signed-in user of a request, if its session cookie is present and genuine.
    pub fn user(&self, headers: &HeaderMap) -> Option<User> {
        let mut jar = CookieJar::new();
        for value in headers.get_all(COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for cookie in Cookie::split_parse(value).flatten() {
                jar.add_original(cookie.into_owned());
            }
        }
        let id = jar.signed(&self.0).get(SESSION_COOKIE)?.value().parse().ok()?;
        find_user(id)
    }

    /// The `Set-Cookie` value that signs `user` in.
    pub fn sign_in(&self, user: u64) -> HeaderValue {
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.0)
            .add(Cookie::build((SESSION_COOKIE, user.to_string())).path("/").http_only(true).same_site(SameSite::Lax));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &HeaderValue) -> HeaderMap {
        let pair = cookie.to_str().unwrap().split(';').next().unwrap().to_owned();
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&format!("other=1; {pair}")).unwrap());
        h
    }

    #[test]
    fn signed_cookie_round_trip_and_forgery() {
        let key = SessionKey::from_secret(&[7u8; 32]).unwrap();
        let set = key.sign_in(2);
        assert_eq!(key.user(&headers(&set)).unwrap().name, "bob");
        // Another key, or a tampered value, is nobody.
        assert!(SessionKey::random().user(&headers(&set)).is_none());
        let forged = HeaderValue::from_str(&set.to_str().unwrap().replacen("2", "1", 1)).unwrap();
        assert!(key.user(&headers(&forged)).is_none());
        assert!(key.user(&HeaderMap::new()).is_none());
        assert!(SessionKey::from_secret(b"short").is_err());
    }
}
