//! What genq's integration tests and benchmarks share, so each is built one
//! way: databases, the sim rig with its one provider wiring, and `genq`
//! processes.
//!
//! - [`db`]: a fresh, migrated database per test or benchmark on a real
//!   PostgreSQL (`DATABASE_URL`, else one private cluster per process).
//! - [`rig`]: `genq sim` on loopback, a database, and workers running the
//!   real `ImagesProvider` through async-openai; [`rig::Rig::provider_over`]
//!   is the one place a test wires a provider.
//! - [`process`]: the `genq` binary as tests start it, and guards that kill it.
//! - [`s3`]: a real S3-compatible server (moto) on loopback.
//! - [`wait`]: polling for outcomes, counting and inserting jobs.
//! - [`bench`](mod@bench): benchmark scratch databases with counters, worker processes
//!   whose memory can be read, and `name=value` arguments.
//!
//! Use it only from integration tests and benchmarks (`tests/`, `benches/`):
//! it links the `genq` library, which its own unit tests compile separately.

pub mod bench;
pub mod browser;
pub mod db;
pub mod process;
pub mod rig;
pub mod s3;
pub mod wait;

pub use db::{TestDb, with_database};
pub use process::ChildGuard;
pub use wait::{count_state, insert_jobs, wait_until};
