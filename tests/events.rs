//! Task events (issue 8): the transactional outbox, the relay and its sinks, the feed.
//!
//! Every case runs on SQLite and PostgreSQL unless its name says PostgreSQL. The Dapr sidecar
//! here is a stand-in: `daprd` cannot be installed from the package registries this project
//! reaches, so [`Sidecar`] is a small HTTP server speaking Dapr's publish endpoint
//! (`POST /v1.0/publish/{pubsub}/{topic}?metadata.partitionKey=…`, 204 on success), which can
//! on purpose answer 500, answer slowly, or not listen at all. The relay is the same code
//! either way; only the far end is simulated.
//!
//! No assertion is about speed: each waits for behaviour within a generous bound.

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/process.rs"]
mod process;

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use cloudevents::AttributesReader;
use cluster::{Cluster, PgBouncer, blocking};
use common::*;
use process::{ServerProcess, TestDatabase, free_port};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const BOUND: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Helpers: the feed, an SSE reader, and the sink stand-in.
// ---------------------------------------------------------------------------------------

/// Every event of `user` through the JSON feed, walking pages of `limit`.
async fn all_events(address: &str, user: &TestUser, limit: u32) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut after = "0".to_owned();
    let mut events = Vec::new();
    loop {
        let response = client
            .get(format!(
                "{address}/api/{}/events?after={after}&limit={limit}",
                user.id
            ))
            .bearer_auth(&user.token)
            .send()
            .await
            .expect("feed request");
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.expect("feed page");
        let items = page["items"].as_array().expect("items").clone();
        assert!(items.len() <= limit as usize, "a page holds at most limit");
        let next = page["next"].as_str().expect("next").to_owned();
        if items.is_empty() {
            assert_eq!(
                next.trim_start_matches('0'),
                after.trim_start_matches('0'),
                "an empty page keeps its cursor"
            );
            return events;
        }
        assert_eq!(
            next,
            items.last().unwrap()["sequence"].as_str().unwrap(),
            "next is the last item's sequence"
        );
        events.extend(items);
        after = next;
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct SseFrame {
    id: String,
    event: String,
    data: Value,
}

/// Reads a `text/event-stream` response frame by frame.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
    comments: usize,
}

impl SseReader {
    async fn open(address: &str, user: &TestUser, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new()
            .get(format!("{address}/api/{}/events", user.id))
            .bearer_auth(&user.token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("stream request");
        assert_eq!(response.status(), StatusCode::OK, "the stream opens");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            response,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<SseFrame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                let mut comment = false;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    } else if line.starts_with(':') {
                        comment = true;
                    }
                }
                if data.is_empty() {
                    if comment {
                        self.comments += 1;
                    }
                    continue;
                }
                let data = serde_json::from_str(&data).expect("data is the CloudEvent JSON");
                return Some(SseFrame { id, event, data });
            }
            match self.response.chunk().await.expect("read the stream") {
                Some(chunk) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                None => return None,
            }
        }
    }

    /// The next event within [`BOUND`]; panics if none comes.
    async fn expect_next(&mut self) -> SseFrame {
        tokio::time::timeout(BOUND, self.next())
            .await
            .expect("an event arrives on the stream")
            .expect("the stream is still open")
    }
}

/// How the sink stand-in answers one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Accept,
    Fail,
    /// Answers 204 after the delay (longer than the relay's sink timeout: a timeout for the
    /// relay, which retries, while the stand-in records a delivery: a duplicate).
    Slow(Duration),
}

/// A request the stand-in took (answered 204 or 2xx).
#[derive(Clone, Debug)]
struct Delivery {
    path: String,
    partition_key: Option<String>,
    content_type: String,
    api_token: Option<String>,
    event: Value,
}

#[derive(Clone, Default)]
struct SinkState {
    script: Arc<Mutex<VecDeque<Answer>>>,
    delivered: Arc<Mutex<Vec<Delivery>>>,
    refused: Arc<Mutex<usize>>,
}

/// A Dapr sidecar stand-in (and, on another path, a plain webhook): records each event it
/// accepts, answering as its script says (204 once the script is used up).
struct Sidecar {
    port: u16,
    state: SinkState,
    server: Option<tokio::task::JoinHandle<()>>,
}

