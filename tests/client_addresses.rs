//! The client address behind trusted proxies (`TRUSTED_PROXIES`, issue 7 §1): which address
//! the sign-up and login limits count, shown through those limits over real HTTP. Every
//! request of these tests comes from 127.0.0.1, playing the proxy (or an untrusted client).

mod common;
#[path = "common/process.rs"]
mod process;

use std::time::Duration;

use common::*;
use process::{ServerProcess, TestDatabase};
use reqwest::{Method, Response, StatusCode};
use serde_json::json;
use todo_api::{
    Settings,
    client_addr::{ForwardingHeader, TrustedProxies},
};

/// Starts the application trusting `proxies` (with `header`), two attempts a minute per
/// client address, no account limits.
async fn behind(backend: Backend, proxies: &[&str], header: ForwardingHeader) -> TestApp {
    // A bare (IPv4) address is a /32 range.
    let networks = proxies
        .iter()
        .map(|net| match net.contains('/') {
            true => net.parse().unwrap(),
            false => format!("{net}/32").parse().unwrap(),
        })
        .collect();
    TestApp::spawn_with(backend, move |settings: &mut Settings| {
        settings.auth_rate_limit_per_ip = 2;
        settings.auth_rate_limit_per_account = 0;
        settings.trusted_proxies = TrustedProxies { networks, header };
    })
    .await
}

/// A failed login (unknown user) carrying the forwarding header `name: value`, if any.
async fn login_with(app: &TestApp, forwarding: &[(&str, &str)]) -> Response {
    let mut request = app
        .request(Method::POST, "/api/auth/login")
        .json(&json!({"username": "nobody", "password": PASSWORD}));
    for (name, value) in forwarding {
        request = request.header(*name, *value);
    }
    request.send().await.expect("login request")
}

/// Asserts that the client `forwarding` names has exactly two attempts left: two 401s, then
/// a 429.
async fn has_a_fresh_budget(app: &TestApp, forwarding: &[(&str, &str)]) {
    for attempt in 1..=2 {
        let response = login_with(app, forwarding).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt} with {forwarding:?}"
        );
    }
    is_spent(app, forwarding).await;
}

async fn is_spent(app: &TestApp, forwarding: &[(&str, &str)]) {
    let response = login_with(app, forwarding).await;
    assert_eq!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the budget of {forwarding:?} is spent"
    );
}

const XFF: &str = "x-forwarded-for";

