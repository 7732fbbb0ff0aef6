//! The `todo-api` binary: reads the configuration, then serves or migrates.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use todo_api::{Application, Settings, config::reference, storage, telemetry};

/// mimalloc rather than glibc's malloc: 11 % fewer instructions per PostgreSQL listing under
/// callgrind, most of it glibc's free-list consolidation (bench/README.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--help` ends with every setting, from the one table in `config::reference`.
#[derive(Parser)]
#[command(
    version,
    about = "Multi-user Todo REST API on SQLite (default) or PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Print the database's plan for one listing of a user's tasks, then exit: the very
    /// statement `GET /api/{user_id}/tasks` runs (the generic plan on PostgreSQL, `EXPLAIN
    /// QUERY PLAN` on SQLite). For example `todo-api explain alice 'sort_by=due_at&tag=work'`.
    Explain {
        /// The tasks' owner: a token subject.
        user_id: String,
        /// The listing's query string, without `?`.
        #[arg(default_value = "")]
        query: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command()
        .after_long_help(reference::help_text())
        .after_help(reference::help_text())
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("error: could not read .env: {error}");
        return ExitCode::FAILURE;
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(settings.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Explain { user_id, query } => explain(settings, &user_id, &query).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Once, on stderr like a bad setting: logging it as well would show the same text
        // twice in a terminal.
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}

async fn explain(settings: Settings, user_id: &str, query: &str) -> anyhow::Result<()> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)?;
    let query = todo_api::tasks::domain::ListQuery::parse(pairs, settings.max_page_size).map_err(
        |error| match error {
            todo_api::error::ApiError::Validation { errors, .. } => {
                let problems: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect();
                anyhow::anyhow!("the listing's query string: {}", problems.join("; "))
            }
            other => anyhow::anyhow!("the listing's query string: {other}"),
        },
    )?;
    let store = storage::connect(&settings).await?;
    let plan = store.explain_listing(user_id, &query).await;
    store.close().await;
    for line in plan? {
        println!("{line}");
    }
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let store = storage::connect(&settings).await?;
    store.migrate().await?;
    store.close().await;
    tracing::info!("migrations applied");
    Ok(())
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message
/// already holds (sqlx's errors, for one, repeat their source in their own text).
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let error = anyhow::anyhow!("unknown value \"x\" for `mode`")
            .context("error with configuration: unknown value \"x\" for `mode`")
            .context("could not connect to the database");
        assert_eq!(
            describe(&error),
            "could not connect to the database: error with configuration: unknown value \"x\" for `mode`"
        );
    }
}
