//! What a producer may submit, checked before anything is written, so every
//! way in (`genq submit`, `POST /v1/jobs`, [`crate::submit()`]) refuses the
//! same bad input with the same message. Plain SQL inserts skip it: the
//! table's CHECKs guard them, and the worker runs [`params::validate`] again
//! at claim time.
//!
//! - [`fields`]: the fields every job has (prompt, model, queue, priority…).
//! - [`inputs`]: an edit's input images and mask (count, sources, URLs).
//! - [`params`]: a job's model and params against the catalogue
//!   (`provider::catalog`), fallback models included.
//! - `model_params`: the strict check of a known model's params.
//! - [`param_error`]: why params are refused.
//!
//! The dependencies run one way: `params` → `model_params` → `param_error`.

pub mod fields;
pub mod inputs;
mod model_params;
pub mod param_error;
pub mod params;

pub use inputs::InputError;
pub use param_error::ParamError;
