//! The public contract in `proto/` and the Rust code agree.
//!
//! * every valid example passes its JSON Schema (draft 2020-12, formats checked) and, for
//!   the four inbound types, `parse_event`;
//! * every invalid example fails its schema and, for inbound types, `parse_event`;
//! * the `task.*` messages built by `collections_core::outbound::task_message` pass
//!   `task.schema.json`.
//!
//! The example's schema is chosen by the file-name prefix before `--`: `task.*` uses
//! `task.schema.json`, every other type `<type>.schema.json`.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use collections_core::{
    decide,
    outbound::{task_message, TaskState},
    parse_event, AccountState, Decision, Event, EventType, Policy, Task, TaskKind,
};
use jiff::Timestamp;
use jsonschema::{Draft, Resource, Validator};
use serde_json::{json, Value};

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

fn read_json(path: &Path) -> Value {
    let text = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every `proto/schemas/*.schema.json`, by file name.
fn schema_files() -> BTreeMap<String, Value> {
    let dir = proto_dir().join("schemas");
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("no schema directory {}: {e}", dir.display()));
    let mut out = BTreeMap::new();
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = file_name(&path);
        if name.ends_with(".schema.json") {
            out.insert(name, read_json(&path));
        }
    }
    assert!(
        !out.is_empty(),
        "no *.schema.json found in {}",
        dir.display()
    );
    out
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("odd file name {}", path.display()))
        .to_owned()
}

/// Compiles `name` as a draft 2020-12 schema with format validation on. Every other schema
/// file is registered under its `$id` so cross-file `$ref`s resolve without the network.
fn validator(schemas: &BTreeMap<String, Value>, name: &str) -> Validator {
    let schema = schemas
        .get(name)
        .unwrap_or_else(|| panic!("schema {name} is missing from proto/schemas"));
    let mut options = jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true);
    for (other, contents) in schemas {
        if other == name {
            continue;
        }
        let Some(id) = contents.get("$id").and_then(Value::as_str) else {
            continue;
        };
        let resource = Resource::from_contents(contents.clone())
            .unwrap_or_else(|e| panic!("{other} is not a usable resource: {e}"));
        options = options.with_resource(id, resource);
    }
    options
        .build(schema)
        .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"))
}

fn schema_name_for(ty: &str) -> String {
    if ty.starts_with("task.") {
        "task.schema.json".to_owned()
    } else {
        format!("{ty}.schema.json")
    }
}

struct Example {
    file: String,
    ty: String,
    bytes: Vec<u8>,
    json: Value,
}

/// Every `proto/examples/<set>/<type>--<case>.json`. Panics when there is none.
fn examples(set: &str) -> Vec<Example> {
    let dir = proto_dir().join("examples").join(set);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no example directory {}: {e}", dir.display()));
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let file = file_name(&path);
        let Some(stem) = file.strip_suffix(".json") else {
            continue;
        };
        let (ty, case) = stem
            .split_once("--")
            .unwrap_or_else(|| panic!("{set}/{file} is not named <type>--<case>.json"));
        assert!(!case.is_empty(), "{set}/{file} has an empty case name");
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{set}/{file} is not JSON: {e}"));
        out.push(Example {
            file: format!("{set}/{file}"),
            ty: ty.to_owned(),
            bytes,
            json,
        });
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    assert!(
        !out.is_empty(),
        "no examples found in {}: refusing to pass vacuously",
        dir.display()
    );
    out
}

fn schema_errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

fn is_inbound(ty: &str) -> bool {
    EventType::from_type(ty).is_some()
}

fn is_task(ty: &str) -> bool {
    matches!(ty, "task.scheduled" | "task.due" | "task.cancelled")
}

