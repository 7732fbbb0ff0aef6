//! [`Application`]: connects storage, builds the router with its middleware, binds the
//! listener, and serves until a shutdown signal. Tests start the very same application on
//! port 0.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Extension, Router,
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tokio::net::TcpListener;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
};
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    auth::{
        self, jwks::JwksVerifier, password::PasswordHasher, rate_limit::AuthRateLimits,
        revocation::Revocations, token::TokenVerifier,
    },
    client_addr::{self, ClientAddr},
    config::Settings,
    error::{ApiError, RefusalReason, problem_for_bare_errors},
    events::{self, Events},
    extract::BodyLimit,
    observe::{self, Metrics, Observer, RefusalLog},
    openapi::{self, ApiDoc},
    ops,
    server::{self, ConnectionLimits},
    storage::{self, Store},
    tasks::{self, TaskService, listing_cache::ListingCache},
};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub tasks: TaskService,
    pub tokens: Arc<TokenVerifier>,
    pub passwords: PasswordHasher,
    pub rate_limits: Arc<AuthRateLimits>,
    pub revocations: Arc<Revocations>,
    pub max_page_size: u32,
    /// Listing bodies this instance answered, kept by the revision of their tasks.
    pub listings: ListingCache,
    /// Counters for `/metrics` and the summarised refusal log.
    pub observer: Arc<Observer>,
    /// The task-event outbox: relay lag, live feeds.
    pub events: Events,
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    store: Arc<dyn Store>,
    /// Reads revocations made through other instances; stopped before the pool closes.
    revocation_sync: tokio::task::JoinHandle<()>,
    limits: ConnectionLimits,
    events: Events,
    event_workers: Vec<tokio::task::JoinHandle<()>>,
    /// Sends due reminders; stopped before the pool closes.
    reminders: tokio::task::JoinHandle<()>,
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Application {
    /// Connects to the database (applying migrations), builds the router and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = storage::connect(&settings).await?;
        if settings.migrate_on_start {
            store.migrate().await?;
        }
        tracing::info!(
            database = ?settings.database_kind()?,
            migrated = settings.migrate_on_start,
            "database ready"
        );
        let secret = match &settings.jwt_secret {
            Some(secret) => secret.expose().as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "BETTER_AUTH_SECRET is not set: tokens are signed with a random secret and \
                     die with this process. Set it (32 bytes or more) for anything but a trial run."
                );
                rand::random::<[u8; 32]>().to_vec()
            }
        };
        let jwks = match settings.jwks() {
            Some(jwks) => {
                let verifier = Arc::new(JwksVerifier::new(jwks, &settings)?);
                // A Better Auth server that is down at start-up is not fatal: the keys are
                // fetched again when the first token needs them.
                verifier.refresh().await;
                Some(verifier)
            }
            None => None,
        };
        let revocations = Revocations::load(store.as_ref()).await?;
        let revocation_sync = revocations.spawn_sync(store.clone());
        let passwords = PasswordHasher::start(&settings)?;
        let events = Events::new(store.clone(), settings.events.clone());
        let reminders_sent = Arc::new(AtomicU64::new(0));
        let listings = ListingCache::new(settings.listing_cache_max_bytes);
        let observer = Arc::new(Observer::new(
            metrics(
                &passwords,
                jwks.clone(),
                &events,
                &reminders_sent,
                &listings,
            ),
            settings.metrics_token.clone(),
        ));
        RefusalLog::summarise_periodically(&observer.refusals);
        let task_service = TaskService::new(store.clone(), events.clone());
        let state = AppState {
            tasks: task_service.clone(),
            store: store.clone(),
            tokens: Arc::new(TokenVerifier::new(
                &secret,
                &settings,
                jwks.clone(),
                revocations.clone(),
            )),
            passwords,
            rate_limits: Arc::new(AuthRateLimits::new(&settings, store.attempt_limits())),
            revocations,
            max_page_size: settings.max_page_size,
            listings,
            observer,
            events: events.clone(),
        };
        let router = router(state, &settings);
        let address = SocketAddr::new(settings.host, settings.port);
        let listener = TcpListener::bind(address).await.map_err(|error| {
            anyhow::Error::new(error).context(format!(
                "cannot listen on {address} (set by HOST and PORT; choose a free port with PORT, \
                 or another interface with HOST)"
            ))
        })?;
        tracing::info!(address = %listener.local_addr()?, "listening");
        let event_workers = events.start()?;
        let reminders =
            tasks::reminders::spawn(task_service, settings.reminders_poll, reminders_sent);
        Ok(Self {
            listener,
            router,
            store,
            revocation_sync,
            limits: ConnectionLimits {
                header_read_timeout: settings.header_read_timeout,
                max_connections: settings.max_connections,
                shutdown_grace: settings.shutdown_grace,
            },
            events,
            event_workers,
            reminders,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |addr| addr.port())
    }

    /// Serves until SIGINT or SIGTERM, then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `stop` completes; then new connections are refused and in-flight
    /// requests get the shutdown grace period to finish before they are dropped.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let events = self.events.clone();
        let stop = async move {
            stop.await;
            // Live feeds end now, so they do not hold graceful shutdown for the whole grace.
            events.stop();
        };
        server::serve(self.listener, self.router, self.limits, stop).await;
        self.revocation_sync.abort();
        self.reminders.abort();
        // The relay finishes its current publish and gives up its lease.
        self.events.stop();
        for worker in self.event_workers {
            if tokio::time::timeout(Duration::from_secs(5), worker)
                .await
                .is_err()
            {
                tracing::warn!("the event relay did not stop in time");
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), self.store.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections did not close in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The metrics registry, with the values other parts own sampled at each scrape.
fn metrics(
    passwords: &PasswordHasher,
    jwks: Option<Arc<JwksVerifier>>,
    events: &Events,
    reminders_sent: &Arc<AtomicU64>,
    listings: &ListingCache,
) -> Metrics {
    let mut metrics = Metrics::new();
    let hasher = passwords.clone();
    metrics.sample_gauge(
        "password_hash_queue_depth",
        "Password hashes waiting for a hashing thread",
        move || i64::try_from(hasher.queue_depth()).unwrap_or(i64::MAX),
    );
    let hasher = passwords.clone();
    metrics.sample_gauge(
        "password_hash_running",
        "Password hashes running on the hashing pool's threads",
        move || i64::try_from(hasher.running()).unwrap_or(i64::MAX),
    );
    let hasher = passwords.clone();
    metrics.sample_counter(
        "password_hashes_completed",
        "Password hashes computed since start-up",
        move || hasher.completed(),
    );
    let hasher = passwords.clone();
    metrics.sample_counter(
        "password_hashes_skipped",
        "Password hashes never started because their request was gone (client hung up or timed out)",
        move || hasher.skipped(),
    );
    metrics.sample_counter(
        "jwks_fetch_failures",
        "Fetches of the Better Auth key set that failed",
        move || jwks.as_ref().map_or(0, |jwks| jwks.fetch_failures()),
    );
    let relay = events.clone();
    metrics.sample_gauge(
        "event_relay_pending",
        "Task events committed and not yet delivered to the sink",
        move || i64::try_from(relay.lag().pending).unwrap_or(i64::MAX),
    );
    let relay = events.clone();
    metrics.sample_gauge(
        "event_relay_lag_milliseconds",
        "Age of the oldest undelivered task event (0 when none)",
        move || (relay.lag().oldest_pending_age_seconds * 1000.0) as i64,
    );
    let sent = reminders_sent.clone();
    metrics.sample_counter(
        "reminders_sent",
        "todo.task.reminder events this instance wrote",
        move || sent.load(Ordering::Relaxed),
    );
    let listings = listings.clone();
    metrics.sample_counter(
        "task_listings_from_cache",
        "Task listings this instance answered with the body it kept, the tasks unchanged",
        move || listings.answered(),
    );
    metrics
}

/// The whole HTTP surface: routes, documentation and middleware.
pub fn router(state: AppState, settings: &Settings) -> Router {
    let (routes, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::router())
        .merge(tasks::router())
        .merge(events::router())
        .merge(ops::router())
        .split_for_parts();
    openapi::complete(&mut api, settings.max_page_size);
    // The browser-facing header lists come from the document, so they cannot drift from it.
    let cors_headers = openapi::cors_headers(&api);
    let docs_title = format!("{} — Swagger UI", api.info.title);
    let docs: Router<AppState> =
        Router::from(SwaggerUi::new("/docs").url("/openapi.json", api)).layer(
            middleware::from_fn_with_state(Arc::new(docs_title), openapi::title_swagger_ui),
        );
    let routes = routes
        .merge(docs)
        // Outside the OpenAPI document: an operator's route, a 404 unless METRICS_TOKEN is
        // set and presented (any method, so that a 405 does not give it away).
        .route("/metrics", axum::routing::any(observe::scrape))
        .fallback(|| async { ApiError::NotFound("no such route") })
        // A request still running after this is answered with a 503 (and its work dropped).
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(middleware::from_fn(problem_for_bare_errors))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(Extension(BodyLimit(settings.max_body_bytes)));
    // Without configured origins there is no CORS layer at all, so OPTIONS is an ordinary
    // 405 rather than an empty 200 preflight answer on every path.
    let routes = if settings.cors_origins.is_empty() {
        routes
    } else {
        routes.layer(cors(&settings.cors_origins, cors_headers))
    };
    routes
        .layer(middleware::from_fn_with_state(
            settings.max_header_bytes,
            limit_header_bytes,
        ))
        .layer(middleware::from_fn_with_state(
            state.observer.clone(),
            log_request,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::new(settings.trusted_proxies.clone()),
            client_addr::resolve,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .layer(middleware::from_fn_with_state(
            REQUEST_ID.clone(),
            observe::drop_unfit_request_id,
        ))
        .with_state(state)
}

fn cors(origins: &[String], headers: openapi::CorsHeaders) -> CorsLayer {
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(headers.allowed)
        .expose_headers(headers.exposed)
        .max_age(std::time::Duration::from_secs(600))
}

/// One log line per request: method, matched route, status, latency, request id and client
/// address (behind `TRUSTED_PROXIES`, the forwarded one). Never the query string, headers or
/// body, where tokens and passwords travel. Refusals (429, 503) are summarised by
/// [`RefusalLog`] instead of logged one by one; a request whose client went away before the
/// response is logged as cancelled, with status 499.
async fn log_request(
    axum::extract::State(observer): axum::extract::State<Arc<Observer>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_owned(), |path| path.as_str().to_owned());
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let client = request
        .extensions()
        .get::<ClientAddr>()
        .map_or_else(String::new, |ClientAddr(client)| client.to_string());
    let span = tracing::info_span!("request", %method, %route, %request_id, %client);
    let mut unanswered = Unanswered {
        span: span.clone(),
        start,
        observer: Some(observer.clone()),
    };
    let response = next.run(request).instrument(span.clone()).await;
    unanswered.observer = None;
    let status = response.status().as_u16();
    observer.metrics.count_response(status);
    // Whole microseconds as milliseconds: `1.234`, not `1.2339870000000001`.
    let latency_ms = start.elapsed().as_micros() as f64 / 1000.0;
    let refusal = response.extensions().get::<RefusalReason>().copied();
    span.in_scope(|| match refusal {
        Some(RefusalReason(reason)) if status == 429 || status == 503 => {
            if observer.refusals.record(status, reason) {
                // The service refusing work it cannot do now: worth a warning, not an
                // error; the rest of a flood goes into the summary.
                if status == 503 {
                    tracing::warn!(status, latency_ms, reason, "request refused");
                } else {
                    tracing::info!(status, latency_ms, reason, "request refused");
                }
            }
        }
        _ if status >= 500 => tracing::error!(status, latency_ms, "request"),
        _ => tracing::info!(status, latency_ms, "request"),
    });
    response
}

/// Logs a request whose future was dropped before it produced a response (the client
/// closed the connection, or shutdown's grace period ran out).
struct Unanswered {
    span: tracing::Span,
    start: Instant,
    /// `None` once the request has been answered.
    observer: Option<Arc<Observer>>,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(observer) = self.observer.take() {
            observer.metrics.count_response(CANCELLED);
            let latency_ms = self.start.elapsed().as_micros() as f64 / 1000.0;
            self.span.in_scope(|| {
                tracing::info!(
                    status = CANCELLED,
                    latency_ms,
                    cancelled = true,
                    "request cancelled before its response"
                );
            });
        }
    }
}

/// The status logged for a request its client abandoned (nginx's "client closed request").
const CANCELLED: u16 = 499;

/// 431 when the request's header names and values add up to more than the limit.
async fn limit_header_bytes(
    axum::extract::State(limit): axum::extract::State<usize>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > limit {
        return ApiError::HeadersTooLarge(limit).into_response();
    }
    next.run(request).await
}

async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
