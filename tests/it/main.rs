//! The integration tests, in one binary: one link of the crate, and one
//! private PostgreSQL cluster (when `DATABASE_URL` is unset) shared by every
//! test, each still in a database of its own (`genq_testkit::TestDb`).
//!
//! Each module is one concern, named after it; `genq_testkit` holds the
//! database, the sim rig and the helpers that start `genq` processes. The
//! one other test binary, `tests/observability.rs`, counts genq's
//! process-wide metrics, so it runs in a process of its own.

mod api;
mod bounded_memory;
mod capacity;
mod clock;
mod completion_events;
mod costs;
mod dashboard;
mod demo;
mod deploy_files;
mod dry_run;
mod edits;
// The longest test (about 75 s): libtest starts tests in name order, so its
// module's name lets it start among the first and run beside the rest.
mod endurance;
mod faults;
mod images;
mod key_buckets;
mod key_operations;
mod metrics;
mod object_storage;
mod pg_restart;
mod queue;
mod rate_limits;
mod retention;
mod root_cause;
mod run_command;
mod setup_files;
mod shared_budget;
mod shared_limits;
mod sim;
mod sim_limits;
mod stranded;
mod waiting;
mod webhooks;
mod worker_process;
