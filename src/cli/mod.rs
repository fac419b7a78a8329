//! Rendering for the command line and the demo: aligned tables, and the
//! key table of `genq keys list`.

pub mod keys;
pub mod table;
