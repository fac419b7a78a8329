//! Logging set up once: readable text by default, JSON lines with
//! `GENQ_LOG_FORMAT=json`, filtered by `RUST_LOG` (default [`DEFAULT_FILTER`]).

use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is unset. async-openai logs every error
/// answer at WARN; genq logs its own decision about each, so that is noise.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,async_openai=error";

/// Installs the global subscriber. Calling it twice is harmless.
pub fn init() {
    init_with(DEFAULT_FILTER);
}

/// As [`init`], with another filter for when `RUST_LOG` is unset.
pub fn init_with(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("GENQ_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}
