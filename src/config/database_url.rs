//! `DATABASE_URL` in every spelling people paste: sqlx's (`sqlite://todo.db`), SQLAlchemy's
//! (`sqlite:///./todo.db`, `sqlite:////abs/todo.db`, `postgresql+asyncpg://…`), resolved to
//! one [`Database`] with one meaning, or refused naming what each reading would mean.
//!
//! SQLite URLs are where the two conventions disagree: sqlx reads `sqlite:///x/y.db` as the
//! absolute `/x/y.db`, SQLAlchemy as `x/y.db` relative to the working directory. A URL is
//! accepted only when its reading is unambiguous, so data never lands silently somewhere
//! else (such as the filesystem root, outside a mounted volume):
//!
//! | URL | file |
//! | --- | --- |
//! | `sqlite://todo.db`, `sqlite:todo.db` | `todo.db` in the working directory (sqlx's relative form) |
//! | `sqlite:///./todo.db`, `sqlite:///../data/todo.db` | relative to the working directory (SQLAlchemy's relative form) |
//! | `sqlite:////var/lib/todo/todo.db` | `/var/lib/todo/todo.db` (SQLAlchemy's absolute form) |
//! | `sqlite:///var/lib/todo/todo.db` | `/var/lib/todo/todo.db` when `/var/lib/todo` exists and `var/lib/todo` in the working directory does not; otherwise refused, naming both |
//! | `sqlite:///todo.db` | refused: sqlx would put it in `/`, SQLAlchemy in the working directory |
//! | `sqlite::memory:`, `sqlite://:memory:`, `sqlite:///:memory:` | in memory, lost at exit |
//! | `sqlite://`, `sqlite:` | refused: names no file (SQLAlchemy's in-memory spelling, or an unset variable in a template) |
//!
//! `sqlite+aiosqlite://` and `sqlite+pysqlite://` read as `sqlite://`. The file's directory
//! must exist. PostgreSQL URLs may carry a SQLAlchemy driver (`postgresql+psycopg2://`,
//! `postgresql+asyncpg://` …), which is dropped; asyncpg's `ssl=require` becomes libpq's
//! `sslmode=require`, and asyncpg-only parameters this service cannot honour are refused by
//! name.

use std::path::{Component, Path, PathBuf};

/// What a `DATABASE_URL` resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// An SQLite database; `params` is the URL's query string for sqlx (`mode=ro` …).
    Sqlite {
        location: SqliteLocation,
        params: Option<String>,
    },
    /// A PostgreSQL URL in the form sqlx reads (`postgresql://…`, libpq parameters).
    Postgres { url: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqliteLocation {
    /// An absolute path, its directory resolved (symbolic links and `..` followed).
    File(PathBuf),
    /// An in-memory database: its data is lost when the process exits.
    Memory,
}

/// The SQLite URL parameters sqlx understands, plus SQLAlchemy's `check_same_thread`
/// (meaningless here, so ignored rather than refused).
const SQLITE_PARAMS: &[&str] = &["mode", "cache", "immutable", "vfs"];
const IGNORED_SQLITE_PARAMS: &[&str] = &["check_same_thread"];

/// asyncpg connection arguments that SQLAlchemy passes on from the URL and that have no
/// equivalent here; silently dropping them would change behaviour the user asked for.
const ASYNCPG_ONLY_PARAMS: &[&str] = &[
    "prepared_statement_cache_size",
    "statement_cache_size",
    "max_cached_statement_lifetime",
    "max_cacheable_statement_size",
    "command_timeout",
    "server_settings",
    "direct_tls",
];

/// libpq's `sslmode` values, which asyncpg's `ssl` parameter also takes.
const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// Resolves `url` against the working directory `cwd`. `directory` answers whether a path is
/// an existing directory, and with its canonical form (symbolic links and `..` resolved); it
/// is a parameter so that the rules can be tested without a filesystem. The error is the
/// reason, for `DATABASE_URL`.
pub fn resolve(
    url: &str,
    cwd: &Path,
    directory: impl Fn(&Path) -> Option<PathBuf>,
) -> Result<Database, String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once(':').ok_or_else(unknown_scheme)?;
    let (base, driver) = match scheme.split_once('+') {
        Some((base, driver)) => (base, Some(driver)),
        None => (scheme, None),
    };
    if driver.is_some_and(|driver| {
        driver.is_empty()
            || !driver
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }) {
        return Err(unknown_scheme());
    }
    match base {
        "sqlite" => resolve_sqlite(url, rest, cwd, &directory),
        "postgres" | "postgresql" => resolve_postgres(url),
        _ => Err(unknown_scheme()),
    }
}