async fn publish(
    State(state): State<SinkState>,
    Path((pubsub, topic)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> AxumStatus {
    take(
        &state,
        format!("/v1.0/publish/{pubsub}/{topic}"),
        query,
        headers,
        body,
        AxumStatus::NO_CONTENT,
    )
    .await
}

async fn webhook(
    State(state): State<SinkState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> AxumStatus {
    take(
        &state,
        "/hook".to_owned(),
        query,
        headers,
        body,
        AxumStatus::ACCEPTED,
    )
    .await
}

async fn take(
    state: &SinkState,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: String,
    success: AxumStatus,
) -> AxumStatus {
    let answer = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::Accept);
    match answer {
        Answer::Fail => {
            *state.refused.lock().unwrap() += 1;
            return AxumStatus::INTERNAL_SERVER_ERROR;
        }
        Answer::Slow(delay) => tokio::time::sleep(delay).await,
        Answer::Accept => {}
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    state.delivered.lock().unwrap().push(Delivery {
        path,
        partition_key: query.get("metadata.partitionKey").cloned(),
        content_type: header("content-type").unwrap_or_default(),
        api_token: header("dapr-api-token"),
        event: serde_json::from_str(&body).expect("the body is JSON"),
    });
    success
}

impl Sidecar {
    /// A stand-in for `port`, not listening yet.
    fn new(port: u16) -> Self {
        Self {
            port,
            state: SinkState::default(),
            server: None,
        }
    }

    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    async fn listen(&mut self) {
        let router = Router::new()
            .route("/v1.0/publish/{pubsub}/{topic}", post(publish))
            .route("/hook", post(webhook))
            .with_state(self.state.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], self.port)))
            .await
            .expect("the stand-in binds its port");
        self.server = Some(tokio::spawn(async move {
            axum::serve(listener, router).await.ok();
        }));
    }

    fn delivered(&self) -> Vec<Delivery> {
        self.state.delivered.lock().unwrap().clone()
    }

    /// Waits until every id in `ids` was delivered; the deliveries then.
    async fn wait_for(&self, ids: &HashSet<String>) -> Vec<Delivery> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let delivered = self.delivered();
            let seen: HashSet<String> = delivered
                .iter()
                .map(|d| d.event["id"].as_str().unwrap_or_default().to_owned())
                .collect();
            if ids.is_subset(&seen) {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} events delivered",
                ids.intersection(&seen).count(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

fn ids(events: &[Value]) -> HashSet<String> {
    events
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks at-least-once delivery of `expected` (the feed's events): every one arrived, a
/// duplicate is the same event byte for byte, and each user's first deliveries come in
/// sequence order.
fn check_deliveries(expected: &[Value], delivered: &[Delivery]) {
    let by_id: HashMap<&str, &Value> = expected
        .iter()
        .map(|event| (event["id"].as_str().unwrap(), event))
        .collect();
    let mut first_seen = HashSet::new();
    let mut last_sequence_per_user: HashMap<String, String> = HashMap::new();
    for delivery in delivered {
        let id = delivery.event["id"].as_str().expect("an id");
        let original = by_id.get(id).expect("only events of the log are delivered");
        assert_eq!(
            &delivery.event, *original,
            "a delivery (or retry) is the same event"
        );
        if first_seen.insert(id.to_owned()) {
            let user = delivery.event["userid"].as_str().unwrap().to_owned();
            let sequence = delivery.event["sequence"].as_str().unwrap().to_owned();
            if let Some(last) = last_sequence_per_user.get(&user) {
                assert!(
                    *last < sequence,
                    "events of {user} in order: {last} then {sequence}"
                );
            }
            last_sequence_per_user.insert(user, sequence);
        }
    }
    assert_eq!(first_seen, ids(expected), "every event was delivered");
}

/// The attributes every event carries, checked against the task it is about.
fn check_cloudevent(event: &Value, user: &TestUser) {
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["source"], "todo-api");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["userid"], user.id.as_str());
    assert_eq!(event["subject"], event["data"]["id"]);
    uuid::Uuid::parse_str(event["id"].as_str().unwrap()).expect("id is a UUID");
    let sequence = event["sequence"].as_str().unwrap();
    assert!(sequence.len() == 20 && sequence.bytes().all(|b| b.is_ascii_digit()));
    timestamp(&event["time"]);
    // The official SDK reads it back as a CloudEvent.
    let parsed: cloudevents::Event =
        serde_json::from_value(event.clone()).expect("a valid CloudEvents 1.0 event");
    assert_eq!(parsed.id(), event["id"].as_str().unwrap());
}

// ---------------------------------------------------------------------------------------
// The outbox: an event for every committed change, none for a refused one.
// ---------------------------------------------------------------------------------------

/// A request of the burst: method, path, body, `If-Match`, the status it must get, and the
/// type of the event it must make (empty: none).
type Step = (
    Method,
    String,
    Option<Value>,
    Option<&'static str>,
    StatusCode,
    &'static str,
);

on_both_databases! {
    async fn each_committed_change_writes_one_event_and_refused_changes_write_none(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        // What the events must say, in order: (type, the task as the API answered).
        let mut expected: Vec<(&str, Value)> = Vec::new();
        let mut task_ids = Vec::new();
        for n in 0..4 {
            let task = app.create_task(&alice, json!({"title": format!("task {n}")})).await;
            task_ids.push(task["id"].as_str().unwrap().to_owned());
            expected.push(("todo.task.created", task));
        }
        app.create_task(&bob, json!({"title": "bob's"})).await;
        let call = |method: Method, path: String, body: Option<Value>, etag: Option<&str>| {
            let mut request = app.authed(method, &path, &alice.token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            if let Some(etag) = etag {
                request = request.header("if-match", etag);
            }
            request.send()
        };
        let task = |n: usize| TestApp::task_path(&alice, &task_ids[n]);
        let complete = |n: usize| format!("{}/complete", task(n));
        // Accepted changes, with refused ones between them.
        let steps: Vec<Step> = vec![
            (Method::PATCH, task(0), Some(json!({"title": "renamed"})), None, StatusCode::OK, "todo.task.updated"),
            (Method::PATCH, task(0), Some(json!({"title": ""})), None, StatusCode::BAD_REQUEST, ""),
            (Method::PATCH, complete(0), Some(json!({"completed": true})), None, StatusCode::OK, "todo.task.completed"),
            (Method::PATCH, complete(0), Some(json!({"completed": true})), None, StatusCode::OK, "todo.task.updated"),
            (Method::PATCH, complete(0), None, None, StatusCode::OK, "todo.task.updated"),
            (Method::PATCH, complete(0), None, None, StatusCode::OK, "todo.task.completed"),
            (Method::PUT, task(1), Some(json!({"title": "t1", "description": "d", "completed": true})), None, StatusCode::OK, "todo.task.completed"),
            (Method::PUT, task(1), Some(json!({"title": "t1", "description": null, "completed": true})), Some("\"1\""), StatusCode::PRECONDITION_FAILED, ""),
            (Method::PATCH, task(2), Some(json!({"completed": false})), None, StatusCode::OK, "todo.task.updated"),
            (Method::PATCH, task(2), Some(json!({"colour": "red"})), None, StatusCode::BAD_REQUEST, ""),
            (Method::PATCH, TestApp::task_path(&alice, &uuid::Uuid::new_v4().to_string()), Some(json!({"title": "x"})), None, StatusCode::NOT_FOUND, ""),
            (Method::DELETE, task(3), None, Some("\"9\""), StatusCode::PRECONDITION_FAILED, ""),
            (Method::DELETE, task(3), None, None, StatusCode::OK, "todo.task.deleted"),
            (Method::DELETE, task(3), None, None, StatusCode::NOT_FOUND, ""),
            (Method::POST, TestApp::tasks_path(&alice), Some(json!({"title": "  "})), None, StatusCode::BAD_REQUEST, ""),
            (Method::PATCH, TestApp::task_path(&bob, &task_ids[2]), Some(json!({"title": "not yours"})), None, StatusCode::FORBIDDEN, ""),
        ];
        for (method, path, body, etag, status, event_type) in steps {
            let response = call(method.clone(), path.clone(), body.clone(), etag).await.expect("request");
            assert_eq!(response.status(), status, "{method} {path} {body:?}");
            if !event_type.is_empty() {
                expected.push((event_type, response.json().await.expect("a task")));
            }
        }
        let events = all_events(&app.address, &alice, 3).await;
        let actual: Vec<(&str, Value)> = events
            .iter()
            .map(|event| (event["type"].as_str().unwrap(), event["data"].clone()))
            .collect();
        assert_eq!(actual, expected, "one event per accepted change, in order, with its task");
        let mut sequences = Vec::new();
        for event in &events {
            check_cloudevent(event, &alice);
            sequences.push(event["sequence"].as_str().unwrap().to_owned());
        }
        assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]), "sequences increase");
        assert_eq!(ids(&events).len(), events.len(), "ids are unique");
        let bobs = all_events(&app.address, &bob, 100).await;
        assert_eq!(bobs.len(), 1);
        assert_eq!(bobs[0]["userid"], bob.id.as_str());
    }

    async fn concurrent_writers_get_strictly_increasing_sequences(app: TestApp) {
        let mut users = Vec::new();
        for n in 0..4 {
            users.push(app.signup(&format!("writer{n}")).await);
        }
        let app = &app;
        let writes = users.iter().flat_map(|user| {
            (0..10).map(move |n| app.create_task(user, json!({"title": format!("{n}")})))
        });
        futures_util::future::join_all(writes).await;
        let mut all = Vec::new();
        for user in &users {
            let events = all_events(&app.address, user, 100).await;
            assert_eq!(events.len(), 10);
            all.extend(events);
        }
        let mut sequences: Vec<u64> = all
            .iter()
            .map(|event| event["sequence"].as_str().unwrap().parse().unwrap())
            .collect();
        sequences.sort();
        sequences.dedup();
        assert_eq!(sequences, (1..=40).collect::<Vec<u64>>(), "one sequence per event, no gaps");
    }
}

