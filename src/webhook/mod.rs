//! Completion webhooks: when a job ends, its JSON (the shape of
//! `GET /v1/jobs/{id}`) is POSTed to the job's `callback_url`, else its
//! queue's default (`GENQ_WEBHOOK_URL`), signed the Standard Webhooks way.
//!
//! - The outbox row is written by a trigger in the transaction that ends the
//!   job (`migrations/0010_webhooks.sql`), so no completion is missed and
//!   completing a job never waits for a receiver.
//! - Workers deliver with [`deliver::run`]: at least once (a receiver
//!   dedupes by `webhook-id`), with backoff, across restarts, until
//!   [`WebhookConfig::give_up_after`].
//! - Receiver URLs are checked like input URLs: no private addresses unless
//!   allowed, and the send connects only to the addresses checked.
//!
//! [`signature`]: the HMAC-SHA256 signature and its check.

pub mod deliver;
pub mod signature;

use std::time::Duration;

use crate::input::UrlPolicy;
use crate::retry::Backoff;
pub use signature::{SecretError, WebhookSecret};

/// How a worker delivers webhooks.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub secret: WebhookSecret,
    /// A delivery older than this without a 2xx answer is given up (`failed`).
    pub give_up_after: Duration,
    /// Whether receivers on private addresses may be called.
    pub urls: UrlPolicy,
    /// How long one POST may take.
    pub timeout: Duration,
    /// How often to look for due deliveries (a NOTIFY wakes it sooner).
    pub poll: Duration,
    /// Delays between sends of one delivery (by its send count), with jitter.
    pub backoff: Backoff,
}

impl WebhookConfig {
    pub fn new(secret: WebhookSecret) -> Self {
        WebhookConfig {
            secret,
            give_up_after: Duration::from_secs(24 * 3600),
            urls: UrlPolicy::default(),
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
        }
    }
}