/// The resolver of [`resolve`] on the real filesystem, from the process's working directory.
pub fn resolve_here(url: &str) -> Result<Database, String> {
    let cwd = std::env::current_dir()
        .map_err(|error| format!("the working directory cannot be read: {error}"))?;
    resolve(url, &cwd, |path| {
        std::fs::canonicalize(path)
            .ok()
            .filter(|path| path.is_dir())
    })
}

fn unknown_scheme() -> String {
    "must start with sqlite:, postgres:// or postgresql:// (SQLAlchemy's sqlite+DRIVER: and \
     postgresql+DRIVER:// are read the same way)"
        .to_owned()
}

fn resolve_sqlite(
    url: &str,
    rest: &str,
    cwd: &Path,
    directory: &impl Fn(&Path) -> Option<PathBuf>,
) -> Result<Database, String> {
    let (path, params) = match rest.split_once('?') {
        Some((path, params)) => (path, Some(params)),
        None => (rest, None),
    };
    let params = sqlite_params(params)?;
    let memory_param = params
        .as_deref()
        .is_some_and(|params| params.split('&').any(|pair| pair == "mode=memory"));
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| "the SQLite path is not valid UTF-8 once percent-decoded".to_owned())?;
    let memory = || {
        Ok(Database::Sqlite {
            location: SqliteLocation::Memory,
            params: params.clone(),
        })
    };
    let file = |path: PathBuf| {
        Ok(Database::Sqlite {
            location: SqliteLocation::File(existing_directory(&path, directory)?),
            params: params.clone(),
        })
    };
    let relative = |path: &str| file(join(cwd, path));

    match path.strip_prefix("//") {
        // `sqlite:////abs/todo.db`: SQLAlchemy's absolute form (sqlx reads the same file).
        Some(after) if after.starts_with("//") => file(PathBuf::from(&after[1..])),
        // `sqlite:///…`: the form the two conventions read differently.
        Some(after) if after.starts_with('/') => {
            let tail = &after[1..];
            if tail == ":memory:" {
                return memory();
            }
            if tail.is_empty() {
                return Err(no_file(url));
            }
            if tail == "." || tail == ".." || tail.starts_with("./") || tail.starts_with("../") {
                return relative(tail);
            }
            three_slashes(url, tail, cwd, directory).and_then(file)
        }
        Some(":memory:") => memory(),
        Some("") if memory_param => memory(),
        Some("") => Err(no_file(url)),
        // `sqlite://todo.db`: sqlx's relative form, the default.
        Some(after) => relative(after),
        None if path == ":memory:" => memory(),
        None if path.is_empty() && memory_param => memory(),
        None if path.is_empty() => Err(no_file(url)),
        // `sqlite:/abs/todo.db` or `sqlite:todo.db`: sqlx's forms, unambiguous.
        None => file(join(cwd, &path)),
    }
}

fn no_file(url: &str) -> String {
    let scheme = url.split(':').next().unwrap_or("sqlite");
    format!(
        "{url} names no SQLite file; write {scheme}://todo.db (or {scheme}:///./todo.db) for a \
         file in the working directory, or sqlite::memory: for an in-memory database whose \
         data is lost at exit"
    )
}

