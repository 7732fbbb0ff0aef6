//! A real Better Auth server (the npm package `better-auth`, pinned in
//! `tests/better-auth/package.json`) on loopback, as the identity provider of the tests.
//!
//! [`BetterAuth::start`] runs `node tests/better-auth/server.mjs` on a free port of 127.0.0.1:
//! memory adapter, email-and-password sign-up and the jwt plugin, signing with the algorithm
//! asked for. [`BetterAuth::sign_up`] signs a user up and fetches the JWT a frontend would get
//! from `GET /api/auth/token`. Every start has a fresh in-memory database, so a fresh signing
//! key and `kid`; [`BetterAuth::restart`] rotates the key on the same port and URL.
//!
//! Needs Node 20+ and `npm ci --prefix tests/better-auth` beforehand.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

/// How long a start may take before the fixture gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const SECRET: &str = "better-auth-test-secret-0123456789abcdefghijklmnop";

/// A user signed up on Better Auth.
#[derive(Clone, Debug)]
pub struct BetterAuthUser {
    /// Better Auth's user id: the `sub` of its tokens.
    pub id: String,
    pub email: String,
    pub name: String,
    /// The JWT from `GET /api/auth/token`.
    pub token: String,
    /// The session cookie (`name=value`), to fetch more tokens with [`BetterAuth::token`].
    pub cookie: String,
}

/// How to start the server.
#[derive(Clone, Debug)]
pub struct BetterAuthOptions {
    /// `EdDSA` (Better Auth's default), `ES256`, `ES512`, `RS256` or `PS256`.
    pub alg: String,
    /// The base URL it advertises: the origin of this URL is the tokens' `iss` and `aud`.
    /// `None`: where it listens, `http://127.0.0.1:<port>`.
    pub base_url: Option<String>,
    /// User ids derived from the email rather than random, so that a user signed up again
    /// after [`BetterAuth::restart`] keeps its `sub`.
    pub stable_user_ids: bool,
}

impl BetterAuthOptions {
    pub fn new(alg: &str) -> Self {
        Self {
            alg: alg.to_owned(),
            base_url: None,
            stable_user_ids: false,
        }
    }
}

/// A running Better Auth server; killed on drop.
pub struct BetterAuth {
    options: BetterAuthOptions,
    port: u16,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    client: reqwest::Client,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/better-auth")
}

/// The origin (`scheme://host[:port]`) of `url`.
fn origin_of(url: &str) -> String {
    let url = url::Url::parse(url).unwrap_or_else(|e| panic!("{url:?} is not a URL: {e}"));
    url.origin().ascii_serialization()
}

/// What a failed start reported: the output, and whether another process held the port.
struct StartFailure {
    message: String,
    port_in_use: bool,
}

impl BetterAuth {
    /// Starts Better Auth signing with `alg`, on a free port, advertising where it listens.
    pub async fn start(alg: &str) -> Self {
        Self::start_with(BetterAuthOptions::new(alg)).await
    }

    /// Starts Better Auth on a free port, advertising `base_url` rather than where it listens:
    /// its tokens then carry the origin of `base_url` as `iss` and `aud`.
    pub async fn start_with_base_url(alg: &str, base_url: &str) -> Self {
        Self::start_with(BetterAuthOptions {
            base_url: Some(base_url.to_owned()),
            ..BetterAuthOptions::new(alg)
        })
        .await
    }

