//! The one list of settings: every environment variable the service reads, what it means and
//! its default. `--help` prints it, and a test checks that the README's configuration table
//! says the same, so neither can drift from the code.

/// One row of the settings table: variables documented together (`HOST`, `PORT`), their
/// meaning and their default, in the README's Markdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    pub names: &'static [&'static str],
    pub meaning: &'static str,
    pub default: &'static str,
}

/// Every setting, in the README's order. A new setting gets a row here (and the same row in
/// the README's table).
pub const SETTINGS: &[Setting] = &[
    Setting {
        names: &["DATABASE_URL"],
        meaning: "`sqlite://todo.db` (a file in the working directory), SQLAlchemy's `sqlite:///./todo.db` and `sqlite:////absolute/path.db`, `sqlite::memory:`, or `postgres://…` / `postgresql://…` (also `postgresql+psycopg2://…`, `postgresql+asyncpg://…`; URL parameters such as `sslmode` are honoured); see [DATABASE_URL spellings](docs/API.md#database_url-spellings)",
        default: "`sqlite://todo.db`",
    },
    Setting {
        names: &["BETTER_AUTH_SECRET"],
        meaning: "HS256 secret, at least 32 bytes",
        default: "unset: random per process, with a warning; refused when `APP_ENV=production`",
    },
    Setting {
        names: &["APP_ENV"],
        meaning: "`development` (or `dev`) or `production` (or `prod`), any case",
        default: "`development`",
    },
    Setting {
        names: &["HOST", "PORT"],
        meaning: "listen address",
        default: "`127.0.0.1`, `8000`",
    },
    Setting {
        names: &["JWT_ISSUER", "JWT_AUDIENCE"],
        meaning: "put in issued tokens and required of presented ones",
        default: "unset",
    },
    Setting {
        names: &["JWT_EXPIRES_IN_SECONDS"],
        meaning: "lifetime of issued tokens (60 s – 30 days)",
        default: "`86400`",
    },
    Setting {
        names: &["BCRYPT_COST"],
        meaning: "bcrypt work factor (4–31)",
        default: "`12`",
    },
    Setting {
        names: &["CORS_ORIGINS"],
        meaning: "comma-separated origins allowed to call the API from a browser (`*` for any)",
        default: "none",
    },
    Setting {
        names: &["MAX_BODY_BYTES"],
        meaning: "largest request body; larger is a 413",
        default: "`131072`",
    },
    Setting {
        names: &["DATABASE_MAX_CONNECTIONS"],
        meaning: "connection pool size",
        default: "`10`",
    },
    Setting {
        names: &["DATABASE_ACQUIRE_TIMEOUT_SECONDS"],
        meaning: "how long a request waits for a connection before a 503",
        default: "`5`",
    },
    Setting {
        names: &["JWT_LEEWAY_SECONDS"],
        meaning: "clock skew tolerated on `exp` and `nbf`",
        default: "`60`",
    },
    Setting {
        names: &["BETTER_AUTH_URL"],
        meaning: "the Better Auth server's base URL: its JWT plugin's tokens are then accepted, verified with the JWKS at its origin + `/api/auth/jwks`, with `iss` = `aud` = that origin",
        default: "unset: HS256 only",
    },
    Setting {
        names: &["JWKS_URL"],
        meaning: "the key set's location, when not at `BETTER_AUTH_URL`'s origin (without `BETTER_AUTH_URL`, set `JWT_ISSUER` and `JWT_AUDIENCE`)",
        default: "unset",
    },
    Setting {
        names: &["JWKS_REFETCH_INTERVAL_SECONDS"],
        meaning: "an unknown `kid` refetches the key set at most once per interval",
        default: "`10`",
    },
    Setting {
        names: &["JWKS_FETCH_TIMEOUT_SECONDS"],
        meaning: "bound on one key-set fetch",
        default: "`5`",
    },
    Setting {
        names: &["AUTH_RATE_LIMIT_PER_IP"],
        meaning: "sign-up and login attempts per client address per minute, successful or not (IPv6: per /64 network; `0`: off)",
        default: "`30`",
    },
    Setting {
        names: &["AUTH_RATE_LIMIT_PER_ACCOUNT"],
        meaning: "**failed** login attempts per (client address, account) pair per minute — an account is one budget whether named by username or email — and sign-ups per (client address, email) (`0`: off)",
        default: "`10`",
    },
    Setting {
        names: &["AUTH_RATE_LIMIT_PER_ACCOUNT_GLOBAL"],
        meaning: "failed login attempts per account per minute from all client addresses together, against distributed guessing; an address the account logged in from in the last 30 days is exempt (`0`: off)",
        default: "ten times `AUTH_RATE_LIMIT_PER_ACCOUNT`",
    },
    Setting {
        names: &["TRUSTED_PROXIES"],
        meaning: "comma-separated IP addresses and CIDR ranges, IPv4 or IPv6 (`10.0.0.0/8, 2001:db8::/32, 127.0.0.1`), of the reverse proxies in front of the service: from them, the client address is read from `TRUSTED_PROXY_HEADER`. See [Deploying behind a proxy](#deploying-behind-a-proxy-on-several-instances)",
        default: "none: the TCP peer is the client",
    },
    Setting {
        names: &["TRUSTED_PROXY_HEADER"],
        meaning: "the header those proxies append the client address to: `x-forwarded-for` or `forwarded` (RFC 7239); the other one is ignored",
        default: "`x-forwarded-for`",
    },
    Setting {
        names: &["PASSWORD_HASH_CONCURRENCY"],
        meaning: "threads of the password hashing pool, i.e. bcrypt computations at once whatever clients do; they run at the lowest scheduling priority (Linux `SCHED_IDLE`, and nice 19)",
        default: "the number of cores",
    },
    Setting {
        names: &["PASSWORD_HASH_QUEUE"],
        meaning: "bcrypt computations allowed to wait beyond those running, whatever their wait (a bound on memory); beyond, a `503` at once",
        default: "`256`",
    },
    Setting {
        names: &["PASSWORD_HASH_MAX_WAIT_SECONDS"],
        meaning: "the longest a sign-up or login may expect to wait for its hash: (jobs ahead ÷ threads + 1) × the measured CPU time of one hash; longer, a `503` at once (a hash that can start at once is always admitted). Must be below `REQUEST_TIMEOUT_SECONDS`",
        default: "`20` (two thirds of `REQUEST_TIMEOUT_SECONDS` when that is under 30)",
    },
    Setting {
        names: &["MAX_HEADER_BYTES"],
        meaning: "total size of request headers; larger is a `431`",
        default: "`131072`",
    },
    Setting {
        names: &["REQUEST_TIMEOUT_SECONDS"],
        meaning: "a request still running after this gets a `503`",
        default: "`30`",
    },
    Setting {
        names: &["MAX_PAGE_SIZE"],
        meaning: "largest `page_size` a listing accepts",
        default: "`100`",
    },
    Setting {
        names: &["LISTING_CACHE_MAX_BYTES"],
        meaning: "bytes of listing bodies each instance keeps, to answer a listing again while the owner's tasks are unchanged (the database checks that in the listing's own statement, so no write is ever missed); `0` keeps none. See [Listing cache](#listing-cache)",
        default: "`16777216` (16 MiB)",
    },
    Setting {
        names: &["DATABASE_STARTUP_TIMEOUT_SECONDS"],
        meaning: "how long start-up retries an unreachable database (with backoff, logging each attempt) before exiting non-zero",
        default: "`30`",
    },
    Setting {
        names: &["MIGRATE_ON_START"],
        meaning: "apply migrations at start-up",
        default: "`true` (`false` for `pgbouncer=true` URLs)",
    },
    Setting {
        names: &["SHUTDOWN_GRACE_SECONDS"],
        meaning: "after SIGTERM/SIGINT, how long in-flight requests may finish",
        default: "`30`",
    },
    Setting {
        names: &["HEADER_READ_TIMEOUT_SECONDS"],
        meaning: "a connection must deliver a complete request head within this (1–300); an idle kept-alive connection is closed after it too",
        default: "`10`",
    },
    Setting {
        names: &["MAX_CONNECTIONS"],
        meaning: "connections held open at once; at the cap the service stops accepting until one closes (clients wait in the kernel's listen backlog)",
        default: "`1024`",
    },
    Setting {
        names: &["JWKS_MAX_AGE_SECONDS"],
        meaning: "a cached key set older than this is refreshed in the background while its keys stay in use",
        default: "`300`",
    },
    Setting {
        names: &["METRICS_TOKEN"],
        meaning: "bearer token (16 bytes or more) that `GET /metrics` requires; unset, `/metrics` is a `404`",
        default: "unset",
    },
    Setting {
        names: &["EVENTS_SINK"],
        meaning: "where the relay publishes task events: `log`, `dapr` or `http` (see [Events](#events))",
        default: "`log`",
    },
    Setting {
        names: &["EVENTS_SOURCE"],
        meaning: "the CloudEvents `source` of every event (a URI reference)",
        default: "`todo-api`",
    },
    Setting {
        names: &["DAPR_HTTP_PORT"],
        meaning: "`dapr` sink: the sidecar's HTTP port (the sidecar sets it)",
        default: "`3500`",
    },
    Setting {
        names: &["DAPR_PUBSUB_NAME"],
        meaning: "`dapr` sink: the pub/sub component",
        default: "`pubsub`",
    },
    Setting {
        names: &["EVENTS_TOPIC"],
        meaning: "`dapr` sink: the topic",
        default: "`task-events`",
    },
    Setting {
        names: &["DAPR_API_TOKEN"],
        meaning: "`dapr` sink: sent as `dapr-api-token` when set (never logged)",
        default: "unset",
    },
    Setting {
        names: &["EVENTS_HTTP_URL"],
        meaning: "`http` sink: where events are POSTed (a Knative broker, a webhook); required with `EVENTS_SINK=http`",
        default: "unset",
    },
    Setting {
        names: &["EVENTS_SINK_TIMEOUT_SECONDS"],
        meaning: "bound on one publish (1–60); the relay lease lasts this + 2 s",
        default: "`3`",
    },
    Setting {
        names: &["EVENTS_RETRY_MAX_SECONDS"],
        meaning: "longest wait between two attempts at a failing sink (backoff starts at 100 ms and doubles)",
        default: "`30`",
    },
    Setting {
        names: &["EVENTS_RETENTION_HOURS"],
        meaning: "delivered events are kept this long (for the feed), then pruned; undelivered ones are never pruned",
        default: "`168`",
    },
    Setting {
        names: &["EVENTS_STREAMS_PER_USER"],
        meaning: "open `text/event-stream` feeds per user on each instance; beyond, a `429` with `Retry-After`",
        default: "`5`",
    },
    Setting {
        names: &["EVENTS_POLL_MILLISECONDS"],
        meaning: "how often the relay and the live feeds look for events committed through other instances",
        default: "`500`",
    },
    Setting {
        names: &["REMINDERS_POLL_MILLISECONDS"],
        meaning: "how often each instance looks for tasks whose `remind_at` has passed, to send their `todo.task.reminder` events (50–60 000)",
        default: "`1000`",
    },
    Setting {
        names: &["RUST_LOG"],
        meaning: "log levels, `tracing` syntax",
        default: "`info`",
    },
    Setting {
        names: &["LOG_FORMAT"],
        meaning: "`text` or `json` (one JSON object per line)",
        default: "`text`",
    },
];