/// `sqlite:///tail`: sqlx means `/tail`, SQLAlchemy `<cwd>/tail`. Accepted as `/tail` only
/// where nobody could have meant the other: its directory exists, is not the filesystem
/// root, and the working directory holds no such directory (or it is the same one).
fn three_slashes(
    url: &str,
    tail: &str,
    cwd: &Path,
    directory: &impl Fn(&Path) -> Option<PathBuf>,
) -> Result<PathBuf, String> {
    let absolute = Path::new("/").join(tail);
    let relative = join(cwd, tail);
    let scheme = url.split(':').next().unwrap_or("sqlite");
    let spell = |meaning: &str| {
        format!(
            "write {scheme}:///./{tail} for {} (SQLAlchemy's relative form) or \
             {scheme}:////{tail} for {} (the absolute path){meaning}",
            relative.display(),
            absolute.display(),
        )
    };
    let absolute_directory = absolute.parent().and_then(directory);
    if absolute_directory.as_deref() == Some(Path::new("/"))
        || absolute.parent() == Some(Path::new("/"))
    {
        return Err(format!(
            "{url} would put the database directly in the filesystem root ({}, sqlx's \
             reading), while SQLAlchemy reads it as {}; {}",
            absolute.display(),
            relative.display(),
            spell(""),
        ));
    }
    let relative_directory = relative.parent().and_then(directory);
    match (absolute_directory, relative_directory) {
        (Some(_), None) => Ok(absolute),
        (Some(a), Some(r)) if a == r => Ok(absolute),
        (a, r) => {
            let which = match (a, r) {
                (Some(_), Some(_)) => "both directories exist",
                (None, Some(_)) => "only the relative reading's directory exists",
                _ => "neither directory exists",
            };
            Err(format!(
                "{url} is ambiguous: sqlx reads it as {}, SQLAlchemy as {}, and {which}; {}",
                absolute.display(),
                relative.display(),
                spell(""),
            ))
        }
    }
}

/// `base` joined with `path`, without `.` components (so that messages name clean paths),
/// keeping a trailing `/` (which names a directory, not a file).
fn join(base: &Path, path: &str) -> PathBuf {
    let mut joined: PathBuf = base
        .join(path)
        .components()
        .filter(|component| *component != Component::CurDir)
        .collect();
    if path.ends_with('/') {
        joined.push("");
    }
    joined
}

/// `path` with its directory made canonical; an error naming the directory when it does not
/// exist (SQLite creates the file, never its directory).
fn existing_directory(
    path: &Path,
    directory: &impl Fn(&Path) -> Option<PathBuf>,
) -> Result<PathBuf, String> {
    let name = match path.components().next_back() {
        Some(Component::Normal(name)) if !path.as_os_str().as_encoded_bytes().ends_with(b"/") => {
            name
        }
        _ => {
            return Err(format!(
                "the SQLite path {} does not end in a file name",
                path.display()
            ));
        }
    };
    let parent = path.parent().unwrap_or(Path::new("/"));
    let resolved = directory(parent).ok_or_else(|| {
        format!(
            "the directory {} of the SQLite file {} does not exist (SQLite creates the file, \
             not its directory)",
            parent.display(),
            path.display()
        )
    })?;
    Ok(resolved.join(name))
}

fn sqlite_params(params: Option<&str>) -> Result<Option<String>, String> {
    let Some(params) = params else {
        return Ok(None);
    };
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (key, value) in url::form_urlencoded::parse(params.as_bytes()) {
        if IGNORED_SQLITE_PARAMS.contains(&&*key) {
            continue;
        }
        if !SQLITE_PARAMS.contains(&&*key) {
            return Err(format!(
                "the SQLite URL parameter {key:?} is not supported (supported: {})",
                SQLITE_PARAMS.join(", ")
            ));
        }
        kept.append_pair(&key, &value);
        any = true;
    }
    Ok(any.then(|| kept.finish()))
}