// ---------------------------------------------------------------------------------------
// The feed: isolation, paging, the live stream.
// ---------------------------------------------------------------------------------------

on_both_databases! {
    async fn the_feed_shows_only_ones_own_events_and_refuses_what_task_routes_refuse(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        app.create_task(&alice, json!({"title": "alice's"})).await;
        app.create_task(&bob, json!({"title": "bob's secret"})).await;
        let path = format!("/api/{}/events", alice.id);
        expect_unauthorized(app.request(Method::GET, &path).send().await.unwrap(), "no token").await;
        expect_unauthorized(
            app.request(Method::GET, &path).header("accept", "text/event-stream").send().await.unwrap(),
            "no token on a stream",
        )
        .await;
        let response = app.authed(Method::GET, &path, &bob.token).send().await.unwrap();
        expect_problem(response, StatusCode::FORBIDDEN).await;
        let response = app
            .authed(Method::GET, &path, &bob.token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::FORBIDDEN).await;
        for (query, field) in [
            ("after=-1", "after"),
            ("after=abc", "after"),
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=%2B5", "limit"),
            ("page=1", "page"),
        ] {
            let response = app
                .authed(Method::GET, &format!("{path}?{query}"), &alice.token)
                .send()
                .await
                .unwrap();
            let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
            assert_eq!(error_fields(&problem), vec![field], "{query}");
        }
        let response = app
            .authed(Method::GET, &path, &alice.token)
            .header("accept", "text/event-stream")
            .header("last-event-id", "not-a-sequence")
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(error_fields(&problem), vec!["Last-Event-ID"]);
        let events = all_events(&app.address, &alice, 100).await;
        assert_eq!(events.len(), 1);
        assert!(events.iter().all(|event| event["userid"] == alice.id.as_str()));
        assert!(!events.iter().any(|event| event.to_string().contains("bob's secret")));
    }

    async fn paging_with_after_visits_every_event_once(app: TestApp) {
        let alice = app.signup("alice").await;
        for n in 0..7 {
            app.create_task(&alice, json!({"title": format!("{n}")})).await;
        }
        let (status, first) = app
            .get_json(&alice, &format!("/api/{}/events?limit=3", alice.id))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(first["items"].as_array().unwrap().len(), 3);
        let (_, second) = app
            .get_json(
                &alice,
                &format!("/api/{}/events?limit=3&after={}", alice.id, first["next"].as_str().unwrap()),
            )
            .await;
        assert_eq!(second["items"][0]["data"]["title"], "3");
        // Unpadded sequences are read too.
        let unpadded = first["next"].as_str().unwrap().trim_start_matches('0').to_owned();
        let (_, again) = app
            .get_json(&alice, &format!("/api/{}/events?limit=3&after={unpadded}", alice.id))
            .await;
        assert_eq!(again["items"], second["items"]);
        let events = all_events(&app.address, &alice, 2).await;
        let titles: Vec<&str> = events.iter().map(|e| e["data"]["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["0", "1", "2", "3", "4", "5", "6"]);
        // Default page size is 50: all seven at once, past the end nothing.
        let (_, all) = app.get_json(&alice, &format!("/api/{}/events", alice.id)).await;
        assert_eq!(all["items"].as_array().unwrap().len(), 7);
        let (_, past) = app
            .get_json(&alice, &format!("/api/{}/events?after={}", alice.id, all["next"].as_str().unwrap()))
            .await;
        assert_eq!(past["items"], json!([]));
        assert_eq!(past["next"], all["next"]);
    }

    async fn a_live_stream_delivers_changes_and_resumes_after_last_event_id(app: TestApp) {
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let before = app.create_task(&alice, json!({"title": "before the stream"})).await;
        let mut stream = SseReader::open(&app.address, &alice, None).await;
        let task = app.create_task(&alice, json!({"title": "live"})).await;
        app.create_task(&bob, json!({"title": "bob's"})).await;
        let id = task["id"].as_str().unwrap();
        let response = app
            .authed(Method::PATCH, &format!("{}/complete", TestApp::task_path(&alice, id)), &alice.token)
            .json(&json!({"completed": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // A stream without a cursor starts from now: the earlier task is not replayed.
        let created = stream.expect_next().await;
        assert_eq!(created.event, "todo.task.created");
        assert_eq!(created.data["data"], task);
        assert_eq!(created.id, created.data["sequence"].as_str().unwrap());
        check_cloudevent(&created.data, &alice);
        let completed = stream.expect_next().await;
        assert_eq!(completed.event, "todo.task.completed");
        assert!(completed.id > created.id);
        drop(stream);

        // While no stream is open, more changes; a stream resuming after the last id it saw
        // gets exactly those, and nothing of bob's.
        let response = app
            .authed(Method::DELETE, &TestApp::task_path(&alice, id), &alice.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        app.create_task(&alice, json!({"title": "after"})).await;
        let mut resumed = SseReader::open(&app.address, &alice, Some(&completed.id)).await;
        let deleted = resumed.expect_next().await;
        assert_eq!(deleted.event, "todo.task.deleted");
        assert_eq!(deleted.data["data"]["id"], id);
        let after = resumed.expect_next().await;
        assert_eq!(after.data["data"]["title"], "after");
        // `after=0` replays from the start.
        let response = reqwest::Client::new()
            .get(app.url(&format!("/api/{}/events?after=0", alice.id)))
            .bearer_auth(&alice.token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        let mut replay = SseReader { response, buffer: String::new(), comments: 0 };
        assert_eq!(replay.expect_next().await.data["data"], before);
    }
}

on_both_backends! {
    async fn streams_count_against_the_per_user_cap_and_end_on_shutdown(backend: Backend) {
        let app = TestApp::spawn_with(backend, |settings| {
            settings.events.streams_per_user = 2;
            settings.shutdown_grace = Duration::from_secs(120);
        })
        .await;
        let alice = app.signup("alice").await;
        let bob = app.signup("bob").await;
        let mut first = SseReader::open(&app.address, &alice, None).await;
        let second = SseReader::open(&app.address, &alice, None).await;
        let response = app
            .authed(Method::GET, &format!("/api/{}/events", alice.id), &alice.token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("retry-after"));
        expect_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
        // The cap is per user, and JSON pages are not streams.
        let _bobs = SseReader::open(&app.address, &bob, None).await;
        let (status, _) = app.get_json(&alice, &format!("/api/{}/events", alice.id)).await;
        assert_eq!(status, StatusCode::OK);
        // A closed stream frees its place.
        drop(second);
        let deadline = Instant::now() + BOUND;
        let mut third = loop {
            let response = app
                .authed(Method::GET, &format!("/api/{}/events", alice.id), &alice.token)
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap();
            if response.status() == StatusCode::OK {
                break SseReader { response, buffer: String::new(), comments: 0 };
            }
            assert!(Instant::now() < deadline, "the closed stream's place is freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Shutdown ends open streams instead of waiting out the 120 s grace period.
        let stopped = tokio::spawn(app.stop());
        assert!(tokio::time::timeout(BOUND, first.next()).await.expect("the stream ends").is_none());
        assert!(tokio::time::timeout(BOUND, third.next()).await.expect("the stream ends").is_none());
        tokio::time::timeout(BOUND, stopped)
            .await
            .expect("shutdown does not wait for the grace period")
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The relay and its sinks.
// ---------------------------------------------------------------------------------------

on_both_backends! {
    async fn a_dapr_sidecar_that_fails_stalls_or_is_absent_still_gets_every_event_in_order(backend: Backend) {
        let port = free_port();
        let mut sidecar = Sidecar::new(port);
        let app = TestApp::spawn_with(backend, |settings| {
            settings.events = todo_api::events::EventSettings::from_lookup(|name| {
                match name {
                    "EVENTS_SINK" => Some("dapr".into()),
                    "DAPR_HTTP_PORT" => Some(port.to_string()),
                    "DAPR_PUBSUB_NAME" => Some("kafka".into()),
                    "EVENTS_TOPIC" => Some("todo-events".into()),
                    "DAPR_API_TOKEN" => Some("sidecar-token".into()),
                    "EVENTS_SINK_TIMEOUT_SECONDS" => Some("1".into()),
                    "EVENTS_RETRY_MAX_SECONDS" => Some("1".into()),
                    _ => None,
                }
            })
            .unwrap();
        })
        .await;
        let mut users = Vec::new();
        for n in 0..3 {
            users.push(app.signup(&format!("user{n}")).await);
        }
        // The sidecar is not listening yet: writes succeed all the same (requests never wait
        // for the sink), and the lag shows at /ready.
        for user in &users {
            for n in 0..4 {
                let task = app.create_task(user, json!({"title": format!("{n}")})).await;
                let response = app
                    .authed(Method::PATCH, &format!("{}/complete", TestApp::task_path(user, task["id"].as_str().unwrap())), &user.token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        }
        let deadline = Instant::now() + BOUND;
        loop {
            let ready: Value = app.request(Method::GET, "/ready").send().await.unwrap().json().await.unwrap();
            if ready["events"]["pending"].as_u64().unwrap_or(0) > 0 {
                assert_eq!(ready["status"], "ready", "lag does not make the service unready");
                assert_eq!(ready["events"]["relay"], "leader");
                break;
            }
            assert!(Instant::now() < deadline, "the backlog shows at /ready: {ready}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Then it comes up, failing some requests and stalling others past the timeout.
        sidecar.script([
            Answer::Fail,
            Answer::Accept,
            Answer::Fail,
            Answer::Fail,
            Answer::Slow(Duration::from_millis(1500)),
            Answer::Accept,
            Answer::Accept,
            Answer::Fail,
            Answer::Slow(Duration::from_millis(1500)),
        ]);
        sidecar.listen().await;
        let mut expected = Vec::new();
        for user in &users {
            expected.extend(all_events(&app.address, user, 100).await);
        }
        assert_eq!(expected.len(), 24);
        let delivered = sidecar.wait_for(&ids(&expected)).await;
        check_deliveries(&expected, &delivered);
        assert!(*sidecar.state.refused.lock().unwrap() >= 4, "the failures were exercised");
        for delivery in &delivered {
            assert_eq!(delivery.path, "/v1.0/publish/kafka/todo-events");
            assert_eq!(delivery.content_type, "application/cloudevents+json");
            assert_eq!(delivery.api_token.as_deref(), Some("sidecar-token"));
            assert_eq!(
                delivery.partition_key.as_deref(),
                delivery.event["userid"].as_str(),
                "partitioned by owner"
            );
        }
        let deadline = Instant::now() + BOUND;
        loop {
            let ready: Value = app.request(Method::GET, "/ready").send().await.unwrap().json().await.unwrap();
            if ready["events"]["pending"] == 0 {
                assert_eq!(ready["events"]["oldest_pending_age_seconds"], 0.0);
                break;
            }
            assert!(Instant::now() < deadline, "the backlog drains: {ready}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

on_both_backends! {
    async fn events_committed_before_a_sigkill_are_all_published_after_the_restart(backend: Backend) {
        let database = TestDatabase::create(backend).await;
        let sink_port = free_port();
        let hook = format!("http://127.0.0.1:{sink_port}/hook");
        let env = [
            ("EVENTS_SINK", "http"),
            ("EVENTS_HTTP_URL", hook.as_str()),
            ("EVENTS_SINK_TIMEOUT_SECONDS", "1"),
            ("EVENTS_RETRY_MAX_SECONDS", "1"),
            ("RUST_LOG", "info"),
        ];
        let mut server = ServerProcess::start(&database, &env).await;
        let app_client = reqwest::Client::new();
        let user = signup_at(&app_client, &server.address, "alice").await;
        // The sink is down: every event is committed and none published when the process dies.
        let mut written = 0;
        for n in 0..20 {
            let response = app_client
                .post(server.url(&format!("/api/{}/tasks", user.id)))
                .bearer_auth(&user.token)
                .json(&json!({"title": format!("{n}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            written += 1;
        }
        assert!(
            server.wait_for_log("publishing a task event failed", BOUND).await,
            "the relay tried the absent sink:\n{}",
            server.log()
        );
        server.kill();

        let mut sink = Sidecar::new(sink_port);
        sink.listen().await;
        let server = ServerProcess::start(&database, &env).await;
        let expected = all_events(&server.address, &user, 100).await;
        assert_eq!(expected.len(), written, "every acknowledged change has its event");
        let delivered = sink.wait_for(&ids(&expected)).await;
        check_deliveries(&expected, &delivered);
        assert!(delivered.iter().all(|d| d.content_type == "application/cloudevents+json"));
    }
}

async fn signup_at(client: &reqwest::Client, address: &str, username: &str) -> TestUser {
    let response = client
        .post(format!("{address}/api/auth/signup"))
        .json(&json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": PASSWORD,
            "confirm_password": PASSWORD,
        }))
        .send()
        .await
        .expect("signup");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    TestUser {
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        username: username.to_owned(),
        email: format!("{username}@example.com"),
        password: PASSWORD.to_owned(),
        token: body["access_token"].as_str().unwrap().to_owned(),
    }
}

async fn create_at(address: &str, user: &TestUser, title: &str) {
    let response = reqwest::Client::new()
        .post(format!("{address}/api/{}/tasks", user.id))
        .bearer_auth(&user.token)
        .json(&json!({"title": title}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn relay_role(address: &str) -> String {
    let ready: Value = reqwest::get(format!("{address}/ready"))
        .await
        .expect("ready")
        .json()
        .await
        .expect("ready body");
    ready["events"]["relay"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Two instances on one PostgreSQL database (directly, or through PgBouncer in transaction
/// mode): one relay publishes, each event once; SIGKILL it and the other takes over.
async fn two_instances_publish_once_and_survive_the_publishers_death(
    database: &TestDatabase,
    url: &str,
) {
    let sink_port = free_port();
    let mut sink = Sidecar::new(sink_port);
    sink.listen().await;
    let hook = format!("http://127.0.0.1:{sink_port}/hook");
    let env = [
        ("DATABASE_URL", url),
        ("MIGRATE_ON_START", "false"),
        ("EVENTS_SINK", "http"),
        ("EVENTS_HTTP_URL", hook.as_str()),
        // The default sink timeout, so the lease (5 s) outlasts renewals delayed by a busy
        // test machine: a standby taking over from a live leader would publish duplicates.
        ("EVENTS_RETRY_MAX_SECONDS", "1"),
        ("RUST_LOG", "info"),
    ];
    let mut first = ServerProcess::start(database, &env).await;
    let mut second = ServerProcess::start(database, &env).await;
    let client = reqwest::Client::new();
    let user = signup_at(&client, &first.address, "alice").await;
    for n in 0..10 {
        let address = if n % 2 == 0 {
            &first.address
        } else {
            &second.address
        };
        create_at(address, &user, &format!("{n}")).await;
    }
    let expected = all_events(&first.address, &user, 100).await;
    assert_eq!(expected.len(), 10);
    let delivered = sink.wait_for(&ids(&expected)).await;
    check_deliveries(&expected, &delivered);
    // Give a second relay the chance to misbehave, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sink.delivered().len(),
        10,
        "each event published once: {:#?}",
        sink.delivered()
    );

    // Kill the publisher; the other instance carries on.
    let deadline = Instant::now() + BOUND;
    let (leader, survivor) = loop {
        let (a, b) = (
            relay_role(&first.address).await,
            relay_role(&second.address).await,
        );
        if a == "leader" && b == "standby" {
            break (&mut first, &mut second);
        }
        if b == "leader" && a == "standby" {
            break (&mut second, &mut first);
        }
        assert!(
            Instant::now() < deadline,
            "one leader and one standby: {a}, {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    leader.kill();
    for n in 10..15 {
        create_at(&survivor.address, &user, &format!("{n}")).await;
    }
    let expected = all_events(&survivor.address, &user, 100).await;
    assert_eq!(expected.len(), 15);
    let delivered = sink.wait_for(&ids(&expected)).await;
    check_deliveries(&expected, &delivered);
    assert!(
        survivor.log().contains("event relay holds the lease"),
        "{}",
        survivor.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_instances_publish_each_event_once_and_one_takes_over_from_a_killed_one() {
    let database = TestDatabase::create(Backend::Postgres).await;
    // The schema first, as a deployment would migrate before scaling out.
    TestApp::spawn_on(&database.url, |_| {}).await.stop().await;
    two_instances_publish_once_and_survive_the_publishers_death(&database, &database.url).await;
}

/// The relay lease is a row with an expiry, no session state: it works through PgBouncer in
/// transaction mode (`pgbouncer=true`), where a session advisory lock would not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_through_pgbouncer_two_instances_publish_once_and_one_takes_over() {
    let cluster = blocking(Cluster::start_new);
    let direct = blocking(|| cluster.create_database("todo"));
    TestApp::spawn_on(&direct, |_| {}).await.stop().await;
    let bouncer = blocking(|| PgBouncer::start_transaction_mode(&cluster, 4));
    // The database is the cluster's; TestDatabase only lends a working directory.
    let workdir = TestDatabase::create(Backend::Sqlite).await;
    two_instances_publish_once_and_survive_the_publishers_death(&workdir, &bouncer.url("todo"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_change_through_one_instance_reaches_a_stream_on_another() {
    let first = TestApp::spawn(Backend::Postgres).await;
    let second = TestApp::spawn_on(&first.database_url, |_| {}).await;
    let alice = first.signup("alice").await;
    let mut stream = SseReader::open(&second.address, &alice, None).await;
    for n in 0..3 {
        first
            .create_task(&alice, json!({"title": format!("via the first {n}")}))
            .await;
    }
    for n in 0..3 {
        let frame = stream.expect_next().await;
        assert_eq!(frame.data["data"]["title"], format!("via the first {n}"));
    }
    let mut by_sequence = BTreeMap::new();
    for event in all_events(&second.address, &alice, 100).await {
        by_sequence.insert(event["sequence"].as_str().unwrap().to_owned(), event);
    }
    assert_eq!(by_sequence.len(), 3);
}

on_both_backends! {
    async fn delivered_events_are_pruned_after_the_retention_period_and_pending_ones_never(backend: Backend) {
        let directory = tempfile::tempdir().unwrap();
        let (url, postgres_database) = match backend {
            Backend::Sqlite => (format!("sqlite://{}", directory.path().join("todo.db").display()), None),
            Backend::Postgres => {
                let (name, url) = create_test_database().await;
                (url, Some(name))
            }
        };
        let app = TestApp::spawn_on(&url, |_| {}).await;
        let alice = app.signup("alice").await;
        for n in 0..4 {
            app.create_task(&alice, json!({"title": format!("{n}")})).await;
        }
        let deadline = Instant::now() + BOUND;
        loop {
            let ready: Value = app.request(Method::GET, "/ready").send().await.unwrap().json().await.unwrap();
            if ready["events"]["pending"] == 0 && ready["events"]["relay"] == "leader" {
                break;
            }
            assert!(Instant::now() < deadline, "the log sink delivers: {ready}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app.stop().await;
        // Events 1 and 2 were delivered 169 hours ago (past the default 168); event 3 is
        // recent, and event 4 is made pending again but old: never pruned.
        match backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                sqlx::query("UPDATE task_events SET delivered_at = delivered_at - 169 * 3600 * 1000 WHERE sequence <= 2")
                    .execute(&pool).await.unwrap();
                sqlx::query("UPDATE task_events SET delivered_at = NULL, time = time - 169 * 3600 * 1000 WHERE sequence = 4")
                    .execute(&pool).await.unwrap();
                pool.close().await;
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                sqlx::query("UPDATE task_events SET delivered_at = now() - interval '169 hours' WHERE sequence <= 2")
                    .execute(&pool).await.unwrap();
                sqlx::query("UPDATE task_events SET delivered_at = NULL, time = now() - interval '169 hours' WHERE sequence = 4")
                    .execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
        // The sink is down after the restart, so event 4 stays pending while pruning runs.
        let app = TestApp::spawn_on(&url, |settings| {
            settings.events.sink = todo_api::events::SinkSettings::Http {
                url: format!("http://127.0.0.1:{}/hook", free_port()).parse().unwrap(),
            };
        })
        .await;
        let deadline = Instant::now() + BOUND;
        loop {
            let sequences: Vec<String> = all_events(&app.address, &alice, 100)
                .await
                .iter()
                .map(|event| event["sequence"].as_str().unwrap().trim_start_matches('0').to_owned())
                .collect();
            if sequences == ["3", "4"] {
                break;
            }
            assert!(Instant::now() < deadline, "old delivered events are pruned: {sequences:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ready: Value = app.request(Method::GET, "/ready").send().await.unwrap().json().await.unwrap();
        assert_eq!(ready["events"]["pending"], 1, "{ready}");
        assert!(ready["events"]["oldest_pending_age_seconds"].as_f64().unwrap() > 168.0 * 3600.0);
        app.stop().await;
        if let Some(name) = postgres_database {
            drop_test_database(name);
        }
    }
}
