//! [`Application`]: connects storage, builds the router with its middleware, binds the
//! listener, and serves until a shutdown signal. Tests start the very same application on
//! port 0.

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    sync::Arc,
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
        token::TokenVerifier,
    },
    config::Settings,
    error::{ApiError, problem_for_bare_errors},
    extract::BodyLimit,
    openapi::{self, ApiDoc},
    ops,
    storage::{self, Store},
    tasks::{
        self, TaskService,
        events::{LogEvents, TaskEvents},
    },
};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub tasks: TaskService,
    pub tokens: Arc<TokenVerifier>,
    pub passwords: PasswordHasher,
    pub rate_limits: Arc<AuthRateLimits>,
    pub max_page_size: u32,
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    store: Arc<dyn Store>,
    shutdown_grace: Duration,
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Application {
    /// Connects to the database (applying migrations), builds the router and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_events(settings, Arc::new(LogEvents)).await
    }

    /// As [`Application::build`], with task events going to `events`.
    pub async fn build_with_events(
        settings: Settings,
        events: Arc<dyn TaskEvents>,
    ) -> anyhow::Result<Self> {
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
        let state = AppState {
            tasks: TaskService::new(store.clone(), events),
            store: store.clone(),
            tokens: Arc::new(TokenVerifier::new(&secret, &settings, jwks.clone())),
            passwords: PasswordHasher::start(&settings)?,
            rate_limits: Arc::new(AuthRateLimits::new(&settings)),
            max_page_size: settings.max_page_size,
        };
        let router = router(state, &settings);
        let listener = TcpListener::bind((settings.host, settings.port)).await?;
        tracing::info!(address = %listener.local_addr()?, "listening");
        Ok(Self {
            listener,
            router,
            store,
            shutdown_grace: settings.shutdown_grace,
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
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            stop.await;
            stopping.send(()).ok();
        };
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(self.listener, service).with_graceful_shutdown(stop);
        let grace = self.shutdown_grace;
        let grace_over = async move {
            match stopped.await {
                Ok(()) => tokio::time::sleep(grace).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            result = server.into_future() => result?,
            () = grace_over => tracing::warn!(
                grace_seconds = grace.as_secs(),
                "shutdown grace period over; dropping requests still in flight"
            ),
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

/// The whole HTTP surface: routes, documentation and middleware.
pub fn router(state: AppState, settings: &Settings) -> Router {
    let (routes, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::router())
        .merge(tasks::router())
        .merge(ops::router())
        .split_for_parts();
    openapi::complete(&mut api);
    let routes = routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
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
        routes.layer(cors(&settings.cors_origins))
    };
    routes
        .layer(middleware::from_fn_with_state(
            settings.max_header_bytes,
            limit_header_bytes,
        ))
        .layer(middleware::from_fn(log_request))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .with_state(state)
}

fn cors(origins: &[String]) -> CorsLayer {
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
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([header::LOCATION, header::ETAG, REQUEST_ID.clone()])
        .max_age(std::time::Duration::from_secs(600))
}

/// One log line per request: method, matched route, status, latency and request id. Never
/// the query string, headers or body, where tokens and passwords travel.
async fn log_request(request: Request<Body>, next: Next) -> Response {
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
    let span = tracing::info_span!("request", %method, %route, %request_id);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        // A 503 is the service refusing work it cannot do now (database or key server
        // away, hashing queue full): worth a warning, not an error.
        if status >= 500 && status != 503 {
            tracing::error!(status, latency_ms, "request");
        } else if status == 503 {
            tracing::warn!(status, latency_ms, "request");
        } else {
            tracing::info!(status, latency_ms, "request");
        }
    });
    response
}

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
