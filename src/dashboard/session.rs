//! Who may use the dashboard, and that a change came from its own pages.
//!
//! - With `GENQ_API_TOKEN` set, a browser signs in once with the token; the
//!   answer sets an `HttpOnly`, `SameSite=Strict` cookie holding a value
//!   derived from the token (HMAC-SHA256), never the token itself, so every
//!   replica with the same token accepts it and nothing in a URL carries it.
//! - Every form that changes something carries a CSRF token derived the same
//!   way (from the token, or from a per-process secret when there is none);
//!   a POST without it, or from another origin, is refused.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::api::auth;

/// The session cookie's name.
pub const COOKIE: &str = "genq_session";

/// The secrets of one server's dashboard. Never printed.
#[derive(Clone)]
pub struct Session {
    /// The cookie value a signed-in browser carries; `None` when the server
    /// has no token (the dashboard is open, on loopback only).
    cookie: Option<String>,
    /// The token forms carry.
    csrf: String,
    /// The API token itself, to check a sign-in.
    token: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("signed_in_required", &self.cookie.is_some())
            .finish_non_exhaustive()
    }
}

fn derive(key: &[u8], purpose: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"genq-dashboard:");
    mac.update(purpose.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl Session {
    /// The dashboard's secrets for a server with `token` (none: open).
    pub fn new(token: Option<&str>) -> Self {
        match token {
            Some(token) => Session {
                cookie: Some(derive(token.as_bytes(), "session")),
                csrf: derive(token.as_bytes(), "csrf"),
                token: Some(token.to_string()),
            },
            None => {
                let secret: [u8; 32] = rand::random();
                Session {
                    cookie: None,
                    csrf: derive(&secret, "csrf"),
                    token: None,
                }
            }
        }
    }

    /// Whether pages need a sign-in.
    pub fn required(&self) -> bool {
        self.cookie.is_some()
    }

    /// Whether `cookie_header` (a request's `Cookie`) shows a signed-in
    /// browser (always, when no sign-in is required).
    pub fn signed_in(&self, cookie_header: Option<&str>) -> bool {
        let Some(expected) = &self.cookie else {
            return true;
        };
        cookie_header
            .into_iter()
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && auth::token_matches(value, expected))
    }

    /// Whether `given` is the API token. Constant time.
    pub fn token_matches(&self, given: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| auth::token_matches(given, t))
    }

    /// The `Set-Cookie` value that signs a browser in; `secure` when the
    /// dashboard is reached over https.
    pub fn sign_in_cookie(&self, secure: bool) -> Option<String> {
        self.cookie.as_ref().map(|value| {
            let secure = if secure { "; Secure" } else { "" };
            format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200{secure}")
        })
    }

    /// The `Set-Cookie` value that signs a browser out.
    pub fn sign_out_cookie() -> String {
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }

    /// The CSRF token the dashboard's forms carry.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether a form's `csrf` field is right. Constant time.
    pub fn csrf_ok(&self, given: &str) -> bool {
        auth::token_matches(given, &self.csrf)
    }
}

/// Whether a POST's `Origin` (when the browser sent one) is this server.
pub fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    match (origin, host) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_derived_from_the_token_never_the_token() {
        let s = Session::new(Some("tok-123"));
        let set = s.sign_in_cookie(false).unwrap();
        assert!(!set.contains("tok-123"), "{set}");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(s.sign_in_cookie(true).unwrap().ends_with("; Secure"));
        let value = set.split(';').next().unwrap();
        let cases = [
            (Some(value.to_string()), true),
            (Some(format!("other=1; {value}")), true),
            (Some(format!("{COOKIE}=nope")), false),
            (Some(format!("{COOKIE}=tok-123")), false),
            (Some(String::new()), false),
            (None, false),
        ];
        for (header, ok) in cases {
            assert_eq!(s.signed_in(header.as_deref()), ok, "{header:?}");
        }
        // Another server with the same token accepts it; another token does not.
        assert!(Session::new(Some("tok-123")).signed_in(Some(value)));
        assert!(!Session::new(Some("tok-124")).signed_in(Some(value)));
    }

    #[test]
    fn csrf_and_origin_checks() {
        let s = Session::new(Some("tok"));
        assert!(s.csrf_ok(s.csrf()));
        assert!(!s.csrf_ok("") && !s.csrf_ok("x"));
        assert!(!s.csrf().contains("tok"));
        let open = Session::new(None);
        assert!(!open.required() && open.signed_in(None));
        assert!(!open.token_matches(""));
        assert_ne!(
            open.csrf(),
            Session::new(None).csrf(),
            "a random secret per process"
        );
        let cases = [
            (None, Some("h:1"), true),
            (Some("http://h:1"), Some("h:1"), true),
            (Some("https://h:1/"), Some("h:1"), true),
            (Some("http://evil:1"), Some("h:1"), false),
            (Some("null"), Some("h:1"), false),
            (Some("http://h:1"), None, false),
        ];
        for (origin, host, ok) in cases {
            assert_eq!(same_origin(origin, host), ok, "{origin:?} {host:?}");
        }
    }
}
