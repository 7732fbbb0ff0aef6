//! Hostile clients against the real binary (issue 12 §2 and §7): slow or silent
//! connections are cut off after `HEADER_READ_TIMEOUT_SECONDS`; connections beyond
//! `MAX_CONNECTIONS` wait until one closes; a flood of refused requests writes a bounded
//! number of log lines; a request its client abandons is logged once, as cancelled; and
//! `/metrics` answers only with `METRICS_TOKEN`, its counters moving with the traffic.
//!
//! Each test runs the `todo-api` binary as a child process (see `common/process.rs`) on
//! SQLite and on PostgreSQL, and talks to it over raw sockets where HTTP clients would
//! hide what the server does.

mod common;
#[path = "common/key_server.rs"]
mod key_server;
#[path = "common/process.rs"]
mod process;

use std::time::{Duration, Instant};

use common::{Backend, expect_problem, now, read_head};
use futures_util::{StreamExt, stream};
use key_server::{GatedKeyServer, JWKS, sign};
use process::{ServerProcess, TestDatabase, metric_sample};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const METRICS_TOKEN: &str = "metrics-token-for-the-hostile-client-tests";

fn request_head(server: &ServerProcess, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.socket_address()
    )
}

/// Reads until the server closes the connection (or resets it); `None` if it is still
/// open after `bound`.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    match tokio::time::timeout(bound, stream.read_to_end(&mut received)).await {
        Ok(_) => Some(received),
        Err(_) => None,
    }
}

