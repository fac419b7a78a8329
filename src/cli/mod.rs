//! The verbs of the `genq` binary, one file each (as mini-redis's `cmd/`),
//! and what they share. Everything that prints lives here; the library
//! never prints.
//!
//! - verbs: [`migrate`], [`worker`], [`run`], [`serve`], [`submit`],
//!   [`jobs`], [`keys`], [`budgets`], [`sim`], [`demo`];
//! - shared: [`db`] (the database flag and connections), [`provider`] (the
//!   one place an `ImagesProvider` is wired), [`shutdown`] (SIGTERM/SIGINT),
//!   [`table`] (aligned columns), [`urls`] (which input URLs may be fetched), [`output`] (where images go),
//!   [`webhook`] (completion webhooks), [`budgets`] (also the worker's spend caps).

pub mod budgets;
pub mod db;
pub mod demo;
pub mod jobs;
pub mod keys;
pub mod migrate;
pub mod output;
pub mod provider;
pub mod run;
pub mod serve;
pub mod shutdown;
pub mod sim;
pub mod submit;
pub mod table;
pub mod urls;
pub mod webhook;
pub mod worker;
