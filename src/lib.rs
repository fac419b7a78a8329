//! genq: image-generation jobs from PostgreSQL, run at the rate each API key allows.
pub mod sim;