/// A PostgreSQL URL as sqlx reads it: any SQLAlchemy driver dropped, asyncpg's `ssl` mapped
/// to libpq's `sslmode`. Errors never include the URL, which may carry a password.
fn resolve_postgres(original: &str) -> Result<Database, String> {
    let mut url = url::Url::parse(original)
        .map_err(|error| format!("is not a valid PostgreSQL URL ({error})"))?;
    let refused: Vec<String> = url
        .query_pairs()
        .map(|(key, _)| key.into_owned())
        .filter(|key| ASYNCPG_ONLY_PARAMS.contains(&key.as_str()))
        .collect();
    if !refused.is_empty() {
        return Err(format!(
            "the asyncpg parameter(s) {} have no equivalent here; remove them (behind PgBouncer \
             in transaction mode, add pgbouncer=true instead of disabling the statement cache)",
            refused.join(", ")
        ));
    }
    let has_sslmode = url
        .query_pairs()
        .any(|(key, _)| key == "sslmode" || key == "ssl-mode");
    let mut pairs = Vec::new();
    for (key, value) in url.query_pairs() {
        if key == "ssl" {
            if has_sslmode {
                return Err("give either ssl (asyncpg) or sslmode (libpq), not both".to_owned());
            }
            if !SSL_MODES.contains(&&*value) {
                return Err(format!(
                    "ssl={value} is not one of {} (asyncpg's ssl parameter is read as libpq's \
                     sslmode)",
                    SSL_MODES.join(", ")
                ));
            }
            pairs.push(("sslmode".to_owned(), value.into_owned()));
        } else {
            pairs.push((key.into_owned(), value.into_owned()));
        }
    }
    let rebuilt = format!(
        "postgresql:{}",
        &url.as_str()[url.scheme().len() + 1..]
            .split('?')
            .next()
            .unwrap_or_default()
    );
    url = url::Url::parse(&rebuilt)
        .map_err(|error| format!("is not a valid PostgreSQL URL ({error})"))?;
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(pairs);
    }
    url.set_fragment(None);
    Ok(Database::Postgres {
        url: url.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CWD: &str = "/srv/app";
    /// The directories of the fake filesystem; `/srv/link` is a symbolic link to `/srv/app`.
    const DIRECTORIES: &[&str] = &[
        "/",
        "/srv",
        "/srv/app",
        "/srv/app/data",
        "/srv/data",
        "/var",
        "/var/lib",
        "/tmp",
        "/tmp/run",
        "/both",
        "/srv/app/both",
    ];

    fn fake_directory(path: &Path) -> Option<PathBuf> {
        // Lexical normalisation stands in for canonicalize.
        let mut normal = PathBuf::from("/");
        for component in path.components() {
            match component {
                Component::ParentDir => {
                    normal.pop();
                }
                Component::Normal(part) => normal.push(part),
                _ => {}
            }
        }
        let normal = normal
            .strip_prefix("/srv/link")
            .map_or(normal.clone(), |rest| Path::new(CWD).join(rest));
        DIRECTORIES
            .iter()
            .any(|dir| Path::new(dir) == normal)
            .then_some(normal)
    }

    fn resolve_fake(url: &str) -> Result<Database, String> {
        resolve(url, Path::new(CWD), fake_directory)
    }

    fn file(path: &str, params: Option<&str>) -> Database {
        Database::Sqlite {
            location: SqliteLocation::File(PathBuf::from(path)),
            params: params.map(str::to_owned),
        }
    }

    fn memory() -> Database {
        Database::Sqlite {
            location: SqliteLocation::Memory,
            params: None,
        }
    }

    fn postgres(url: &str) -> Database {
        Database::Postgres { url: url.into() }
    }

    #[test]
    fn each_accepted_spelling_has_one_meaning() {
        for (url, expected) in [
            // sqlx's relative forms; the default.
            ("sqlite://todo.db", file("/srv/app/todo.db", None)),
            ("sqlite:todo.db", file("/srv/app/todo.db", None)),
            ("sqlite://data/todo.db", file("/srv/app/data/todo.db", None)),
            // SQLAlchemy's relative forms.
            ("sqlite:///./todo.db", file("/srv/app/todo.db", None)),
            (
                "sqlite:///./data/todo.db",
                file("/srv/app/data/todo.db", None),
            ),
            ("sqlite:///../data/todo.db", file("/srv/data/todo.db", None)),
            (
                "sqlite+aiosqlite:///./todo.db",
                file("/srv/app/todo.db", None),
            ),
            (
                "sqlite+pysqlite:///./todo.db",
                file("/srv/app/todo.db", None),
            ),
            // Absolute forms.
            ("sqlite:////var/lib/todo.db", file("/var/lib/todo.db", None)),
            ("sqlite:////todo.db", file("/todo.db", None)),
            ("sqlite:/var/lib/todo.db", file("/var/lib/todo.db", None)),
            // Three slashes where only the absolute reading's directory exists (the tests'
            // own form: `sqlite://` and an absolute path).
            ("sqlite:///tmp/run/todo.db", file("/tmp/run/todo.db", None)),
            ("sqlite:///var/lib/todo.db", file("/var/lib/todo.db", None)),
            // Symbolic links and `..` are resolved in what is logged.
            (
                "sqlite:////srv/link/todo.db",
                file("/srv/app/todo.db", None),
            ),
            // Parameters: sqlx's are kept, SQLAlchemy's check_same_thread is dropped.
            (
                "sqlite://todo.db?mode=ro",
                file("/srv/app/todo.db", Some("mode=ro")),
            ),
            (
                "sqlite:///./todo.db?check_same_thread=false",
                file("/srv/app/todo.db", None),
            ),
            ("sqlite://my%20tasks.db", file("/srv/app/my tasks.db", None)),
            // In memory.
            ("sqlite::memory:", memory()),
            ("sqlite://:memory:", memory()),
            ("sqlite:///:memory:", memory()),
            // PostgreSQL, with and without SQLAlchemy's driver.
            (
                "postgres://u:p@db/todo",
                postgres("postgresql://u:p@db/todo"),
            ),
            (
                "postgresql://u:p@db/todo",
                postgres("postgresql://u:p@db/todo"),
            ),
            (
                "postgresql+psycopg2://u:p@db:5433/todo?sslmode=require",
                postgres("postgresql://u:p@db:5433/todo?sslmode=require"),
            ),
            (
                "postgresql+asyncpg://u:p@db/todo?ssl=require",
                postgres("postgresql://u:p@db/todo?sslmode=require"),
            ),
            (
                "postgresql+psycopg://db/todo?pgbouncer=true",
                postgres("postgresql://db/todo?pgbouncer=true"),
            ),
            (
                "postgres+pg8000://db/todo",
                postgres("postgresql://db/todo"),
            ),
        ] {
            assert_eq!(resolve_fake(url), Ok(expected), "{url}");
        }
    }

    #[test]
    fn each_ambiguous_or_impossible_spelling_is_refused_saying_why() {
        for (url, needles) in [
            // SQLAlchemy's `sqlite:///todo.db`: sqlx would write to the filesystem root.
            (
                "sqlite:///todo.db",
                &[
                    "/todo.db",
                    "/srv/app/todo.db",
                    "sqlite:///./todo.db",
                    "sqlite:////todo.db",
                    "root",
                ][..],
            ),
            (
                "sqlite+aiosqlite:///todo.db",
                &[
                    "sqlite+aiosqlite:///./todo.db",
                    "sqlite+aiosqlite:////todo.db",
                ],
            ),
            // Both readings' directories exist.
            (
                "sqlite:///both/todo.db",
                &[
                    "/both/todo.db",
                    "/srv/app/both/todo.db",
                    "both directories exist",
                ],
            ),
            // Only the relative reading's directory exists.
            (
                "sqlite:///data/todo.db",
                &[
                    "/data/todo.db",
                    "/srv/app/data/todo.db",
                    "sqlite:///./data/todo.db",
                ],
            ),
            // Neither.
            (
                "sqlite:///nowhere/todo.db",
                &["/nowhere/todo.db", "/srv/app/nowhere/todo.db", "neither"],
            ),
            // No file at all.
            ("sqlite://", &["names no SQLite file", "sqlite::memory:"]),
            ("sqlite:", &["names no SQLite file"]),
            ("sqlite:///", &["names no SQLite file"]),
            // A missing directory is named, not left to "unable to open database file".
            (
                "sqlite://missing/todo.db",
                &["/srv/app/missing", "does not exist"],
            ),
            (
                "sqlite:////missing/todo.db",
                &["/missing", "does not exist"],
            ),
            (
                "sqlite:///./missing/todo.db",
                &["/srv/app/missing", "does not exist"],
            ),
            ("sqlite://data/", &["file name"]),
            ("sqlite://todo.db?journal=wal", &["journal"]),
            ("mysql://db/todo", &["must start with"]),
            ("postgresql+://db/todo", &["must start with"]),
            (
                "postgresql+asyncpg://db/todo?prepared_statement_cache_size=0&command_timeout=5",
                &[
                    "prepared_statement_cache_size",
                    "command_timeout",
                    "pgbouncer=true",
                ],
            ),
            (
                "postgresql+asyncpg://db/todo?ssl=true",
                &["ssl=true", "verify-full"],
            ),
            (
                "postgresql+asyncpg://db/todo?ssl=require&sslmode=require",
                &["not both"],
            ),
        ] {
            let error = resolve_fake(url).expect_err(url);
            for needle in needles {
                assert!(error.contains(needle), "{url}: {error:?} lacks {needle:?}");
            }
        }
    }

    #[test]
    fn postgres_errors_never_echo_the_password() {
        let error =
            resolve_fake("postgresql+asyncpg://u:hunter2@db/todo?command_timeout=5").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn from_the_root_directory_three_slashes_read_the_same_both_ways() {
        let resolved = resolve("sqlite:///tmp/run/todo.db", Path::new("/"), fake_directory);
        assert_eq!(resolved, Ok(file("/tmp/run/todo.db", None)));
    }
}
