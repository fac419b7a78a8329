//! Signing webhooks the Standard Webhooks way (<https://www.standardwebhooks.com>):
//! `webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`,
//! with the id and timestamp in `webhook-id` and `webhook-timestamp`. A
//! receiver recomputes the HMAC over the raw body it got and compares; the
//! timestamp lets it refuse old replays.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The signing secret (`GENQ_WEBHOOK_SECRET`): `whsec_<base64>` as Standard
/// Webhooks libraries print it, or any other text used as raw bytes. Never
/// shown.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// Why a secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("GENQ_WEBHOOK_SECRET is empty")]
    Empty,
    #[error("GENQ_WEBHOOK_SECRET starts with whsec_ but the rest is not base64")]
    NotBase64,
    #[error("GENQ_WEBHOOK_SECRET is shorter than 16 bytes; use at least 24 random bytes")]
    TooShort,
}

impl WebhookSecret {
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        let bytes = match text.strip_prefix("whsec_") {
            Some(encoded) => STANDARD
                .decode(encoded)
                .map_err(|_| SecretError::NotBase64)?,
            None => text.as_bytes().to_vec(),
        };
        if bytes.len() < 16 {
            return Err(SecretError::TooShort);
        }
        Ok(WebhookSecret(bytes))
    }

    /// The `webhook-signature` value for message `id` sent at `timestamp`
    /// (Unix seconds) with `body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    /// Whether `header` (space-separated `v1,<sig>` entries) holds a valid
    /// signature of `body`; compared in constant time.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let expected = self.mac(id, timestamp, body);
        header
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|sig| STANDARD.decode(sig).ok())
            .any(|sig| bool::from(sig.as_slice().ct_eq(expected.as_slice())))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signs_like_the_specification_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let cases = [
            (&body[..], 1614265330, format!("v1,x v2,y {sig}"), true),
            (&body[..], 1614265330, sig.clone(), true),
            (br#"{"test": 2432232315}"#, 1614265330, sig.clone(), false),
            (&body[..], 1614265331, sig.clone(), false),
            (&body[..], 1614265330, sig.replace("v1,", "v2,"), false),
            (&body[..], 1614265330, "v1,not base64!".to_string(), false),
        ];
        for (body, ts, header, want) in cases {
            assert_eq!(
                secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", ts, body, &header),
                want,
                "{header}"
            );
        }
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        assert_eq!(WebhookSecret::parse(" ").unwrap_err(), SecretError::Empty);
        assert_eq!(
            WebhookSecret::parse("whsec_***").unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            WebhookSecret::parse("short").unwrap_err(),
            SecretError::TooShort
        );
        let secret = WebhookSecret::parse("a-long-enough-raw-secret").unwrap();
        assert_eq!(format!("{secret:?}"), "WebhookSecret(***)");
    }
}
