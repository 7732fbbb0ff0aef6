//! The live event feed from a browser page on another origin (issue 8): Debian's headless
//! Chromium, driven by `playwright-core` (pinned in `tests/browser/package-lock.json`,
//! installed by `scripts/test.sh` with `npm ci`), loads a page from a second local server and
//! reads `GET /api/{user_id}/events` with `fetch()` streaming, `Authorization: Bearer` and
//! `Accept: text/event-stream`, across CORS, on SQLite and PostgreSQL.

mod common;

use std::{path::Path, process::Command};

use axum::{Router, response::Html, routing::get};
use common::*;
use serde_json::Value;

/// Serves a blank page, the other origin the feed is read from; its address.
async fn serve_page() -> String {
    let router = Router::new().route(
        "/",
        get(|| async { Html("<!doctype html><title>feed</title><p>another origin</p>") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the page server");
    let address = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        axum::serve(listener, router).await.ok();
    });
    address
}

on_both_backends! {
    async fn a_page_on_another_origin_reads_the_live_feed_with_fetch_streaming(backend: Backend) {
        let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            browser_dir.join("node_modules/playwright-core").is_dir(),
            "run `npm ci --prefix tests/browser` (scripts/test.sh does) and install chromium"
        );
        let page = serve_page().await;
        let origin = page.clone();
        let app = TestApp::spawn_with(backend, move |settings| {
            settings.cors_origins = vec![origin];
        })
        .await;
        let alice = app.signup("alice").await;
        let (address, user_id, token) = (app.address.clone(), alice.id.clone(), alice.token.clone());
        let output = tokio::task::spawn_blocking(move || {
            Command::new("node")
                .current_dir(&browser_dir)
                .args(["feed.mjs", &format!("{page}/"), &address, &user_id, &token, "3"])
                .output()
                .expect("node runs")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the browser run failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let result: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        assert!(result["error"].is_null(), "{result}");
        let events = result["events"].as_array().unwrap();
        assert_eq!(events.len(), 3, "{result}");
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event["event"], "todo.task.created");
            assert_eq!(event["id"], event["data"]["sequence"]);
            assert_eq!(event["data"]["userid"], alice.id.as_str());
            assert_eq!(event["data"]["data"]["title"], format!("from the browser {n}"));
        }
        assert_ne!(result["origin"].as_str().unwrap(), app.address, "the page is another origin");
    }
}
