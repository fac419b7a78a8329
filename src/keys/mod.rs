//! API keys: what a key is, how one is chosen for a call, and what its
//! answers teach us. One home for the idea of a key.
//!
//! - `config`: keys from `OPENAI_API_KEYS`, `OPENAI_API_KEY` and
//!   `GENQ_KEYS_FILE`, with their per-model limits and accounts.
//! - `select`: the [`Keyring`]: which keys serve a model, which bucket
//!   each draws from, and reserving slots before jobs are claimed.
//! - [`health`]: [`KeyHealth::record`], the one entry point that records
//!   what a provider's answer meant for the key that got it (cooldowns,
//!   disabling, learned limits, success counts).
//! - `adapt`: rates learned at run time: announced in headers, or searched
//!   for from 429s alone (`Discovery`, persisted per bucket); pure.
//! - [`state`]: [`KeyState`], where a key is (active, cooling, disabled).
//!
//! The SQL behind them lives in `store::keys` (`genq.api_keys`) and
//! `store::buckets` (`genq.key_buckets`).

pub(crate) mod adapt;
pub(crate) mod config;
pub mod health;
pub(crate) mod select;
pub mod state;

pub use config::*;
pub use health::KeyHealth;
pub use select::{Keyring, NoSlot, Slot};
pub use state::KeyState;
