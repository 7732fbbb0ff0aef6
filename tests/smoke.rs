mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_databases! {
    async fn a_new_user_can_create_and_read_a_task(app: TestApp) {
        let alice = app.signup("alice").await;
        let task = app.create_task(&alice, json!({"title": "Buy milk"})).await;
        let (status, body) = app
            .get_json(&alice, &TestApp::task_path(&alice, task["id"].as_str().unwrap()))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, task);
        let response = app.request(Method::GET, "/health").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
