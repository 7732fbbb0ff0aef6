//! The `todo-api` binary: reads the configuration, then serves or migrates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use todo_api::{Application, Settings, storage, telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "Multi-user Todo REST API on SQLite (default) or PostgreSQL",
    after_help = "Configuration comes from the environment and a .env file: DATABASE_URL, \
                  BETTER_AUTH_SECRET, APP_ENV, HOST, PORT, JWT_ISSUER, JWT_AUDIENCE, \
                  JWT_EXPIRES_IN_SECONDS, BCRYPT_COST, CORS_ORIGINS, MAX_BODY_BYTES, \
                  DATABASE_MAX_CONNECTIONS, DATABASE_ACQUIRE_TIMEOUT_SECONDS, EVENTS_SINK and the \
                  other EVENTS_* / DAPR_* settings, RUST_LOG, LOG_FORMAT. See the README."
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
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

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let store = storage::connect(&settings).await?;
    store.migrate().await?;
    store.close().await;
    tracing::info!("migrations applied");
    Ok(())
}