impl Setting {
    /// The row as the README's configuration table writes it.
    pub fn markdown_row(&self) -> String {
        let names: Vec<String> = self.names.iter().map(|name| format!("`{name}`")).collect();
        format!(
            "| {} | {} | {} |",
            names.join(", "),
            self.meaning,
            self.default
        )
    }
}

/// The settings as plain text for `--help`: Markdown code spans and links unwrapped.
pub fn help_text() -> String {
    let mut text = String::from(
        "Settings (environment variables, or a .env file in the working directory; a bad \
         value stops the process before it listens, naming the variable):\n",
    );
    for setting in SETTINGS {
        text.push_str(&format!(
            "\n  {}\n      {}\n      default: {}\n",
            setting.names.join(", "),
            plain(setting.meaning),
            plain(setting.default),
        ));
    }
    text
}

/// Markdown to plain text: `[text](target)` becomes `text (target)`, backticks go.
fn plain(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut rest = markdown;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        out.push_str(" (");
        out.push_str(&rest[close + 2..end]);
        out.push(')');
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.replace('`', "")
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::BTreeSet};

    use super::*;
    use crate::config::Settings;

    #[test]
    fn every_variable_the_settings_read_is_in_the_table_and_nothing_else() {
        let read = RefCell::new(BTreeSet::new());
        // Some settings are read only when another selects them (the `dapr` and `http` event
        // sinks' own settings): every choice is tried.
        let choices: [&[(&str, &str)]; 3] = [
            &[],
            &[("EVENTS_SINK", "dapr")],
            &[
                ("EVENTS_SINK", "http"),
                ("EVENTS_HTTP_URL", "http://127.0.0.1:9/"),
            ],
        ];
        for choice in choices {
            Settings::from_lookup(|name| {
                read.borrow_mut().insert(name.to_owned());
                choice
                    .iter()
                    .find(|(variable, _)| *variable == name)
                    .map(|(_, value)| (*value).to_owned())
            })
            .expect("the defaults parse");
        }
        // RUST_LOG is read by the log filter, not by Settings.
        let mut documented: BTreeSet<String> = SETTINGS
            .iter()
            .flat_map(|setting| setting.names.iter().map(|name| (*name).to_owned()))
            .collect();
        documented.remove("RUST_LOG");
        assert_eq!(read.into_inner(), documented);
    }

    #[test]
    fn help_lists_every_setting_with_its_default_in_plain_text() {
        let help = help_text();
        for setting in SETTINGS {
            for name in setting.names {
                assert!(help.contains(name), "{name} missing from --help");
            }
        }
        assert!(!help.contains('`'));
        assert!(help.contains("listen address\n      default: 127.0.0.1, 8000"));
        assert_eq!(
            plain("see [the docs](docs/API.md#x) now"),
            "see the docs (docs/API.md#x) now"
        );
    }
}
