//! Typed settings, read once at start-up from the environment (and `.env`).
//!
//! Every variable is listed in the README's configuration table. A bad value is reported with
//! the variable's name and the reason, and the process exits before it listens. Secret values
//! are never echoed back.

use std::{fmt, net::IpAddr, time::Duration};

pub mod database_url;
pub mod reference;

pub use database_url::{Database, SqliteLocation};

use ipnet::IpNet;

use crate::client_addr::{ForwardingHeader, TrustedProxies};

/// Which database a `DATABASE_URL` points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret that never shows up in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything the service can be configured with. Tests build it with [`Settings::new`] and
/// adjust fields; the binary uses [`Settings::from_env`].
#[derive(Clone, Debug)]
pub struct Settings {
    pub app_env: AppEnv,
    pub host: IpAddr,
    pub port: u16,
    /// Connection URL; may carry a password, so it is wrapped.
    pub database_url: Secret,
    pub database_max_connections: u32,
    /// How long a request waits for a database connection before it gets a 503.
    pub database_acquire_timeout: Duration,
    /// `None`: a random per-process secret is generated (development only).
    pub jwt_secret: Option<Secret>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub jwt_leeway: Duration,
    pub token_ttl: Duration,
    /// The Better Auth server's base URL; its origin serves the JWKS and is the expected
    /// `iss` and `aud` of its tokens.
    pub better_auth_url: Option<url::Url>,
    /// Overrides where the JWKS is fetched from.
    pub jwks_url: Option<url::Url>,
    /// An unknown `kid` refetches the key set at most once per this interval.
    pub jwks_refetch_interval: Duration,
    pub jwks_fetch_timeout: Duration,
    pub bcrypt_cost: u32,
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted total of request header names and values, in bytes.
    pub max_header_bytes: usize,
    /// A request still running after this gets a 408.
    pub request_timeout: Duration,
    /// Largest `page_size` a listing accepts.
    pub max_page_size: u32,
    /// Bytes of listing bodies kept for answering again while their tasks are unchanged
    /// (tasks/listing_cache.rs); 0: none kept.
    pub listing_cache_max_bytes: u64,
    pub log_format: LogFormat,
    /// How long start-up keeps retrying an unreachable database (zero: one attempt).
    pub database_startup_timeout: Duration,
    /// Apply migrations at start-up (off by default behind PgBouncer: migrate on the direct URL).
    pub migrate_on_start: bool,
    /// After SIGTERM, in-flight requests get this long to finish.
    pub shutdown_grace: Duration,
    /// Sign-up and login attempts allowed per client address per minute; 0 disables.
    pub auth_rate_limit_per_ip: u32,
    /// Login attempts allowed per account (username or email) per minute; 0 disables.
    pub auth_rate_limit_per_account: u32,
    /// Login attempts allowed per account across all client addresses per minute; `None`:
    /// ten times `auth_rate_limit_per_account`; 0 disables.
    pub auth_rate_limit_per_account_global: Option<u32>,
    /// Peers whose forwarding header names the client address (`TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
    /// Threads of the password hashing pool: bcrypt computations running at once.
    pub password_hash_concurrency: usize,
    /// bcrypt computations allowed to wait beyond those running, whatever their wait (a
    /// bound on memory); beyond that, sign-up and login get a 503.
    pub password_hash_queue: usize,
    /// A connection must deliver a complete request head within this (and an idle
    /// keep-alive connection is closed after it), so slow or silent clients cannot hold
    /// connections open.
    pub header_read_timeout: Duration,
    /// Connections held open at once; at the cap the listener stops accepting until one
    /// closes (further clients wait in the kernel's backlog).
    pub max_connections: usize,
    /// A cached JWKS older than this is refreshed in the background while still in use.
    pub jwks_max_age: Duration,
    /// How often each instance looks for due reminders (`REMINDERS_POLL_MILLISECONDS`).
    pub reminders_poll: Duration,
    /// The bearer token `GET /metrics` requires; `None`: the route is a 404.
    pub metrics_token: Option<Secret>,
    /// Task events: outbox, relay, sinks and feed (`EVENTS_*`, `DAPR_*`).
    pub events: crate::events::EventSettings,
    /// The longest a sign-up or login may expect to wait for its hash (queue and hash); one
    /// that would wait longer gets a 503 at once. Below `request_timeout`.
    pub password_hash_max_wait: Duration,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://todo.db";
pub const MIN_SECRET_BYTES: usize = 32;
/// A guessable metrics token would make `/metrics` public.
pub const MIN_METRICS_TOKEN_BYTES: usize = 16;

/// A configuration problem: which variable, and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        Self {
            variable,
            reason: reason.into(),
        }
    }
}