on_both_backends! {
    async fn two_clients_behind_one_trusted_proxy_get_separate_budgets(backend: Backend) {
        let app = behind(backend, &["127.0.0.1"], ForwardingHeader::XForwardedFor).await;
        has_a_fresh_budget(&app, &[(XFF, "203.0.113.1")]).await;
        has_a_fresh_budget(&app, &[(XFF, "203.0.113.2")]).await;
        // The proxy's own requests (no header) are a client of their own.
        has_a_fresh_budget(&app, &[]).await;
    }

    async fn a_spoofed_left_most_x_forwarded_for_entry_does_not_give_a_fresh_budget(backend: Backend) {
        let app = behind(backend, &["127.0.0.1"], ForwardingHeader::XForwardedFor).await;
        has_a_fresh_budget(&app, &[(XFF, "203.0.113.1")]).await;
        for spoof in ["198.51.100.1, 203.0.113.1", "10.9.9.9,203.0.113.1", "garbage, 203.0.113.1"] {
            is_spent(&app, &[(XFF, spoof)]).await;
        }
        // The same spoof written on a header line of its own, before the proxy's line.
        let response = app
            .request(Method::POST, "/api/auth/login")
            .header(XFF, "198.51.100.2")
            .header(XFF, "203.0.113.1")
            .json(&json!({"username": "nobody", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    async fn an_untrusted_peers_forwarding_headers_change_nothing(backend: Backend) {
        // 127.0.0.2 is trusted; these requests come from 127.0.0.1.
        let app = behind(backend, &["127.0.0.2", "10.0.0.0/8"], ForwardingHeader::XForwardedFor).await;
        has_a_fresh_budget(&app, &[(XFF, "203.0.113.1")]).await;
        for header in [
            (XFF, "203.0.113.2"),
            ("forwarded", "for=203.0.113.3"),
            ("x-real-ip", "203.0.113.4"),
        ] {
            is_spent(&app, &[header]).await;
        }
    }

    async fn a_chain_of_trusted_proxies_is_walked_to_the_right_most_untrusted_address(backend: Backend) {
        let app = behind(backend, &["127.0.0.1", "10.0.0.0/8"], ForwardingHeader::XForwardedFor).await;
        let chain = "198.51.100.9, 203.0.113.1, 10.1.2.3, 10.4.5.6";
        has_a_fresh_budget(&app, &[(XFF, chain)]).await;
        is_spent(&app, &[(XFF, "203.0.113.1")]).await;
        is_spent(&app, &[(XFF, "203.0.113.1"), (XFF, "10.1.2.3")]).await;
    }

    async fn x_forwarded_for_with_ports_and_ipv6_names_the_client(backend: Backend) {
        let app = behind(backend, &["127.0.0.1"], ForwardingHeader::XForwardedFor).await;
        has_a_fresh_budget(&app, &[(XFF, "203.0.113.1:4711")]).await;
        is_spent(&app, &[(XFF, "203.0.113.1")]).await;
        has_a_fresh_budget(&app, &[(XFF, "[2001:db8:1:2::1]:4711")]).await;
        // An IPv6 client is counted by its /64 network.
        is_spent(&app, &[(XFF, "2001:db8:1:2::ffff")]).await;
        has_a_fresh_budget(&app, &[(XFF, "2001:db8:1:3::1")]).await;
    }

    async fn forwarded_names_the_client_in_each_of_its_forms(backend: Backend) {
        let app = behind(backend, &["127.0.0.1"], ForwardingHeader::Forwarded).await;
        const FWD: &str = "forwarded";
        has_a_fresh_budget(&app, &[(FWD, "for=\"[2001:db8::1]:4711\";proto=https")]).await;
        is_spent(&app, &[(FWD, "for=\"[2001:db8::2]\"")]).await;
        has_a_fresh_budget(&app, &[(FWD, "For=192.0.2.60;proto=http;by=203.0.113.43")]).await;
        is_spent(&app, &[(FWD, "for=\"192.0.2.60:8080\"")]).await;
        is_spent(&app, &[(FWD, "for=198.51.100.1, for=192.0.2.60")]).await;
        is_spent(&app, &[(FWD, "for=198.51.100.1"), (FWD, "for=192.0.2.60")]).await;
        // With Forwarded configured, X-Forwarded-For is what the client wrote: ignored.
        has_a_fresh_budget(&app, &[(XFF, "203.0.113.1")]).await;
        is_spent(&app, &[(XFF, "203.0.113.2")]).await;
    }

    async fn with_x_forwarded_for_configured_a_forged_forwarded_header_is_ignored(backend: Backend) {
        let app = behind(backend, &["127.0.0.1"], ForwardingHeader::XForwardedFor).await;
        has_a_fresh_budget(&app, &[(XFF, "203.0.113.1")]).await;
        is_spent(&app, &[("forwarded", "for=198.51.100.1"), (XFF, "203.0.113.1")]).await;
    }

    async fn malformed_forwarding_headers_fall_back_to_the_peer_never_to_an_error(backend: Backend) {
        let app = behind(backend, &["127.0.0.1"], ForwardingHeader::XForwardedFor).await;
        // Each of these names no usable client: the proxy's own address (one budget) is used.
        let malformed = ["garbage", "unknown", "", "203.0.113.1,", "203.0.113.1;x", "1.2.3.4.5"];
        has_a_fresh_budget(&app, &[(XFF, malformed[0])]).await;
        for value in &malformed[1..] {
            is_spent(&app, &[(XFF, value)]).await;
        }
        is_spent(&app, &[]).await;
        let forwarded = behind(backend, &["127.0.0.1"], ForwardingHeader::Forwarded).await;
        has_a_fresh_budget(&forwarded, &[("forwarded", "for=unknown")]).await;
        for value in ["for=_hidden", "proto=https", "for=2001:db8::1", "for=\"[nope]\"", "nonsense"] {
            is_spent(&forwarded, &[("forwarded", value)]).await;
        }
    }

    async fn every_address_forwarded_through_the_proxy_is_a_real_budget_on_sign_up_too(backend: Backend) {
        let app = behind(backend, &["127.0.0.1"], ForwardingHeader::XForwardedFor).await;
        for (n, client) in ["203.0.113.1", "203.0.113.2"].into_iter().enumerate() {
            for m in 0..2 {
                let name = format!("user{n}x{m}");
                let response = app
                    .request(Method::POST, "/api/auth/signup")
                    .header(XFF, client)
                    .json(&json!({
                        "username": name,
                        "email": format!("{name}@example.com"),
                        "password": PASSWORD,
                        "confirm_password": PASSWORD,
                    }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::CREATED, "{name} from {client}");
            }
            is_spent(&app, &[(XFF, client)]).await;
        }
    }
}

/// The request log line names the client address: the forwarded one behind a trusted proxy,
/// the peer otherwise.
#[tokio::test]
async fn the_request_log_line_shows_the_client_address() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start(&database, &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let client = reqwest::Client::new();
    let response = client
        .get(server.url("/health"))
        .header(XFF, "198.51.100.1, 203.0.113.77")
        .header("x-request-id", "forwarded-request")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        server
            .wait_for_log("client=203.0.113.77", Duration::from_secs(10))
            .await,
        "the log shows the forwarded client:\n{}",
        server.log()
    );
    assert!(!server.log().contains("client=198.51.100.1"));

    let untrusted = TestDatabase::create(Backend::Sqlite).await;
    let server = ServerProcess::start(&untrusted, &[]).await;
    client
        .get(server.url("/health"))
        .header(XFF, "203.0.113.78")
        .send()
        .await
        .unwrap();
    assert!(
        server
            .wait_for_log("client=127.0.0.1", Duration::from_secs(10))
            .await,
        "without trusted proxies the log shows the peer:\n{}",
        server.log()
    );
    assert!(!server.log().contains("203.0.113.78"));
}

/// A bad `TRUSTED_PROXIES` entry stops start-up, naming the variable and the entry.
#[tokio::test]
async fn a_bad_trusted_proxies_entry_stops_start_up_naming_the_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_todo-api"))
        .env_clear()
        .env("DATABASE_URL", "sqlite::memory:")
        .env("TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal")
        .output()
        .expect("run todo-api");
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("TRUSTED_PROXIES") && text.contains("proxy.internal"),
        "{text}"
    );
}
