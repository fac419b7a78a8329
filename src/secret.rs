//! API secrets, wrapped so they cannot be printed by accident.

use sha2::{Digest, Sha256};

/// An API key's secret. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiSecret(String);

impl ApiSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        ApiSecret(secret.into())
    }

    /// The secret itself, for the Authorization header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `key-` + the first 8 hex digits of sha256(secret): safe to store and show.
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        format!("key-{}", &hex::encode(digest)[..8])
    }
}

impl std::fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiSecret(***)")
    }
}

impl std::fmt::Display for ApiSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}