impl Settings {
    /// The documented defaults, on the given database.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            app_env: AppEnv::Development,
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            database_url: Secret::new(database_url),
            database_max_connections: 10,
            database_acquire_timeout: Duration::from_secs(5),
            jwt_secret: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: Duration::from_secs(60),
            better_auth_url: None,
            jwks_url: None,
            jwks_refetch_interval: Duration::from_secs(10),
            jwks_fetch_timeout: Duration::from_secs(5),
            token_ttl: Duration::from_secs(24 * 60 * 60),
            bcrypt_cost: 12,
            cors_origins: Vec::new(),
            max_body_bytes: 128 * 1024,
            // Above 64 KiB: an oversized bearer token must still get its 401, not a 431.
            max_header_bytes: 128 * 1024,
            request_timeout: Duration::from_secs(30),
            max_page_size: 100,
            listing_cache_max_bytes: 16 * 1024 * 1024,
            log_format: LogFormat::Text,
            database_startup_timeout: Duration::from_secs(30),
            migrate_on_start: true,
            shutdown_grace: Duration::from_secs(30),
            auth_rate_limit_per_ip: 30,
            auth_rate_limit_per_account: 10,
            auth_rate_limit_per_account_global: None,
            trusted_proxies: TrustedProxies::default(),
            // Every core: the pool threads run at the lowest priority, so the task routes
            // still get a core the moment they need it.
            password_hash_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            // Room for 100 logins at once and then some; the wait bound usually decides first.
            password_hash_queue: 256,
            // 100 logins at once at cost 12 on two cores wait about 12 s: they all fit, with
            // room left within the 30 s request timeout for the database and the answer.
            password_hash_max_wait: Duration::from_secs(20),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            jwks_max_age: Duration::from_secs(300),
            reminders_poll: Duration::from_millis(1000),
            metrics_token: None,
            events: crate::events::EventSettings::default(),
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so that parsing can be tested without touching the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut settings =
            Self::new(get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()));
        database_kind(settings.database_url.expose())?;

        if let Some(value) = get("APP_ENV") {
            settings.app_env = match value.trim().to_ascii_lowercase().as_str() {
                "development" | "dev" => AppEnv::Development,
                "production" | "prod" => AppEnv::Production,
                _ => {
                    return Err(ConfigError::new(
                        "APP_ENV",
                        "must be development or production",
                    ));
                }
            };
        }
        if let Some(value) = get("HOST") {
            settings.host = value.trim().parse().map_err(|_| {
                ConfigError::new("HOST", "must be an IP address such as 127.0.0.1 or 0.0.0.0")
            })?;
        }
        if let Some(value) = get("PORT") {
            settings.port = parse_in_range("PORT", &value, 0, u16::MAX as u64)? as u16;
        }
        if let Some(value) = get("DATABASE_MAX_CONNECTIONS") {
            settings.database_max_connections =
                parse_in_range("DATABASE_MAX_CONNECTIONS", &value, 1, 1000)? as u32;
        }
        if let Some(value) = get("DATABASE_ACQUIRE_TIMEOUT_SECONDS") {
            settings.database_acquire_timeout = Duration::from_secs(parse_in_range(
                "DATABASE_ACQUIRE_TIMEOUT_SECONDS",
                &value,
                1,
                300,
            )?);
        }
        if let Some(value) = lookup("BETTER_AUTH_SECRET").filter(|v| !v.is_empty()) {
            if value.len() < MIN_SECRET_BYTES {
                return Err(ConfigError::new(
                    "BETTER_AUTH_SECRET",
                    format!(
                        "must be at least {MIN_SECRET_BYTES} bytes long (it is {}); generate one with `openssl rand -base64 32`",
                        value.len()
                    ),
                ));
            }
            settings.jwt_secret = Some(Secret::new(value));
        } else if settings.app_env == AppEnv::Production {
            return Err(ConfigError::new(
                "BETTER_AUTH_SECRET",
                "must be set when APP_ENV=production",
            ));
        }
        settings.jwt_issuer = get("JWT_ISSUER").map(|v| v.trim().to_owned());
        settings.jwt_audience = get("JWT_AUDIENCE").map(|v| v.trim().to_owned());
        if let Some(value) = get("JWT_LEEWAY_SECONDS") {
            settings.jwt_leeway =
                Duration::from_secs(parse_in_range("JWT_LEEWAY_SECONDS", &value, 0, 600)?);
        }
        if let Some(value) = get("BETTER_AUTH_URL") {
            settings.better_auth_url = Some(parse_http_url("BETTER_AUTH_URL", &value)?);
        }
        if let Some(value) = get("JWKS_URL") {
            settings.jwks_url = Some(parse_http_url("JWKS_URL", &value)?);
        }
        if settings.jwks_url.is_some() && settings.better_auth_url.is_none() {
            for (name, value) in [
                ("JWT_ISSUER", &settings.jwt_issuer),
                ("JWT_AUDIENCE", &settings.jwt_audience),
            ] {
                if value.is_none() {
                    return Err(ConfigError::new(
                        name,
                        "must be set when JWKS_URL is set without BETTER_AUTH_URL (it is the expected claim of JWKS-signed tokens)",
                    ));
                }
            }
        }
        if let Some(value) = get("JWKS_REFETCH_INTERVAL_SECONDS") {
            settings.jwks_refetch_interval = Duration::from_secs(parse_in_range(
                "JWKS_REFETCH_INTERVAL_SECONDS",
                &value,
                1,
                3600,
            )?);
        }
        if let Some(value) = get("JWKS_FETCH_TIMEOUT_SECONDS") {
            settings.jwks_fetch_timeout =
                Duration::from_secs(parse_in_range("JWKS_FETCH_TIMEOUT_SECONDS", &value, 1, 60)?);
        }
        if let Some(value) = get("JWT_EXPIRES_IN_SECONDS") {
            settings.token_ttl = Duration::from_secs(parse_in_range(
                "JWT_EXPIRES_IN_SECONDS",
                &value,
                60,
                30 * 24 * 60 * 60,
            )?);
        }
        if let Some(value) = get("BCRYPT_COST") {
            settings.bcrypt_cost = parse_in_range("BCRYPT_COST", &value, 4, 31)? as u32;
        }
        if let Some(value) = get("CORS_ORIGINS") {
            settings.cors_origins = parse_origins(&value)?;
        }
        if let Some(value) = get("MAX_BODY_BYTES") {
            settings.max_body_bytes =
                parse_in_range("MAX_BODY_BYTES", &value, 1024, 16 * 1024 * 1024)? as usize;
        }
        if let Some(value) = get("MAX_HEADER_BYTES") {
            settings.max_header_bytes =
                parse_in_range("MAX_HEADER_BYTES", &value, 1024, 1024 * 1024)? as usize;
        }
        if let Some(value) = get("REQUEST_TIMEOUT_SECONDS") {
            settings.request_timeout =
                Duration::from_secs(parse_in_range("REQUEST_TIMEOUT_SECONDS", &value, 1, 3600)?);
        }
        if let Some(value) = get("MAX_PAGE_SIZE") {
            settings.max_page_size = parse_in_range("MAX_PAGE_SIZE", &value, 1, 1000)? as u32;
        }
        if let Some(value) = get("LISTING_CACHE_MAX_BYTES") {
            settings.listing_cache_max_bytes =
                parse_in_range("LISTING_CACHE_MAX_BYTES", &value, 0, 1 << 30)?;
        }
        if let Some(value) = get("DATABASE_STARTUP_TIMEOUT_SECONDS") {
            settings.database_startup_timeout = Duration::from_secs(parse_in_range(
                "DATABASE_STARTUP_TIMEOUT_SECONDS",
                &value,
                0,
                3600,
            )?);
        }
        settings.migrate_on_start = !is_pgbouncer_url(settings.database_url.expose());
        if let Some(value) = get("MIGRATE_ON_START") {
            settings.migrate_on_start = parse_bool("MIGRATE_ON_START", &value)?;
        }
        if let Some(value) = get("SHUTDOWN_GRACE_SECONDS") {
            settings.shutdown_grace =
                Duration::from_secs(parse_in_range("SHUTDOWN_GRACE_SECONDS", &value, 0, 3600)?);
        }
        if let Some(value) = get("AUTH_RATE_LIMIT_PER_IP") {
            settings.auth_rate_limit_per_ip =
                parse_in_range("AUTH_RATE_LIMIT_PER_IP", &value, 0, 1_000_000)? as u32;
        }
        if let Some(value) = get("AUTH_RATE_LIMIT_PER_ACCOUNT") {
            settings.auth_rate_limit_per_account =
                parse_in_range("AUTH_RATE_LIMIT_PER_ACCOUNT", &value, 0, 1_000_000)? as u32;
        }
        if let Some(value) = get("AUTH_RATE_LIMIT_PER_ACCOUNT_GLOBAL") {
            settings.auth_rate_limit_per_account_global =
                Some(
                    parse_in_range("AUTH_RATE_LIMIT_PER_ACCOUNT_GLOBAL", &value, 0, 1_000_000)?
                        as u32,
                );
        }
        if let Some(value) = get("TRUSTED_PROXIES") {
            settings.trusted_proxies.networks = parse_networks("TRUSTED_PROXIES", &value)?;
        }
        if let Some(value) = get("TRUSTED_PROXY_HEADER") {
            settings.trusted_proxies.header = match value.trim().to_ascii_lowercase().as_str() {
                "x-forwarded-for" => ForwardingHeader::XForwardedFor,
                "forwarded" => ForwardingHeader::Forwarded,
                _ => {
                    return Err(ConfigError::new(
                        "TRUSTED_PROXY_HEADER",
                        "must be x-forwarded-for or forwarded",
                    ));
                }
            };
        }
        if let Some(value) = get("PASSWORD_HASH_CONCURRENCY") {
            settings.password_hash_concurrency =
                parse_in_range("PASSWORD_HASH_CONCURRENCY", &value, 1, 256)? as usize;
        }
        if let Some(value) = get("PASSWORD_HASH_QUEUE") {
            settings.password_hash_queue =
                parse_in_range("PASSWORD_HASH_QUEUE", &value, 0, 100_000)? as usize;
        }
        if let Some(value) = get("REMINDERS_POLL_MILLISECONDS") {
            settings.reminders_poll = Duration::from_millis(parse_in_range(
                "REMINDERS_POLL_MILLISECONDS",
                &value,
                50,
                60_000,
            )?);
        }
        if let Some(value) = get("HEADER_READ_TIMEOUT_SECONDS") {
            settings.header_read_timeout = Duration::from_secs(parse_in_range(
                "HEADER_READ_TIMEOUT_SECONDS",
                &value,
                1,
                300,
            )?);
        }
        if let Some(value) = get("MAX_CONNECTIONS") {
            settings.max_connections =
                parse_in_range("MAX_CONNECTIONS", &value, 1, 1_000_000)? as usize;
        }
        if let Some(value) = get("JWKS_MAX_AGE_SECONDS") {
            settings.jwks_max_age =
                Duration::from_secs(parse_in_range("JWKS_MAX_AGE_SECONDS", &value, 1, 86_400)?);
        }
        if let Some(value) = lookup("METRICS_TOKEN").filter(|v| !v.is_empty()) {
            if value.len() < MIN_METRICS_TOKEN_BYTES {
                return Err(ConfigError::new(
                    "METRICS_TOKEN",
                    format!("must be at least {MIN_METRICS_TOKEN_BYTES} bytes long"),
                ));
            }
            settings.metrics_token = Some(Secret::new(value));
        }
        settings.events = crate::events::EventSettings::from_lookup(get)?;
        match get("PASSWORD_HASH_MAX_WAIT_SECONDS") {
            Some(value) => {
                let seconds = parse_in_range("PASSWORD_HASH_MAX_WAIT_SECONDS", &value, 1, 3600)?;
                if Duration::from_secs(seconds) >= settings.request_timeout {
                    return Err(ConfigError::new(
                        "PASSWORD_HASH_MAX_WAIT_SECONDS",
                        format!(
                            "must be less than REQUEST_TIMEOUT_SECONDS ({}), or a login admitted to wait would time out",
                            settings.request_timeout.as_secs()
                        ),
                    ));
                }
                settings.password_hash_max_wait = Duration::from_secs(seconds);
            }
            // A shorter request timeout shortens the default wait with it.
            None => {
                settings.password_hash_max_wait = settings
                    .password_hash_max_wait
                    .min(settings.request_timeout * 2 / 3);
            }
        }
        if let Some(value) = get("LOG_FORMAT") {
            settings.log_format = match value.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(ConfigError::new("LOG_FORMAT", "must be text or json")),
            };
        }
        Ok(settings)
    }

    pub fn database_kind(&self) -> Result<DatabaseKind, ConfigError> {
        database_kind(self.database_url.expose())
    }

    /// What `DATABASE_URL` means, in the form the database driver reads; see
    /// [`database_url`] for the spellings accepted and refused.
    pub fn database(&self) -> Result<Database, ConfigError> {
        database_url::resolve_here(self.database_url.expose())
            .map_err(|reason| ConfigError::new("DATABASE_URL", reason))
    }

    /// Where Better Auth's key set is and what its tokens must claim; `None` when neither
    /// `BETTER_AUTH_URL` nor `JWKS_URL` is set (HS256 only).
    pub fn jwks(&self) -> Option<JwksSettings> {
        let origin = self
            .better_auth_url
            .as_ref()
            .map(|url| url.origin().ascii_serialization());
        let url = match (&self.jwks_url, &origin) {
            (Some(url), _) => url.clone(),
            (None, Some(origin)) => url::Url::parse(&format!("{origin}/api/auth/jwks")).ok()?,
            (None, None) => return None,
        };
        Some(JwksSettings {
            url,
            issuer: self.jwt_issuer.clone().or_else(|| origin.clone())?,
            audience: self.jwt_audience.clone().or(origin)?,
        })
    }
}