#[test]
fn every_schema_is_valid_draft_2020_12_and_compiles() {
    let schemas = schema_files();
    for required in [
        "payment.failed.schema.json",
        "promise.made.schema.json",
        "promise.broken.schema.json",
        "payment.received.schema.json",
        "task.schema.json",
    ] {
        assert!(schemas.contains_key(required), "{required} is missing");
    }
    for (name, schema) in &schemas {
        assert!(
            jsonschema::meta::is_valid(schema),
            "{name} is not a valid JSON Schema"
        );
        let id = schema.get("$id").and_then(Value::as_str).unwrap_or("");
        assert!(
            id.ends_with(&format!("/{name}")),
            "{name}: $id {id:?} does not end in its file name"
        );
        let _ = validator(&schemas, name);
    }
}

#[test]
fn valid_examples_pass_their_schema_and_the_parser() {
    let schemas = schema_files();
    let all = examples("valid");
    let mut failures = Vec::new();
    let (mut inbound, mut tasks) = (0, 0);
    for ex in &all {
        assert!(
            is_inbound(&ex.ty) || is_task(&ex.ty),
            "{}: unknown type prefix {:?}",
            ex.file,
            ex.ty
        );
        if ex.json.get("type").and_then(Value::as_str) != Some(ex.ty.as_str()) {
            failures.push(format!(
                "{}: its type {} differs from its file name",
                ex.file, ex.json["type"]
            ));
        }
        let v = validator(&schemas, &schema_name_for(&ex.ty));
        let errors = schema_errors(&v, &ex.json);
        if !errors.is_empty() {
            failures.push(format!("{}: schema rejects it: {errors:?}", ex.file));
        }
        if let Some(ty) = EventType::from_type(&ex.ty) {
            inbound += 1;
            match parse_event(&ex.bytes, None) {
                Ok(e) => {
                    if e.event_type() != ty {
                        failures.push(format!("{}: parsed as {:?}", ex.file, e.event_type()));
                    }
                }
                Err(e) => failures.push(format!("{}: parse_event rejects it: {e}", ex.file)),
            }
            if let Err(e) = parse_event(&ex.bytes, Some(ty)) {
                failures.push(format!(
                    "{}: parse_event on its own queue rejects it: {e}",
                    ex.file
                ));
            }
        } else {
            tasks += 1;
        }
    }
    assert!(inbound > 0, "no valid inbound examples");
    assert!(tasks > 0, "no valid task examples");
    assert!(
        failures.is_empty(),
        "{} of {} valid examples disagree:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn invalid_examples_are_rejected_by_their_schema_and_the_parser() {
    let schemas = schema_files();
    let all = examples("invalid");
    let mut failures = Vec::new();
    let mut inbound = 0;
    for ex in &all {
        assert!(
            is_inbound(&ex.ty) || is_task(&ex.ty),
            "{}: unknown type prefix {:?}",
            ex.file,
            ex.ty
        );
        let v = validator(&schemas, &schema_name_for(&ex.ty));
        if v.is_valid(&ex.json) {
            failures.push(format!("{}: the schema accepts it", ex.file));
        }
        if is_inbound(&ex.ty) {
            inbound += 1;
            match parse_event(&ex.bytes, None) {
                Ok(e) => failures.push(format!(
                    "{}: parse_event accepts it (as {:?})",
                    ex.file,
                    e.event_type()
                )),
                Err(e) => eprintln!("{}: parse_event -> {}", ex.file, e.code.as_str()),
            }
        }
    }
    assert!(inbound > 0, "no invalid inbound examples");
    assert!(
        failures.is_empty(),
        "{} of {} invalid examples are not rejected:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn invalid_task_examples_are_rejected_by_the_task_schema() {
    let schemas = schema_files();
    let v = validator(&schemas, "task.schema.json");
    let tasks: Vec<Example> = examples("invalid")
        .into_iter()
        .filter(|e| is_task(&e.ty))
        .collect();
    assert!(!tasks.is_empty(), "no invalid task examples");
    for ex in &tasks {
        assert!(!v.is_valid(&ex.json), "{}: the schema accepts it", ex.file);
    }
}

// ---------------------------------------------------------------------------------------
// Messages built by the core validate against task.schema.json
// ---------------------------------------------------------------------------------------

const ACC: &str = "acc-000123";

fn event(ty: &str, n: u32, time: &str, data: Value) -> Event {
    let v = json!({
        "specversion": "1.0",
        "id": format!("00000000-0000-4000-8000-{n:012x}"),
        "source": "/tests/proto",
        "type": ty,
        "time": time,
        "subject": ACC,
        "datacontenttype": "application/json",
        "data": data,
    });
    let bytes = serde_json::to_vec(&v).expect("serialise");
    parse_event(&bytes, None).unwrap_or_else(|e| panic!("scenario event refused: {e}"))
}

fn money(minor: i64) -> Value {
    json!({ "minor": minor, "currency": "CNY" })
}

/// A small scenario touching every kind of task the rules plan, plus cancellations.
fn scenario() -> Vec<Decision> {
    let policy = Policy::default();
    let mut state: Option<AccountState> = None;
    let mut open: Vec<Task> = Vec::new();
    let mut out = Vec::new();
    let steps = [
        event(
            "payment.failed",
            1,
            "2026-11-03T22:30:00+08:00",
            json!({
                "account_id": ACC,
                "customer": { "timezone": "Asia/Shanghai" },
                "installment": { "number": 1, "due_date": "2026-10-01", "amount": money(125_000) },
                "overdue_amount": money(125_000),
                "failure_reason": "insufficient_funds",
                "attempted_at": "2026-11-03T22:30:00+08:00",
            }),
        ),
        event(
            "payment.received",
            2,
            "2026-11-04T09:00:00+08:00",
            json!({
                "account_id": ACC,
                "payment_id": "pay-1",
                "amount": money(5_000),
                "received_at": "2026-11-04T09:00:00+08:00",
            }),
        ),
        event(
            "promise.made",
            3,
            "2026-11-04T10:00:00+08:00",
            json!({
                "account_id": ACC,
                "promise_id": "ptp-1",
                "amount": money(120_000),
                "promised_at": "2026-11-07T15:00:00+08:00",
                "captured_by": "agent-0421",
                "channel": "phone_mobile",
            }),
        ),
        event(
            "promise.broken",
            4,
            "2026-11-07T17:05:00+08:00",
            json!({ "account_id": ACC, "promise_id": "ptp-1", "reason": "no_payment" }),
        ),
        event(
            "promise.broken",
            5,
            "2026-11-08T10:00:00+08:00",
            json!({ "account_id": ACC, "promise_id": "ptp-2", "reason": "no_payment" }),
        ),
        event(
            "promise.broken",
            6,
            "2026-11-09T10:00:00+08:00",
            json!({ "account_id": ACC, "promise_id": "ptp-3", "reason": "no_payment" }),
        ),
        event(
            "payment.received",
            7,
            "2026-11-10T11:00:00+08:00",
            json!({
                "account_id": ACC,
                "payment_id": "pay-2",
                "amount": money(120_000),
                "received_at": "2026-11-10T11:00:00+08:00",
                "overdue_amount_after": money(0),
                "next_due_date": "2026-12-01",
            }),
        ),
    ];
    for e in &steps {
        let d = decide(state.as_ref(), &open, e, &policy, e.time)
            .unwrap_or_else(|err| panic!("scenario step refused: {err}"));
        open.retain(|t| !d.cancel.iter().any(|c| c.task_id == t.task_id));
        open.extend(d.schedule.iter().cloned());
        state = Some(d.state.clone());
        out.push(d);
    }
    // The cure cancels everything; the payment announcing the next due date plans the
    // pre-due reminder the account's segment calls for.
    let kinds: Vec<TaskKind> = open.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        vec![TaskKind::PreDueReminder],
        "the cure should leave only the pre-due reminder open"
    );
    out
}

#[test]
fn task_messages_built_by_the_core_pass_the_task_schema() {
    let schemas = schema_files();
    let v = validator(&schemas, "task.schema.json");
    let decisions = scenario();
    let mut seen_kinds = std::collections::BTreeSet::new();
    let mut seen_types = std::collections::BTreeSet::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for d in &decisions {
        for m in &d.outbox {
            checked += 1;
            let ty = m.json()["type"].as_str().unwrap_or_default().to_owned();
            seen_types.insert(ty.clone());
            seen_kinds.insert(
                m.json()["data"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            let errors = schema_errors(&v, &m.json());
            if !errors.is_empty() {
                failures.push(format!(
                    "{} ({ty}): {errors:?}\n{:#}",
                    m.routing_key,
                    m.json()
                ));
            }
        }
        // task.due is published by the scheduler, not by decide: build one per task here.
        let now: Timestamp = "2026-11-05T08:00:00+08:00".parse().expect("timestamp");
        let summary = d.state.summary(now);
        for t in d.schedule.iter().filter(|t| !t.kind.is_internal()) {
            let m = task_message(TaskState::Due, t, &summary, now, None);
            checked += 1;
            seen_types.insert("task.due".to_owned());
            let errors = schema_errors(&v, &m.json());
            if !errors.is_empty() {
                failures.push(format!(
                    "{} (task.due): {errors:?}\n{:#}",
                    m.routing_key,
                    m.json()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} core-built task messages fail task.schema.json:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for ty in ["task.scheduled", "task.cancelled", "task.due"] {
        assert!(seen_types.contains(ty), "scenario produced no {ty}");
    }
    for kind in [
        "collection_call",
        "promise_reminder",
        "promise_check",
        "supervisor_review",
        "third_party_call",
        "field_visit",
    ] {
        assert!(seen_kinds.contains(kind), "scenario produced no {kind}");
    }
}

#[test]
fn core_built_message_with_last_payment_and_cancel_reason_passes_the_task_schema() {
    let schemas = schema_files();
    let v = validator(&schemas, "task.schema.json");
    let decisions = scenario();
    let cure = decisions.last().expect("decisions");
    let m = cure
        .outbox
        .iter()
        .find(|m| m.json()["type"] == json!("task.cancelled"))
        .expect("the cure cancels tasks");
    assert!(m.json()["data"]["cancel_reason"].is_string());
    assert!(m.json()["data"]["account"]["last_payment"].is_object());
    let errors = schema_errors(&v, &m.json());
    assert!(errors.is_empty(), "{errors:?}\n{:#}", m.json());
}

#[test]
fn format_validation_is_on_so_impossible_instants_fail_the_schema() {
    // Matches the `instant` pattern (digits in the right places) but is no real date-time:
    // only `format: date-time` can reject it.
    let schemas = schema_files();
    let ex = examples("valid")
        .into_iter()
        .find(|e| e.ty == "promise.made")
        .expect("a valid promise.made example");
    let v = validator(&schemas, "promise.made.schema.json");
    assert!(v.is_valid(&ex.json));
    let mut bad = ex.json.clone();
    bad["data"]["promised_at"] = json!("2026-13-45T25:61:00+08:00");
    assert!(!v.is_valid(&bad), "format date-time is not checked");
    let bytes = serde_json::to_vec(&bad).expect("serialise");
    assert!(parse_event(&bytes, None).is_err());
}

#[test]
fn promise_broken_published_on_expiry_passes_the_schema_and_the_parser() {
    let schemas = schema_files();
    let v = validator(&schemas, "promise.broken.schema.json");
    let decisions = scenario();
    let expiry = decisions
        .iter()
        .flat_map(|d| d.schedule.iter())
        .find(|t| t.kind.is_internal() && t.promise_id.is_some())
        .expect("the promise in the scenario plans an expiry task");
    let now: Timestamp = "2026-11-07T17:00:00+08:00".parse().expect("timestamp");
    let m = collections_core::outbound::expiry_message(expiry, now);
    let errors = schema_errors(&v, &m.json());
    assert!(errors.is_empty(), "{errors:?}\n{:#}", m.json());
    let bytes = m.body.clone();
    let e = parse_event(&bytes, Some(EventType::PromiseBroken))
        .unwrap_or_else(|e| panic!("parse_event refuses the expiry event: {e}"));
    assert_eq!(e.account_id, ACC);
}
