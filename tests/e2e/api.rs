//! The read API (`collections-api`, issue 20) on real services: the workers apply
//! published events, the API answers from the same database.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use futures::StreamExt;
use jiff::{Timestamp, ToSpan};
use serde_json::{json, Value};
use tokio::process::Child;

use crate::harness::{cny, is, zone_where_it_is, TestEnv};

const WAIT: Duration = Duration::from_secs(20);

/// A running API process and its base URL.
pub struct Api {
    pub child: Child,
    pub base: String,
}

/// A free local port (bound, then released for the API to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `collections-api` on `port` (0: a free one) and waits until it answers.
pub async fn start_api(env: &TestEnv, port: u16, extra: &[(&str, &str)], log: &str) -> Api {
    let port = if port == 0 { free_port() } else { port };
    let mut vars: Vec<(String, String)> = vec![
        ("API_ADDR".into(), format!("127.0.0.1:{port}")),
        ("SSE_POLL_MS".into(), "50".into()),
        // Tests share the server's connections with every other test running.
        ("DB_POOL".into(), "3".into()),
    ];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let child = env.start("collections-api", &vars, log);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/health/ready")).await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the API answers /health/ready: {}",
            env.log(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Api { child, base }
}

/// GET returning status and JSON body.
pub async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("GET");
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

pub fn payment_failed(account: &str, zone: &str, overdue: i64, days_late: i64) -> Value {
    let tz = jiff::tz::TimeZone::get(zone).expect("zone");
    let due = Timestamp::now()
        .to_zoned(tz)
        .date()
        .checked_sub(days_late.days())
        .expect("date");
    json!({
        "account_id": account,
        "customer": {"timezone": zone},
        "installment": {"number": 2, "due_date": due.to_string(), "amount": cny(overdue)},
        "overdue_amount": cny(overdue),
        "failure_reason": "insufficient_funds",
        "attempted_at": Timestamp::now(),
    })
}

/// Reads a whole feed from `after` with pages of `limit`.
async fn feed(base: &str, after: &str, limit: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut cursor = after.to_owned();
    loop {
        let (status, page) = get(&format!(
            "{base}/v1/task-events?after={cursor}&limit={limit}"
        ))
        .await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().expect("items").clone();
        for i in &items {
            out.push((
                i["cursor"].as_str().expect("cursor").to_owned(),
                i["event"].clone(),
            ));
        }
        cursor = page["next_cursor"]
            .as_str()
            .expect("next_cursor")
            .to_owned();
        if items.len() < limit {
            return out;
        }
    }
}

fn cursor_key(c: &str) -> (u64, i64) {
    let (x, i) = c.split_once('-').expect("<xact>-<id>");
    (x.parse().expect("xact"), i.parse().expect("id"))
}

#[tokio::test]
async fn every_endpoint_answers_from_what_the_workers_applied() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    env.spawn("task-scheduler").await;
    let api = start_api(&env, 0, &[("AMQP_URL", &env.amqp_url.clone())], "api").await;
    let base = &api.base;
    // Night in one zone: the call waits for 08:00 (scheduled). Afternoon in another: the
    // call is due at once and the scheduler fires it (due).
    let (night, _) = zone_where_it_is(2);
    let (day, _) = zone_where_it_is(14);
    env.publish(
        "payment.failed",
        "acc-api-night",
        payment_failed("acc-api-night", &night, 420_000, 40),
    )
    .await;
    env.publish(
        "payment.failed",
        "acc-api-day",
        payment_failed("acc-api-day", &day, 150_000, 5),
    )
    .await;
    env.publish_raw("payment.failed", b"{not json").await;
    let scheduled = env
        .tasks
        .wait_for(
            1,
            WAIT,
            is("task.scheduled", "collection_call", "acc-api-night"),
        )
        .await;
    assert_eq!(scheduled.len(), 1);
    let fired = env
        .tasks
        .wait_for(1, WAIT, is("task.due", "collection_call", "acc-api-day"))
        .await;
    assert_eq!(fired.len(), 1, "the afternoon call fires");
    let night_task = scheduled[0]["data"]["task_id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Tasks: by state, with the task event's data plus state.
    let (s, page) = get(&format!(
        "{base}/v1/tasks?state=scheduled&kind=collection_call"
    ))
    .await;
    assert_eq!(s, 200, "{page}");
    let items = page["items"].as_array().expect("items");
    let mine: Vec<&Value> = items
        .iter()
        .filter(|t| t["task_id"] == night_task.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "the scheduled call is listed: {page}");
    let t = mine[0];
    assert_eq!(t["state"], "scheduled");
    assert_eq!(t["timezone"], night.as_str());
    for k in [
        "account_id",
        "kind",
        "channel",
        "due_at",
        "priority",
        "tone",
        "reason",
        "revision",
        "policy_version",
        "cause_event_id",
    ] {
        assert_eq!(t[k], scheduled[0]["data"][k], "{k} as in the task event");
    }
    assert_eq!(t["account"]["bucket"], "M2");
    assert_eq!(t["account"]["overdue_amount"], cny(420_000));
    // Emitted tasks read as `due`, once the scheduler has recorded the firing.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, due) = get(&format!("{base}/v1/tasks?state=due&account_id=acc-api-day")).await;
        if due["items"].as_array().is_some_and(|i| i.len() == 1) {
            assert_eq!(due["items"][0]["state"], "due");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fired call reads as due: {due}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Filters narrow; a bucket that does not match gives nothing.
    let (_, m2) = get(&format!("{base}/v1/tasks?bucket=M2")).await;
    assert!(m2["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|t| t["account"]["bucket"] == "M2"));
    assert!(m2["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|t| t["task_id"] == night_task.as_str()));
    let (_, m3) = get(&format!(
        "{base}/v1/tasks?bucket=M3&account_id=acc-api-night"
    ))
    .await;
    assert_eq!(m3["items"], json!([]));
    let (_, none) = get(&format!(
        "{base}/v1/tasks?channel=sms&account_id=acc-api-night"
    ))
    .await;
    assert_eq!(none["items"], json!([]));
    let later = Timestamp::now() + jiff::SignedDuration::from_hours(24 * 30);
    let (_, window) = get(&format!(
        "{base}/v1/tasks?account_id=acc-api-night&due_after={}",
        later.to_string().replace('+', "%2B")
    ))
    .await;
    assert_eq!(
        window["items"],
        json!([]),
        "due_after excludes earlier tasks"
    );

    // Bad parameters: 400 naming them.
    for (query, param) in [
        ("state=open", "state"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("priority=x", "priority"),
        ("due_after=yesterday", "due_after"),
        ("kind=lunch", "kind"),
        ("cursor=zzz", "cursor"),
        ("colour=red", "query"),
    ] {
        let (s, e) = get(&format!("{base}/v1/tasks?{query}")).await;
        assert_eq!(s, 400, "{query}: {e}");
        assert_eq!(e["error"], "bad_parameter");
        assert_eq!(e["parameter"], param, "{query}: {e}");
    }
    let (s, e) = get(&format!("{base}/v1/task-events?after=12")).await;
    assert_eq!((s, e["parameter"].clone()), (400, json!("after")));

    // The account: summary, open tasks; 404 as JSON for an unknown one.
    let (s, acc) = get(&format!("{base}/v1/accounts/acc-api-night")).await;
    assert_eq!(s, 200, "{acc}");
    assert_eq!(acc["status"], "delinquent");
    assert_eq!(acc["summary"]["bucket"], "M2");
    assert_eq!(acc["timezone"], night.as_str());
    assert_eq!(acc["open_tasks"].as_array().expect("open").len(), 1);
    assert_eq!(acc["open_tasks"][0]["task_id"], night_task.as_str());
    let (s, e) = get(&format!("{base}/v1/accounts/nobody-here")).await;
    assert_eq!((s, e["error"].clone()), (404, json!("not_found")));
    let (s, e) = get(&format!("{base}/v1/accounts/nobody-here/journal")).await;
    assert_eq!((s, e["error"].clone()), (404, json!("not_found")));

    // The journal, in order, with the policy version, one line per page.
    let (_, all) = get(&format!("{base}/v1/accounts/acc-api-night/journal")).await;
    let lines = all["items"].as_array().expect("items").clone();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["kind"].as_str().expect("kind"))
        .collect();
    assert!(
        kinds.contains(&"event_applied") && kinds.contains(&"task_planned"),
        "{kinds:?}"
    );
    assert!(lines
        .iter()
        .all(|l| !l["policy_version"].as_str().unwrap_or("").is_empty()));
    let mut cursor = String::new();
    let mut walked = Vec::new();
    loop {
        let (_, p) = get(&format!(
            "{base}/v1/accounts/acc-api-night/journal?limit=1&cursor={cursor}"
        ))
        .await;
        walked.extend(
            p["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|l| l["id"].clone()),
        );
        match p["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(
        walked,
        lines.iter().map(|l| l["id"].clone()).collect::<Vec<_>>()
    );

    // The feed: every task event published on the broker, same body, each once, with a
    // cursor, in cursor order; task.due included.
    let deadline = Instant::now() + WAIT;
    let (published, events) = loop {
        let published = env.tasks.all();
        let events = feed(base, "0-0", 2).await;
        let have: HashSet<&str> = events
            .iter()
            .filter_map(|(_, e)| e["id"].as_str())
            .collect();
        if published
            .iter()
            .all(|p| have.contains(p["id"].as_str().unwrap_or("")))
            || Instant::now() > deadline
        {
            break (published, events);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let keys: Vec<(u64, i64)> = events.iter().map(|(c, _)| cursor_key(c)).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "cursors increase");
    let by_id: HashMap<String, &Value> = events
        .iter()
        .map(|(_, e)| (e["id"].as_str().expect("id").to_owned(), e))
        .collect();
    assert_eq!(by_id.len(), events.len(), "each event once");
    for p in &published {
        let id = p["id"].as_str().expect("id");
        let mut want = p.clone();
        let obj = want.as_object_mut().expect("object");
        obj.remove("_routing_key");
        obj.remove("_received_at");
        assert_eq!(
            by_id.get(id).copied(),
            Some(&want),
            "event {id} in the feed as published"
        );
    }
    assert!(events.iter().any(|(_, e)| e["type"] == "task.due"));
    let tail = &events.last().expect("events").0;
    let (_, rest) = get(&format!("{base}/v1/task-events?after={tail}")).await;
    assert_eq!(rest["items"], json!([]));
    assert_eq!(
        rest["next_cursor"],
        tail.as_str(),
        "nothing new: the same cursor back"
    );

    // Figures.
    let (s, st) = get(&format!("{base}/v1/stats")).await;
    assert_eq!(s, 200, "{st}");
    assert!(st["by_state"]["scheduled"].as_i64().expect("n") >= 1);
    assert_eq!(st["by_state"]["due"], 1);
    assert!(st["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .any(|c| c["state"] == "due" && c["kind"] == "collection_call" && c["count"] == 1));
    let hours: i64 = st["due_per_hour"]
        .as_array()
        .expect("hours")
        .iter()
        .map(|h| h["count"].as_i64().expect("n"))
        .sum();
    assert!(
        hours >= 1 && hours <= st["by_state"]["scheduled"].as_i64().expect("n"),
        "the morning call is due within 24 h"
    );
    assert!(st["outbox_backlog"].is_i64());
    let dl = st["dead_letters"]
        .as_array()
        .expect("dead letters counted (AMQP_URL given)");
    assert!(
        dl.iter()
            .any(|q| q["queue"] == "collections.payment-failed.dlq" && q["count"] == 1),
        "{dl:?}"
    );
    assert!(
        dl.iter()
            .any(|q| q["queue"] == "collections.promise-made.dlq" && q["count"] == 0),
        "{dl:?}"
    );
    let reasons = st["dead_letter_reasons"].as_array().expect("reasons");
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0]["queue"], "collections.payment-failed");
    assert_eq!(reasons[0]["reason"], "not_json");
    assert_eq!(reasons[0]["count"], 1);

    // Health, metrics, OpenAPI, unknown routes.
    let live = reqwest::get(format!("{base}/health/live"))
        .await
        .expect("live");
    assert_eq!(live.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("collections_api_requests_total"),
        "{metrics}"
    );
    let (s, e) = get(&format!("{base}/v2/nothing")).await;
    assert_eq!((s, e["error"].clone()), (404, json!("not_found")));
    let served = reqwest::get(format!("{base}/openapi.json"))
        .await
        .expect("openapi")
        .json::<Value>()
        .await
        .expect("json");
    let committed: Value =
        serde_json::from_str(include_str!("../../proto/openapi.json")).expect("proto/openapi.json");
    assert_eq!(
        served, committed,
        "proto/openapi.json is the served document (regenerate it: see proto/README.md)"
    );
    for path in [
        "/v1/tasks",
        "/v1/accounts/{account_id}",
        "/v1/accounts/{account_id}/journal",
        "/v1/task-events",
        "/v1/task-events/stream",
        "/v1/stats",
    ] {
        assert!(served["paths"][path].is_object(), "{path} documented");
    }
}

#[test]
fn the_committed_openapi_document_is_the_generated_one() {
    let committed = include_str!("../../proto/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto/openapi.json"),
            collections_api::openapi::pretty(),
        )
        .expect("write proto/openapi.json");
        return;
    }
    assert_eq!(
        committed,
        collections_api::openapi::pretty(),
        "proto/openapi.json differs from the code: UPDATE_OPENAPI=1 cargo test -p collections-workers --test e2e the_committed_openapi"
    );
}

#[tokio::test]
async fn a_token_is_required_when_one_is_set() {
    let env = TestEnv::new().await;
    let api = start_api(&env, 0, &[("API_TOKEN", "s3cret-token")], "api").await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/tasks", api.base);
    let r = client.get(&url).send().await.expect("GET");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "unauthorized"
    );
    let r = client
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401);
    let r = client
        .get(&url)
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{}/?access_token=s3cret-token", api.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200, "the board takes the token in its URL");
    let r = client
        .get(format!("{}/health/live", api.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200, "probes need no token");
}

/// Accounts whose calls wait for the morning, with the same due instant: pages tie-break
/// on the task id.
async fn plan_night_calls(env: &TestEnv, prefix: &str, n: usize, zone: &str) {
    for i in 0..n {
        let a = format!("{prefix}-{i:03}");
        env.publish(
            "payment.failed",
            &a,
            payment_failed(&a, zone, 100_000 + i64::try_from(i).expect("n"), 10),
        )
        .await;
    }
}

async fn scheduled_count(env: &TestEnv, prefix: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM tasks WHERE account_id LIKE $1 AND status = 'scheduled'",
    )
    .bind(format!("{prefix}-%"))
    .fetch_one(&env.db)
    .await
    .expect("count")
}

#[tokio::test]
async fn task_pages_neither_skip_nor_repeat_while_tasks_are_written() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let api = start_api(&env, 0, &[], "api").await;
    let (night, _) = zone_where_it_is(3);
    plan_night_calls(&env, "acc-page", 45, &night).await;
    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM tasks WHERE account_id LIKE 'acc-page-%'",
            45,
            WAIT
        )
        .await,
        45
    );
    let before: HashSet<String> = sqlx::query_scalar::<_, uuid::Uuid>(
        "SELECT task_id FROM tasks WHERE account_id LIKE 'acc-page-%'",
    )
    .fetch_all(&env.db)
    .await
    .expect("ids")
    .into_iter()
    .map(|u| u.to_string())
    .collect();
    // Writes while the pages are walked: new accounts' calls (same due instant, so some
    // land behind the cursor and some ahead of it).
    let writer = {
        let env_publisher = env.publisher.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                let a = format!("acc-page-new-{i:03}");
                let body = crate::harness::cloudevent(
                    uuid::Uuid::new_v4(),
                    "payment.failed",
                    &a,
                    payment_failed(&a, &night, 90_000, 10),
                );
                env_publisher
                    .basic_publish(
                        "collections.events".into(),
                        "payment.failed".into(),
                        lapin::options::BasicPublishOptions::default(),
                        body.to_string().as_bytes(),
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("confirm");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("{}/v1/tasks?state=scheduled&limit=4&cursor={c}", api.base),
            None => format!("{}/v1/tasks?state=scheduled&limit=4", api.base),
        };
        let (s, page) = get(&q).await;
        assert_eq!(s, 200, "{page}");
        for t in page["items"].as_array().expect("items") {
            seen.push((
                t["due_at"].as_str().expect("due").to_owned(),
                t["task_id"].as_str().expect("id").to_owned(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    writer.await.expect("writer");
    let ids: Vec<&String> = seen.iter().map(|(_, id)| id).collect();
    let unique: HashSet<&String> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no task twice");
    let keys: Vec<(Timestamp, uuid::Uuid)> = seen
        .iter()
        .map(|(d, id)| (d.parse().expect("due"), id.parse().expect("uuid")))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "strictly in (due_at, task_id) order"
    );
    for id in &before {
        assert!(
            unique.contains(id),
            "task {id}, there before the walk, is listed"
        );
    }
    let _ = scheduled_count(&env, "acc-page").await;
}

/// Reads SSE events (`id`, `data`) from a response until `n` arrived or `timeout`;
/// also counts heartbeat comment lines.
async fn read_sse(
    resp: reqwest::Response,
    n: usize,
    timeout: Duration,
) -> (Vec<(String, Value)>, usize) {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let mut heartbeats = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut id, mut data) = (None::<String>, String::new());
    while out.len() < n {
        let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, stream.next()).await else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        while let Some(at) = buf.find('\n') {
            let line = buf[..at].trim_end_matches('\r').to_owned();
            buf.drain(..=at);
            if line.is_empty() {
                if let Some(i) = id.take() {
                    out.push((i, serde_json::from_str(&data).expect("data is JSON")));
                }
                data.clear();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if line.starts_with(':') {
                heartbeats += 1;
            }
        }
    }
    (out, heartbeats)
}

#[tokio::test]
async fn sse_resumes_across_an_api_restart_without_gap_or_duplicate() {
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    let port = free_port();
    let mut api = start_api(&env, port, &[("SSE_HEARTBEAT_SECS", "1")], "api-1").await;
    let client = reqwest::Client::new();
    // From the start of the feed: nothing yet, so the heartbeat shows.
    let resp = client
        .get(format!("{}/v1/task-events/stream?after=0-0", api.base))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/event-stream"));
    let (none, heartbeats) = read_sse(resp, 1, Duration::from_millis(2500)).await;
    assert!(
        none.is_empty() && heartbeats >= 1,
        "an idle stream sends heartbeats ({heartbeats})"
    );

    let (night, _) = zone_where_it_is(3);
    plan_night_calls(&env, "acc-sse-a", 10, &night).await;
    let resp = client
        .get(format!("{}/v1/task-events/stream?after=0-0", api.base))
        .send()
        .await
        .expect("stream");
    let (first, _) = read_sse(resp, 6, WAIT).await;
    assert_eq!(first.len(), 6, "six events before the restart");
    let resume_at = first.last().expect("last").0.clone();

    // The API goes away; events keep coming; a new API process serves the resume.
    api.child.kill().await.expect("kill");
    plan_night_calls(&env, "acc-sse-b", 10, &night).await;
    assert_eq!(
        env.wait_count(
            "SELECT count(*) FROM outbox WHERE exchange = 'collections.tasks'",
            20,
            WAIT
        )
        .await,
        20
    );
    api = start_api(&env, port, &[], "api-2").await;
    let resp = client
        .get(format!("{}/v1/task-events/stream", api.base))
        .header("Last-Event-ID", &resume_at)
        .send()
        .await
        .expect("stream");
    let (rest, _) = read_sse(resp, 14, WAIT).await;
    assert_eq!(rest.len(), 14, "the other fourteen after the restart");
    let mut all = first.clone();
    all.extend(rest);
    let ids: Vec<&str> = all
        .iter()
        .map(|(_, e)| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        20,
        "none repeated"
    );
    let page = feed(&api.base, "0-0", 100).await;
    assert_eq!(
        all.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        page.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        "the stream is the feed: same events, same order, none missed"
    );
    // ?after= resumes as Last-Event-ID does.
    let resp = client
        .get(format!(
            "{}/v1/task-events/stream?after={}",
            api.base, all[17].0
        ))
        .send()
        .await
        .expect("stream");
    let (tail, _) = read_sse(resp, 3, Duration::from_secs(3)).await;
    assert_eq!(
        tail.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>(),
        vec![all[18].0.clone(), all[19].0.clone()]
    );
}

#[tokio::test]
async fn the_feed_holds_back_rows_of_a_transaction_still_open() {
    // Two writers: A takes the smaller outbox id and commits last. A reader that served B's
    // row as soon as B committed would later have to serve A's row behind its cursor.
    let env = TestEnv::new().await;
    let api = start_api(&env, 0, &[], "api").await;
    let insert = |n: &str| {
        format!(
            "INSERT INTO outbox (event_id, account_id, exchange, routing_key, body)
             VALUES (gen_random_uuid(), 'acc-{n}', 'collections.tasks', 'task.scheduled.collection_call',
                     '{{\"id\": \"{n}\", \"type\": \"task.scheduled\"}}'::jsonb)"
        )
    };
    let mut a = env.db.begin().await.expect("begin A");
    sqlx::query(&insert("a"))
        .execute(&mut *a)
        .await
        .expect("insert A");
    let mut b = env.db.begin().await.expect("begin B");
    sqlx::query(&insert("b"))
        .execute(&mut *b)
        .await
        .expect("insert B");
    b.commit().await.expect("commit B");
    let (_, held) = get(&format!("{}/v1/task-events?after=0-0", api.base)).await;
    assert_eq!(
        held["items"],
        json!([]),
        "B waits while A, which began writing first, is open: {held}"
    );
    a.commit().await.expect("commit A");
    // Other tests' transactions in the same cluster may hold the horizon a moment longer.
    let deadline = Instant::now() + WAIT;
    let both = loop {
        let (_, both) = get(&format!("{}/v1/task-events?after=0-0", api.base)).await;
        if both["items"].as_array().is_some_and(|i| i.len() == 2) || Instant::now() > deadline {
            break both;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let order: Vec<&str> = both["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["event"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(order, vec!["a", "b"], "then both, A first");
}