/// The key set of a Better Auth server and the claims its tokens must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksSettings {
    pub url: url::Url,
    pub issuer: String,
    pub audience: String,
}

fn parse_http_url(variable: &'static str, value: &str) -> Result<url::Url, ConfigError> {
    url::Url::parse(value.trim())
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
        .ok_or_else(|| ConfigError::new(variable, "must be an http:// or https:// URL"))
}

fn database_kind(url: &str) -> Result<DatabaseKind, ConfigError> {
    match database_url::resolve_here(url) {
        Ok(Database::Sqlite { .. }) => Ok(DatabaseKind::Sqlite),
        Ok(Database::Postgres { .. }) => Ok(DatabaseKind::Postgres),
        Err(reason) => Err(ConfigError::new("DATABASE_URL", reason)),
    }
}

fn parse_bool(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(variable, "must be true or false")),
    }
}

/// Whether a PostgreSQL URL says it goes through PgBouncer (`pgbouncer=true`, the convention
/// other tools use), where named prepared statements cannot be used.
pub fn is_pgbouncer_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|url| {
        url.query_pairs()
            .any(|(key, value)| key == "pgbouncer" && matches!(&*value, "true" | "1"))
    })
}

fn parse_in_range(
    variable: &'static str,
    value: &str,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            ConfigError::new(
                variable,
                format!("must be a whole number from {min} to {max}"),
            )
        })
}

