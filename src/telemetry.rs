//! Logging: `RUST_LOG` picks the levels (default `info`), `LOG_FORMAT` text or JSON lines.
//! Nothing logs request bodies or headers, so tokens, passwords and hashes never reach it.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        // Colours only for a terminal: a log file or collector gets plain text.
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
    };
    // A second initialisation (tests start many applications) keeps the first subscriber.
    drop(result);
}