/// The JSON log lines of a process started with `LOG_FORMAT=json`.
fn json_lines(server: &ServerProcess) -> Vec<Value> {
    server
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The value of the sample `name` in the exposition; 0 when absent.
fn sample(exposition: &str, name: &str) -> f64 {
    metric_sample(exposition, name).unwrap_or(0.0)
}

on_both_backends! {
    async fn slow_or_silent_request_heads_are_cut_off_after_the_header_read_timeout(
        backend: Backend
    ) {
        let database = TestDatabase::create(backend).await;
        let server =
            ServerProcess::start(&database, &[("HEADER_READ_TIMEOUT_SECONDS", "2")]).await;

        // One header line a second, for up to 30 s: the server must hang up long before.
        let stream = TcpStream::connect(server.socket_address()).await.unwrap();
        let (mut reading, mut writing) = stream.into_split();
        writing.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            reading.read_to_end(&mut received).await.ok();
            received
        });
        let started = Instant::now();
        let mut lines_sent = 0;
        while lines_sent < 30 && !reader.is_finished() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writing
                .write_all(format!("X-Slow-{lines_sent}: {lines_sent}\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            lines_sent += 1;
        }
        let received = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the slow connection is closed")
            .unwrap();
        assert!(
            lines_sent < 30,
            "a slow client kept its connection for {:?}",
            started.elapsed()
        );
        assert!(
            !String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"),
            "the slow request was served: {received:?}"
        );

        // A connection that sends nothing at all is closed too.
        let mut silent = TcpStream::connect(server.socket_address()).await.unwrap();
        let received = read_until_closed(&mut silent, Duration::from_secs(20)).await;
        assert_eq!(received.as_deref(), Some(&b""[..]), "the silent connection is closed");

        // And an HTTP/2 client (prior knowledge) is still served: the server answers its
        // preface with a SETTINGS frame.
        let mut h2 = TcpStream::connect(server.socket_address()).await.unwrap();
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut frame_header = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(10), h2.read_exact(&mut frame_header))
            .await
            .expect("an HTTP/2 answer")
            .expect("a frame");
        assert_eq!(frame_header[3], 0x4, "a SETTINGS frame: {frame_header:?}");

        // A prompt client is served as before.
        let mut prompt = TcpStream::connect(server.socket_address()).await.unwrap();
        prompt
            .write_all(request_head(&server, "/health").as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut prompt).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    async fn connections_beyond_max_connections_wait_until_one_closes(backend: Backend) {
        let database = TestDatabase::create(backend).await;
        let server = ServerProcess::start(
            &database,
            &[("MAX_CONNECTIONS", "2"), ("HEADER_READ_TIMEOUT_SECONDS", "60")],
        )
        .await;
        // Two kept-alive connections, each served once, hold both places.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(server.socket_address()).await.unwrap();
            stream
                .write_all(request_head(&server, "/health").as_bytes())
                .await
                .unwrap();
            let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream))
                .await
                .expect("a connection within the cap is served");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let mut body = [0u8; 15];
            stream.read_exact(&mut body).await.unwrap();
            held.push(stream);
        }

        // A third connection reaches the kernel's backlog but is not served.
        let mut third = TcpStream::connect(server.socket_address()).await.unwrap();
        third
            .write_all(request_head(&server, "/health").as_bytes())
            .await
            .unwrap();
        let mut first_byte = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_secs(2), third.read(&mut first_byte))
                .await
                .is_err(),
            "a connection beyond MAX_CONNECTIONS was served"
        );
        assert!(
            server
                .wait_for_log("connection limit reached", Duration::from_secs(5))
                .await,
            "{}",
            server.log()
        );

        // One held connection closes: the waiting one is served.
        drop(held.remove(0));
        let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut third))
            .await
            .expect("the waiting connection is served once a place is free");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    async fn a_flood_of_refused_requests_writes_a_bounded_number_of_log_lines(
        backend: Backend
    ) {
        // No key server at this address: every token that needs Better Auth's keys is a
        // 503, at once.
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", unused.local_addr().unwrap());
        drop(unused);
        let database = TestDatabase::create(backend).await;
        let server = ServerProcess::start(
            &database,
            &[
                ("LOG_FORMAT", "json"),
                ("BETTER_AUTH_URL", &origin),
                ("JWKS_REFETCH_INTERVAL_SECONDS", "1"),
                ("METRICS_TOKEN", METRICS_TOKEN),
            ],
        )
        .await;

        // /metrics: a 404 problem without the token or with a wrong one, whatever the method.
        let client = reqwest::Client::new();
        for (case, request) in [
            ("no token", client.get(server.url("/metrics"))),
            ("wrong token", client.get(server.url("/metrics")).bearer_auth("not-the-metrics-token-0000")),
            ("a prefix", client.get(server.url("/metrics")).bearer_auth(&METRICS_TOKEN[..20])),
            ("another scheme", client.get(server.url("/metrics")).basic_auth(METRICS_TOKEN, None::<&str>)),
            ("POST, wrong token", client.post(server.url("/metrics")).bearer_auth("nope")),
        ] {
            let problem =
                expect_problem(request.send().await.unwrap(), StatusCode::NOT_FOUND).await;
            assert_eq!(problem["detail"], "no such route", "{case}");
        }
        let before = server.scrape_metrics(METRICS_TOKEN).await;

        const FLOOD: usize = 300;
        let token = sign(
            "test-ed25519",
            false,
            &json!({"sub": "flooder", "exp": now() + 900, "iss": origin, "aud": origin}),
        );
        let statuses: Vec<StatusCode> = stream::iter(0..FLOOD)
            .map(|_| {
                let (client, url, token) =
                    (client.clone(), server.url("/api/flooder/tasks"), token.clone());
                async move { client.get(url).bearer_auth(token).send().await.unwrap().status() }
            })
            .buffer_unordered(20)
            .collect()
            .await;
        assert!(
            statuses.iter().all(|status| *status == StatusCode::SERVICE_UNAVAILABLE),
            "{statuses:?}"
        );

        // Every refusal is accounted for: one line for the first, the rest in summaries
        // (written every 10 s), and no other line per refused request.
        let refusal_lines = |lines: &[Value]| -> Vec<Value> {
            lines
                .iter()
                .filter(|line| line["status"] == 503)
                .cloned()
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let accounted = |lines: &[Value]| -> u64 {
            lines
                .iter()
                .map(|line| line["refused"].as_u64().unwrap_or(1))
                .sum()
        };
        loop {
            let lines = refusal_lines(&json_lines(&server));
            if accounted(&lines) >= FLOOD as u64 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let all = json_lines(&server);
        let lines = refusal_lines(&all);
        assert_eq!(accounted(&lines), FLOOD as u64, "{lines:#?}");
        assert!(lines.len() <= 4, "{} lines for {FLOOD} refusals: {lines:#?}", lines.len());
        assert!(
            lines.iter().any(|line| line["message"]
                .as_str()
                .unwrap_or_default()
                .contains("requests refused with 503 (token keys unavailable) in the last 10 s")),
            "{lines:#?}"
        );
        let warnings = all
            .iter()
            .filter(|line| line["level"] == "WARN")
            .filter(|line| line["message"] != "could not fetch the JWKS")
            .count();
        assert!(warnings <= 4, "{warnings} warnings for {FLOOD} refusals");

        // The counters moved with the flood.
        let after = server.scrape_metrics(METRICS_TOKEN).await;
        let refused = r#"http_responses_total{status="503"}"#;
        assert_eq!(sample(&after, refused) - sample(&before, refused), FLOOD as f64, "{after}");
        assert!(sample(&after, "jwks_fetch_failures_total") >= 1.0, "{after}");
        assert!(sample(&after, r#"http_responses_total{status="200"}"#) >= 1.0, "{after}");
        assert!(after.contains("\npassword_hash_queue_depth 0\n"), "{after}");
        // The relay's backlog is there too (the log sink keeps up, so it is empty or small).
        assert!(after.contains("\nevent_relay_pending "), "{after}");
        assert!(after.contains("\nevent_relay_lag_milliseconds "), "{after}");
        // A method other than GET, with the right token, is an honest 405.
        let response = client
            .post(server.url("/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    async fn a_request_abandoned_by_its_client_is_logged_once_as_cancelled(backend: Backend) {
        let keys = GatedKeyServer::start(JWKS.to_owned(), JWKS.to_owned()).await;
        let database = TestDatabase::create(backend).await;
        let server = ServerProcess::start(
            &database,
            &[
                ("LOG_FORMAT", "json"),
                ("BETTER_AUTH_URL", &keys.origin),
                ("JWKS_REFETCH_INTERVAL_SECONDS", "1"),
                ("JWKS_FETCH_TIMEOUT_SECONDS", "60"),
                ("METRICS_TOKEN", METRICS_TOKEN),
            ],
        )
        .await;
        // A key the cache does not have: the request waits for a fetch that the key
        // server holds at its gate. (The refetch interval must pass since start-up.)
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let token = sign(
            "a-key-not-yet-published",
            false,
            &json!({"sub": "leaver", "exp": now() + 900, "iss": keys.origin, "aud": keys.origin}),
        );
        let mut stream = TcpStream::connect(server.socket_address()).await.unwrap();
        let head = format!(
            "GET /api/leaver/tasks HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             X-Request-Id: the-leaving-request\r\n\r\n",
            server.socket_address()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        assert!(
            keys.wait_for_waiting(1, Duration::from_secs(10)).await,
            "the request never fetched the key set:\n{}",
            server.log()
        );
        drop(stream);

        let deadline = Instant::now() + Duration::from_secs(10);
        let cancelled = loop {
            let lines: Vec<Value> = json_lines(&server)
                .into_iter()
                .filter(|line| line["request_id"] == "the-leaving-request"
                    || line["span"]["request_id"] == "the-leaving-request")
                .collect();
            if !lines.is_empty() || Instant::now() > deadline {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(cancelled.len(), 1, "{cancelled:#?}\n{}", server.log());
        assert_eq!(cancelled[0]["status"], 499, "{cancelled:#?}");
        assert_eq!(cancelled[0]["cancelled"], true, "{cancelled:#?}");
        let exposition = server.scrape_metrics(METRICS_TOKEN).await;
        assert_eq!(sample(&exposition, r#"http_responses_total{status="499"}"#), 1.0);
    }
}