/// Comma-separated IP addresses and CIDR ranges, IPv4 or IPv6 (`10.0.0.0/8, ::1`).
fn parse_networks(variable: &'static str, value: &str) -> Result<Vec<IpNet>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        variable,
                        format!(
                            "{entry:?} is not an IP address or CIDR range such as 10.0.0.0/8 or fd00::/8"
                        ),
                    )
                })
        })
        .collect()
}

fn parse_origins(value: &str) -> Result<Vec<String>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let valid = origin == "*"
                || url::Url::parse(origin)
                    .map(|url| {
                        matches!(url.scheme(), "http" | "https")
                            && url.host().is_some()
                            && url.origin().ascii_serialization() == origin.trim_end_matches('/')
                    })
                    .unwrap_or(false);
            if valid {
                Ok(origin.trim_end_matches('/').to_owned())
            } else {
                Err(ConfigError::new(
                    "CORS_ORIGINS",
                    format!("{origin:?} is not an origin such as https://app.example.com"),
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn no_variables_give_the_documented_defaults() {
        let settings = parse(&[]).unwrap();
        assert_eq!(settings.port, 8000);
        assert_eq!(settings.host.to_string(), "127.0.0.1");
        assert_eq!(settings.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(settings.database_kind().unwrap(), DatabaseKind::Sqlite);
        assert!(settings.jwt_secret.is_none());
        assert_eq!(settings.bcrypt_cost, 12);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (name, value) in [
            ("PORT", "eighty"),
            ("PORT", "70000"),
            ("HOST", "localhost:80"),
            ("DATABASE_URL", "mysql://x"),
            ("DATABASE_URL", "sqlite:///todo.db"),
            ("DATABASE_URL", "sqlite://"),
            (
                "DATABASE_URL",
                "postgresql+asyncpg://db/todo?command_timeout=5",
            ),
            ("APP_ENV", "staging"),
            ("BETTER_AUTH_SECRET", "too-short"),
            ("BCRYPT_COST", "3"),
            ("CORS_ORIGINS", "not a url"),
            ("LOG_FORMAT", "xml"),
            ("BETTER_AUTH_URL", "not a url"),
            ("JWKS_URL", "ftp://keys.example.com/jwks"),
            ("JWT_LEEWAY_SECONDS", "-1"),
        ] {
            let error = parse(&[(name, value)]).unwrap_err();
            assert_eq!(error.variable, name, "{name}={value}");
            assert!(error.to_string().contains(name));
        }
    }

    #[test]
    fn sqlalchemy_database_urls_are_read_with_their_meaning() {
        let settings = parse(&[(
            "DATABASE_URL",
            "postgresql+asyncpg://u@db/todo?ssl=require&pgbouncer=true",
        )])
        .unwrap();
        assert_eq!(settings.database_kind().unwrap(), DatabaseKind::Postgres);
        assert!(!settings.migrate_on_start, "pgbouncer=true is still seen");
        assert_eq!(
            settings.database().unwrap(),
            Database::Postgres {
                url: "postgresql://u@db/todo?sslmode=require&pgbouncer=true".into()
            }
        );
        let settings = parse(&[("DATABASE_URL", "sqlite:///./todo.db")]).unwrap();
        let here = std::fs::canonicalize(".").unwrap().join("todo.db");
        assert_eq!(
            settings.database().unwrap(),
            Database::Sqlite {
                location: SqliteLocation::File(here),
                params: None
            }
        );
    }

    #[test]
    fn a_short_secret_is_not_echoed_in_the_error() {
        let error = parse(&[("BETTER_AUTH_SECRET", "hunter2-secret")]).unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
    }

    #[test]
    fn production_requires_a_secret() {
        let error = parse(&[("APP_ENV", "production")]).unwrap_err();
        assert_eq!(error.variable, "BETTER_AUTH_SECRET");
        let secret = "x".repeat(32);
        assert!(parse(&[("APP_ENV", "production"), ("BETTER_AUTH_SECRET", &secret)]).is_ok());
    }

    #[test]
    fn better_auth_url_gives_the_jwks_location_and_expected_claims() {
        let settings = parse(&[("BETTER_AUTH_URL", "https://app.example.com/some/path")]).unwrap();
        let jwks = settings.jwks().unwrap();
        assert_eq!(jwks.url.as_str(), "https://app.example.com/api/auth/jwks");
        assert_eq!(jwks.issuer, "https://app.example.com");
        assert_eq!(jwks.audience, "https://app.example.com");
        assert!(parse(&[]).unwrap().jwks().is_none());
    }

    #[test]
    fn explicit_jwks_url_and_claims_override_the_better_auth_origin() {
        let settings = parse(&[
            ("BETTER_AUTH_URL", "http://localhost:3000"),
            ("JWKS_URL", "http://127.0.0.1:4000/keys"),
            ("JWT_AUDIENCE", "todo-api"),
        ])
        .unwrap();
        let jwks = settings.jwks().unwrap();
        assert_eq!(jwks.url.as_str(), "http://127.0.0.1:4000/keys");
        assert_eq!(jwks.issuer, "http://localhost:3000");
        assert_eq!(jwks.audience, "todo-api");
    }

    #[test]
    fn a_jwks_url_alone_needs_explicit_claims() {
        let error = parse(&[("JWKS_URL", "http://127.0.0.1:4000/keys")]).unwrap_err();
        assert_eq!(error.variable, "JWT_ISSUER");
    }

    #[test]
    fn hardening_settings_parse_and_bad_values_name_their_variable() {
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.header_read_timeout, Duration::from_secs(10));
        assert_eq!(defaults.max_connections, 1024);
        assert_eq!(defaults.jwks_max_age, Duration::from_secs(300));
        assert!(defaults.metrics_token.is_none());
        let token = "m".repeat(MIN_METRICS_TOKEN_BYTES);
        let settings = parse(&[
            ("HEADER_READ_TIMEOUT_SECONDS", "3"),
            ("MAX_CONNECTIONS", "7"),
            ("JWKS_MAX_AGE_SECONDS", "2"),
            ("METRICS_TOKEN", &token),
        ])
        .unwrap();
        assert_eq!(settings.header_read_timeout, Duration::from_secs(3));
        assert_eq!(settings.max_connections, 7);
        assert_eq!(settings.jwks_max_age, Duration::from_secs(2));
        assert_eq!(settings.metrics_token.unwrap().expose(), token);
        for (name, value) in [
            ("HEADER_READ_TIMEOUT_SECONDS", "0"),
            ("MAX_CONNECTIONS", "0"),
            ("JWKS_MAX_AGE_SECONDS", "soon"),
            ("METRICS_TOKEN", "short-token"),
        ] {
            let error = parse(&[(name, value)]).unwrap_err();
            assert_eq!(error.variable, name, "{name}={value}");
            assert!(!error.to_string().contains("short-token"));
        }
    }

    #[test]
    fn the_listing_cache_takes_bytes_up_to_a_gibibyte_and_0_turns_it_off() {
        assert_eq!(
            parse(&[]).unwrap().listing_cache_max_bytes,
            16 * 1024 * 1024
        );
        for (value, bytes) in [("0", 0), ("1", 1), ("1073741824", 1 << 30)] {
            let settings = parse(&[("LISTING_CACHE_MAX_BYTES", value)]).unwrap();
            assert_eq!(settings.listing_cache_max_bytes, bytes, "{value}");
        }
        for value in ["-1", "1073741825", "16MiB"] {
            let error = parse(&[("LISTING_CACHE_MAX_BYTES", value)]).unwrap_err();
            assert_eq!(error.variable, "LISTING_CACHE_MAX_BYTES", "{value:?}");
        }
    }

    #[test]
    fn the_hashing_wait_is_bounded_below_the_request_timeout() {
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.password_hash_max_wait, Duration::from_secs(20));
        assert_eq!(defaults.password_hash_queue, 256);
        assert!(defaults.password_hash_concurrency >= 1);

        let set = parse(&[("PASSWORD_HASH_MAX_WAIT_SECONDS", "5")]).unwrap();
        assert_eq!(set.password_hash_max_wait, Duration::from_secs(5));
        for value in ["0", "30", "ten"] {
            let error = parse(&[("PASSWORD_HASH_MAX_WAIT_SECONDS", value)]).unwrap_err();
            assert_eq!(error.variable, "PASSWORD_HASH_MAX_WAIT_SECONDS", "{value}");
        }
        let shorter = parse(&[("REQUEST_TIMEOUT_SECONDS", "6")]).unwrap();
        assert_eq!(shorter.password_hash_max_wait, Duration::from_secs(4));
        // The settings of before stay accepted.
        let old = parse(&[
            ("PASSWORD_HASH_CONCURRENCY", "1"),
            ("PASSWORD_HASH_QUEUE", "64"),
        ])
        .unwrap();
        assert_eq!(old.password_hash_concurrency, 1);
        assert_eq!(old.password_hash_queue, 64);
    }

    #[test]
    fn cors_origins_are_split_and_checked() {
        let settings = parse(&[(
            "CORS_ORIGINS",
            "http://localhost:3000, https://app.example.com/",
        )])
        .unwrap();
        assert_eq!(
            settings.cors_origins,
            ["http://localhost:3000", "https://app.example.com"]
        );
    }

    #[test]
    fn trusted_proxies_take_addresses_and_ranges_of_both_families() {
        let settings = parse(&[(
            "TRUSTED_PROXIES",
            " 10.0.0.0/8, 192.0.2.7 ,fd00::/8,::1, 172.16.5.4/12",
        )])
        .unwrap();
        let nets: Vec<String> = settings
            .trusted_proxies
            .networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            nets,
            [
                "10.0.0.0/8",
                "192.0.2.7/32",
                "fd00::/8",
                "::1/128",
                "172.16.0.0/12"
            ]
        );
        assert_eq!(
            settings.trusted_proxies.header,
            ForwardingHeader::XForwardedFor
        );
        assert!(parse(&[]).unwrap().trusted_proxies.networks.is_empty());
        let forwarded = parse(&[("TRUSTED_PROXY_HEADER", "Forwarded")]).unwrap();
        assert_eq!(
            forwarded.trusted_proxies.header,
            ForwardingHeader::Forwarded
        );
    }

    #[test]
    fn a_bad_trusted_proxy_or_limit_stops_start_up_naming_its_variable() {
        for (name, value) in [
            ("TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("TRUSTED_PROXIES", "10.0.0.1:80"),
            ("TRUSTED_PROXY_HEADER", "x-real-ip"),
            ("AUTH_RATE_LIMIT_PER_ACCOUNT_GLOBAL", "-1"),
        ] {
            let error = parse(&[(name, value)]).unwrap_err();
            assert_eq!(error.variable, name, "{name}={value}");
        }
        let global = parse(&[("AUTH_RATE_LIMIT_PER_ACCOUNT_GLOBAL", "0")]).unwrap();
        assert_eq!(global.auth_rate_limit_per_account_global, Some(0));
        assert_eq!(parse(&[]).unwrap().auth_rate_limit_per_account_global, None);
    }
}