    pub async fn start_with(options: BetterAuthOptions) -> Self {
        let mut server = Self {
            options,
            port: 0,
            child: None,
            stderr: Arc::default(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .expect("HTTP client"),
        };
        server
            .launch(0)
            .await
            .unwrap_or_else(|f| panic!("{}", f.message));
        server
    }

    /// Stops the server and starts it again on the same port with the same options: a fresh
    /// database, so a new signing key with a new `kid`, and no users or sessions.
    pub async fn restart(&mut self) {
        self.stop().await;
        let port = self.port;
        // The port was just released; retry briefly should the system be slow to free it.
        let mut attempts = 0;
        loop {
            match self.launch(port).await {
                Ok(()) => return,
                Err(failure) if failure.port_in_use && attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(failure) => panic!("{}", failure.message),
            }
        }
    }

    /// Kills the server; its URLs then refuse connections. [`Self::restart`] starts it again.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn alg(&self) -> &str {
        &self.options.alg
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it listens: `http://127.0.0.1:<port>`.
    pub fn local_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The base URL it advertises (`BETTER_AUTH_URL`): [`Self::local_url`] unless started with
    /// another one.
    pub fn base_url(&self) -> String {
        self.options
            .base_url
            .clone()
            .unwrap_or_else(|| self.local_url())
    }

    /// The origin of [`Self::base_url`]: the `iss` and `aud` of its tokens.
    pub fn origin(&self) -> String {
        origin_of(&self.base_url())
    }

    /// The `iss` of its tokens.
    pub fn issuer(&self) -> String {
        self.origin()
    }

    /// The `aud` of its tokens.
    pub fn audience(&self) -> String {
        self.origin()
    }

    /// Its JWKS, where it listens (also when it advertises another URL).
    pub fn jwks_url(&self) -> String {
        format!("{}/api/auth/jwks", self.local_url())
    }

    /// A Better Auth path, where it listens: `url("/api/auth/ok")`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.local_url())
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Signs a user up with email and password, then fetches the user's JWT with the session
    /// cookie of the sign-up.
    pub async fn sign_up(&self, email: &str, password: &str, name: &str) -> BetterAuthUser {
        let response = self
            .client
            .post(self.url("/api/auth/sign-up/email"))
            .header(ORIGIN, self.origin())
            .json(&json!({ "email": email, "password": password, "name": name }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("Better Auth sign-up of {email}: {e}"));
        let status = response.status();
        let cookie = session_cookie(&response);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status,
            StatusCode::OK,
            "Better Auth sign-up of {email}: {body}\n{}",
            self.stderr()
        );
        let id = body["user"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("Better Auth sign-up of {email} gave no user id: {body}"))
            .to_owned();
        assert!(
            !cookie.is_empty(),
            "Better Auth sign-up of {email} set no cookie"
        );
        let token = self.token(&cookie).await;
        BetterAuthUser {
            id,
            email: body["user"]["email"].as_str().unwrap_or(email).to_owned(),
            name: name.to_owned(),
            token,
            cookie,
        }
    }

    /// Signs an existing user in, then fetches a JWT: the same as [`Self::sign_up`] returns.
    pub async fn sign_in(&self, email: &str, password: &str) -> BetterAuthUser {
        let response = self
            .client
            .post(self.url("/api/auth/sign-in/email"))
            .header(ORIGIN, self.origin())
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("Better Auth sign-in of {email}: {e}"));
        let status = response.status();
        let cookie = session_cookie(&response);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status,
            StatusCode::OK,
            "Better Auth sign-in of {email}: {body}"
        );
        let token = self.token(&cookie).await;
        BetterAuthUser {
            id: body["user"]["id"].as_str().expect("user id").to_owned(),
            email: body["user"]["email"].as_str().unwrap_or(email).to_owned(),
            name: body["user"]["name"].as_str().unwrap_or_default().to_owned(),
            token,
            cookie,
        }
    }

    /// A fresh JWT from `GET /api/auth/token` for the session `cookie`.
    pub async fn token(&self, cookie: &str) -> String {
        let response = self
            .client
            .get(self.url("/api/auth/token"))
            .header(ORIGIN, self.origin())
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Better Auth /api/auth/token: {e}"));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status,
            StatusCode::OK,
            "Better Auth /api/auth/token: {body}"
        );
        body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("Better Auth /api/auth/token gave no token: {body}"))
            .to_owned()
    }

    /// Its JWKS document, `{"keys": [...]}`.
    pub async fn jwks(&self) -> Value {
        let response = self
            .client
            .get(self.jwks_url())
            .send()
            .await
            .unwrap_or_else(|e| panic!("Better Auth JWKS: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "Better Auth JWKS");
        response.json().await.expect("Better Auth JWKS is JSON")
    }

    /// Spawns the server on `port` (0: a free one) and waits for its `ready <port>` line.
    async fn launch(&mut self, port: u16) -> Result<(), StartFailure> {
        let dir = fixture_dir();
        if !dir.join("node_modules/better-auth/package.json").is_file() {
            return Err(StartFailure {
                message: format!(
                    "better-auth is not installed in {}: run npm ci --prefix tests/better-auth",
                    dir.display()
                ),
                port_in_use: false,
            });
        }
        let mut command = Command::new("node");
        command
            .arg("server.mjs")
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("JWT_ALG", &self.options.alg)
            .env("BETTER_AUTH_SECRET", SECRET)
            .env("EXIT_ON_STDIN_CLOSE", "1")
            .env(
                "STABLE_USER_IDS",
                if self.options.stable_user_ids {
                    "1"
                } else {
                    "0"
                },
            )
            // Nothing from the developer's environment may reconfigure it.
            .env_remove("NODE_ENV")
            .env_remove("BETTER_AUTH_TRUSTED_ORIGINS")
            .env_remove("BETTER_AUTH_TELEMETRY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &self.options.base_url {
            Some(url) => command.env("BETTER_AUTH_URL", url),
            None => command.env_remove("BETTER_AUTH_URL"),
        };
        let mut child = command.spawn().map_err(|e| StartFailure {
            message: format!("cannot run node (Node 20+ must be on PATH): {e}"),
            port_in_use: false,
        })?;

        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader = {
            let pipe = child.stderr.take().expect("stderr is piped");
            let stderr = Arc::clone(&stderr);
            let echo = std::env::var_os("TEST_LOG").is_some();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[better-auth] {line}");
                    }
                    let mut stderr = stderr.lock().unwrap();
                    stderr.push_str(&line);
                    stderr.push('\n');
                }
            })
        };
        let (ready, is_ready) = tokio::sync::oneshot::channel::<u16>();
        {
            let pipe = child.stdout.take().expect("stdout is piped");
            std::thread::spawn(move || {
                let mut ready = Some(ready);
                // Reads to the end, so that the server never blocks on a full pipe.
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let port = line
                        .strip_prefix("ready ")
                        .and_then(|p| p.trim().parse().ok());
                    if let (Some(port), Some(ready)) = (port, ready.take()) {
                        ready.send(port).ok();
                    }
                }
            });
        }

        let outcome = tokio::time::timeout(START_TIMEOUT, is_ready).await;
        match outcome {
            Ok(Ok(actual)) => {
                self.port = actual;
                self.child = Some(child);
                self.stderr = stderr;
                Ok(())
            }
            _ => {
                child.kill().ok();
                let status = child.wait().ok();
                stderr_reader.join().ok();
                let stderr = stderr.lock().unwrap().clone();
                let why = if outcome.is_err() {
                    format!("was not ready within {START_TIMEOUT:?}")
                } else {
                    format!("exited ({status:?}) before it was ready")
                };
                Err(StartFailure {
                    message: format!(
                        "Better Auth server (node {}/server.mjs, JWT_ALG={}, PORT={port}) {why}; \
                         if better-auth is missing, run npm ci --prefix tests/better-auth. \
                         stderr:\n{stderr}",
                        dir.display(),
                        self.options.alg,
                    ),
                    port_in_use: stderr.contains("EADDRINUSE"),
                })
            }
        }
    }
}

impl Drop for BetterAuth {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// The `name=value` pairs of a response's `Set-Cookie` headers, as a `Cookie` header.
fn session_cookie(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|cookie| cookie.split(';').next())
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The header and claims of `token`, as JSON, decoded without any verification.
pub fn decode_unverified(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = |what: &str| -> Value {
        let encoded = parts
            .next()
            .unwrap_or_else(|| panic!("{token:?} has no {what}"));
        let bytes = base64url_decode(encoded)
            .unwrap_or_else(|| panic!("the {what} of {token:?} is not base64url"));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("the {what} of {token:?} is not JSON: {e}"))
    };
    let header = part("header");
    let claims = part("claims");
    (header, claims)
}

/// Decodes unpadded base64url, as in JWTs.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(bytes)
}
