//! `collectionsctl simulate` as an operator runs it: the real binary on the shipped
//! scenarios and policies, from the repository root (the paths the READMEs show).
//!
//! Offline: no broker, no database, and scenario instants are fixed.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::{Command, Output},
};

use jiff::Timestamp;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_collectionsctl"))
        .current_dir(root())
        // `simulate` must not need a broker.
        .env_remove("AMQP_URL")
        .args(args)
        .output()
        .expect("collectionsctl runs")
}

/// Runs a command that must succeed; its standard output.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "collectionsctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn ts(s: &str) -> Timestamp {
    s.parse()
        .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
}

// ---------------------------------------------------------------------------------------
// table output
// ---------------------------------------------------------------------------------------

/// One line of the single-policy table.
#[derive(Debug)]
struct Row {
    when: String,
    state: String,
    kind: String,
    channel: String,
    tone: String,
    priority: String,
    due: String,
}

/// The table's lines after its header. Cells hold no spaces except `when` and `due`
/// (`Tue 11-03 10:00 CST`), so whitespace splitting is exact up to the free-text reason.
fn table(out: &str) -> Vec<Row> {
    out.lines()
        .skip_while(|l| !l.starts_with("when (local)"))
        .skip(1)
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let task = matches!(t[5], "scheduled" | "due" | "cancelled");
            let cell = |i: usize| if task { t[i].to_owned() } else { String::new() };
            Row {
                when: t[0..4].join(" "),
                state: t[5].to_owned(),
                kind: t[6].to_owned(),
                channel: cell(7),
                tone: cell(8),
                priority: cell(9),
                due: if task {
                    t[10..14].join(" ")
                } else {
                    String::new()
                },
            }
        })
        .collect()
}

fn scheduled_kinds(rows: &[Row]) -> BTreeSet<&str> {
    rows.iter()
        .filter(|r| r.state == "scheduled")
        .map(|r| r.kind.as_str())
        .collect()
}

#[test]
fn table_lists_the_task_kinds_each_shipped_scenario_plans() {
    let cases: [(&str, &str, &[&str]); 13] = [
        (
            "first-instalment-default-paid-after-one-call",
            "built-in default",
            &["collection_call"],
        ),
        (
            "promise-kept",
            "built-in default",
            &["collection_call", "promise_check", "promise_reminder"],
        ),
        (
            "promises-broken-escalate-to-field-visit",
            "built-in default",
            &[
                "collection_call",
                "field_visit",
                "promise_check",
                "promise_reminder",
            ],
        ),
        (
            "dst-promise-across-fall-back",
            "built-in default",
            &["collection_call", "promise_check", "promise_reminder"],
        ),
        // The scenario names its own policy, relative to the scenario file.
        (
            "reg-f-caps-defer-calls",
            "deploy/scenarios/../policy/us-reg-f.toml",
            &["collection_call", "promise_check", "promise_reminder"],
        ),
        (
            "three-conversations-push-the-fourth-call",
            "built-in default",
            &["callback", "collection_call"],
        ),
        (
            "reg-f-quiet-week-after-a-conversation",
            "deploy/scenarios/../policy/us-reg-f.toml",
            &["callback", "collection_call"],
        ),
        (
            "wrong-number-then-lost-contact-then-third-party",
            "built-in default",
            &["collection_call", "contact_repair", "third_party_call"],
        ),
        (
            "callback-at-the-agreed-minute",
            "built-in default",
            &["callback", "collection_call"],
        ),
        (
            "arrangement-three-instalments-kept",
            "built-in default",
            &["collection_call", "promise_check", "promise_reminder"],
        ),
        (
            "arrangement-second-instalment-short-within-tolerance",
            "built-in default",
            &["collection_call", "promise_check", "promise_reminder"],
        ),
        (
            "arrangement-second-instalment-short-beyond-tolerance",
            "built-in default",
            &["collection_call", "promise_check", "promise_reminder"],
        ),
        (
            "settlement-70-percent-approved-then-reversed",
            "built-in default",
            &["collection_call", "promise_check", "promise_reminder"],
        ),
    ];
    for (name, policy, kinds) in cases {
        let path = format!("deploy/scenarios/{name}.toml");
        let out = ok(&["simulate", &path]);
        assert!(out.starts_with(&format!("scenario {name}\n")), "{out}");
        assert!(
            out.contains(&format!("policy   {policy} (p-")),
            "{name}: {out}"
        );
        let rows = table(&out);
        assert_eq!(
            scheduled_kinds(&rows),
            kinds.iter().copied().collect(),
            "{name}"
        );
        // The internal expiries are never shown as tasks.
        assert!(
            rows.iter()
                .all(|r| r.kind != "promise_expiry" && r.kind != "instalment_expiry"),
            "{name}"
        );
    }
}

#[test]
fn table_shows_the_escalation_after_each_broken_promise() {
    let out = ok(&[
        "simulate",
        "deploy/scenarios/promises-broken-escalate-to-field-visit.toml",
    ]);
    let rows = table(&out);
    // Two promise.broken from billing and one from the service's own expiry.
    let broken: Vec<&str> = rows
        .iter()
        .filter(|r| r.state == "event" && r.kind == "promise.broken")
        .map(|r| r.when.as_str())
        .collect();
    assert_eq!(
        broken,
        [
            "Tue 11-03 16:30 CST",
            "Wed 11-04 13:00 CST",
            "Wed 11-04 18:30 CST"
        ]
    );
    // The first escalated call of each broken promise, with its tone.
    let calls: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.state == "scheduled" && r.kind == "collection_call" && r.when == r.due)
        .map(|r| (r.when.as_str(), r.tone.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("Tue 11-03 10:00 CST", "gentle"),
            ("Tue 11-03 16:30 CST", "firm"),
            ("Wed 11-04 13:00 CST", "serious"),
            ("Wed 11-04 18:30 CST", "serious"),
        ]
    );
    let opened = |kind: &str| -> Vec<(String, String, String, String)> {
        rows.iter()
            .filter(|r| r.state == "scheduled" && r.kind == kind)
            .map(|r| {
                (
                    r.due.clone(),
                    r.channel.clone(),
                    r.tone.clone(),
                    r.priority.clone(),
                )
            })
            .collect()
    };
    let row = |due: &str, channel: &str| {
        (
            due.to_owned(),
            channel.to_owned(),
            "serious".to_owned(),
            "6".to_owned(),
        )
    };
    // Third parties are called only when contact is lost (domain rule 8), never because
    // promises were broken.
    assert!(opened("third_party_call").is_empty());
    assert_eq!(opened("field_visit"), [row("Wed 11-04 18:30 CST", "visit")]);
}

// ---------------------------------------------------------------------------------------
// JSON output
// ---------------------------------------------------------------------------------------

fn json(args: &[&str]) -> Value {
    let out = ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn tasks(run: &Value) -> Vec<&Value> {
    run["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| matches!(e["state"].as_str(), Some("scheduled" | "due" | "cancelled")))
        .collect()
}

#[test]
fn json_output_starts_with_the_expected_first_task() {
    // (scenario, kind, channel, due, priority) of the first task event.
    let cases = [
        (
            "first-instalment-default-paid-after-one-call",
            "collection_call",
            "phone_mobile",
            "2026-11-03T09:15:00+08:00",
            1,
        ),
        (
            "promise-kept",
            "collection_call",
            "phone_mobile",
            "2026-11-03T10:00:00+08:00",
            6,
        ),
        (
            "dst-promise-across-fall-back",
            "collection_call",
            "phone_mobile",
            "2026-10-31T18:00:00-04:00",
            6,
        ),
    ];
    for (name, kind, channel, due, priority) in cases {
        let v = json(&[
            "simulate",
            &format!("deploy/scenarios/{name}.toml"),
            "--json",
        ]);
        assert_eq!(v["scenario"], name);
        let runs = v["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 1, "{name}");
        assert_eq!(runs[0]["policy"], "built-in default");
        let first = tasks(&runs[0])[0];
        assert_eq!(first["state"], "scheduled", "{name}: {first}");
        assert_eq!(first["kind"], kind, "{name}");
        assert_eq!(first["channel"], channel, "{name}");
        assert_eq!(
            ts(first["due_at"].as_str().expect("due_at")),
            ts(due),
            "{name}"
        );
        assert_eq!(first["priority"], priority, "{name}");
        assert_eq!(first["tone"], "gentle", "{name}");
        assert_eq!(first["attempt"], 1, "{name}");
        // It answers the scenario's first event, applied just before it.
        let timeline = runs[0]["timeline"].as_array().expect("timeline");
        assert_eq!(timeline[0]["state"], "event");
        assert_eq!(timeline[0]["kind"], "payment.failed");
    }
}

#[test]
fn json_output_uses_the_policy_the_scenario_names() {
    // `policy check` prints the version the simulator must have run.
    let check = ok(&["policy", "check", "deploy/policy/us-reg-f.toml"]);
    let version = check
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .expect("a version");
    let v = json(&[
        "simulate",
        "deploy/scenarios/reg-f-caps-defer-calls.toml",
        "--json",
    ]);
    let run = &v["runs"][0];
    assert_eq!(run["policy"], "deploy/scenarios/../policy/us-reg-f.toml");
    assert_eq!(run["policy_version"], version);
    // Reg F sends the promise reminder by SMS, not the default's mobile call.
    let reminder = tasks(run)
        .into_iter()
        .find(|e| e["kind"] == "promise_reminder")
        .expect("a reminder");
    assert_eq!(reminder["channel"], "sms");
    assert_eq!(
        ts(reminder["due_at"].as_str().expect("due_at")),
        ts("2026-11-05T11:00:00-05:00")
    );
}

// ---------------------------------------------------------------------------------------
// two policies side by side
// ---------------------------------------------------------------------------------------

/// Which run a side-by-side line belongs to.
#[derive(Debug, PartialEq)]
enum Side {
    Both,
    OnlyA,
    OnlyB,
}

/// The side-by-side lines: `* ` marks a line only one run has, in its own column. The
/// columns are fixed-width from offset 23, but a long cell can push B right, so a cell is
/// told by where it starts, not by where it ends.
fn side_by_side(out: &str) -> Vec<(Side, String, String)> {
    out.lines()
        .skip_while(|l| !l.starts_with("  when (local)"))
        .skip(1)
        .map(|l| {
            let when = l[2..22].trim().to_owned();
            let rest = &l[23..];
            let side = match (&l[..2], rest.starts_with(' ')) {
                ("  ", _) => Side::Both,
                ("* ", false) => Side::OnlyA,
                ("* ", true) => Side::OnlyB,
                (m, _) => panic!("unexpected marker {m:?} in {l:?}"),
            };
            (side, when, rest.trim().to_owned())
        })
        .collect()
}

#[test]
fn side_by_side_shows_reg_f_deferring_calls_the_default_plans_earlier() {
    let out = ok(&[
        "simulate",
        "deploy/scenarios/reg-f-caps-defer-calls.toml",
        "--policy",
        "deploy/policy/default.toml",
        "--policy",
        "deploy/policy/us-reg-f.toml",
    ]);
    let a = out
        .lines()
        .find(|l| l.starts_with("A: "))
        .expect("policy A");
    let b = out
        .lines()
        .find(|l| l.starts_with("B: "))
        .expect("policy B");
    assert!(a.starts_with("A: deploy/policy/default.toml (p-"), "{a}");
    assert!(b.starts_with("B: deploy/policy/us-reg-f.toml (p-"), "{b}");
    assert_ne!(a[a.find('(').expect("(")..], b[b.find('(').expect("(")..]);

    let lines = side_by_side(&out);
    // A line both runs share holds the same cell twice.
    let has = |side: Side, when: &str, cell: &str| {
        lines.iter().any(|(s, w, c)| {
            *s == side
                && w == when
                && match side {
                    Side::Both => c.starts_with(cell) && c.ends_with(cell) && c.len() > cell.len(),
                    Side::OnlyA | Side::OnlyB => c == cell,
                }
        })
    };
    // Both start alike: the failed payment and the first call.
    assert!(has(
        Side::Both,
        "Mon 11-02 09:00 EST",
        "event payment.failed"
    ));
    assert!(has(
        Side::Both,
        "Mon 11-02 09:00 EST",
        "due collection_call phone_mobile gentle Mon 11-02 09:00 EST"
    ));
    // The 8th attempt in 7 days: the default calls on Wednesday, Reg F waits until Monday.
    assert!(has(
        Side::OnlyA,
        "Wed 11-04 10:00 EST",
        "scheduled collection_call phone_mobile gentle Wed 11-04 13:00 EST"
    ));
    assert!(has(
        Side::OnlyB,
        "Wed 11-04 10:00 EST",
        "scheduled collection_call phone_mobile gentle Mon 11-09 09:00 EST"
    ));
    // The call after the expired promise: at once by default, 7 days after the
    // conversation under Reg F.
    assert!(has(
        Side::OnlyA,
        "Thu 11-05 14:00 EST",
        "scheduled collection_call phone_mobile firm Thu 11-05 14:00 EST"
    ));
    assert!(has(
        Side::OnlyB,
        "Thu 11-05 14:00 EST",
        "scheduled collection_call phone_mobile firm Wed 11-11 15:00 EST"
    ));
}

#[test]
fn json_of_two_policies_shows_each_reg_f_deferral_later_than_the_default_plan() {
    let v = json(&[
        "simulate",
        "deploy/scenarios/reg-f-caps-defer-calls.toml",
        "--policy",
        "deploy/policy/default.toml",
        "--policy",
        "deploy/policy/us-reg-f.toml",
        "--json",
    ]);
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["policy"], "deploy/policy/default.toml");
    assert_eq!(runs[1]["policy"], "deploy/policy/us-reg-f.toml");
    let planned = |run: &Value| -> Vec<(Timestamp, u64, Timestamp, String)> {
        tasks(run)
            .into_iter()
            .filter(|e| e["state"] == "scheduled" && e["kind"] == "collection_call")
            .map(|e| {
                (
                    ts(e["at"].as_str().expect("at")),
                    e["attempt"].as_u64().expect("attempt"),
                    ts(e["due_at"].as_str().expect("due_at")),
                    e["reason"].as_str().expect("reason").to_owned(),
                )
            })
            .collect()
    };
    let (default, reg_f) = (planned(&runs[0]), planned(&runs[1]));
    assert!(default.iter().all(|p| !p.3.contains("deferred")));
    // Each Reg F deferral against the default's plan of the same attempt at the same
    // instant: (planned at, default due, Reg F due).
    let pairs: Vec<(Timestamp, Timestamp, Timestamp)> = reg_f
        .iter()
        .filter(|p| p.3.contains("deferred"))
        .map(|(at, attempt, due, _)| {
            let d = default
                .iter()
                .find(|d| d.0 == *at && d.1 == *attempt)
                .unwrap_or_else(|| panic!("no default plan at {at} for attempt {attempt}"));
            (*at, d.2, *due)
        })
        .collect();
    assert_eq!(
        pairs,
        [
            (
                ts("2026-11-04T10:00:00-05:00"),
                ts("2026-11-04T13:00:00-05:00"),
                ts("2026-11-09T09:00:00-05:00")
            ),
            (
                ts("2026-11-05T14:00:00-05:00"),
                ts("2026-11-05T14:00:00-05:00"),
                ts("2026-11-11T15:00:00-05:00")
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// refused policy files
// ---------------------------------------------------------------------------------------

#[test]
fn an_invalid_policy_is_refused_naming_the_key() {
    let default =
        std::fs::read_to_string(root().join("deploy/policy/default.toml")).expect("default.toml");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ctl-simulate");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cases = [
        (
            "end-before-start.toml",
            ("end = \"21:00\"", "end = \"07:00\""),
            "policy key `contact_window.end`: end 07:00:00 is not after start 08:00:00",
        ),
        (
            "unknown-key.toml",
            ("attempts_per_day = 3", "attempts_per_day = 3\nretries = 2"),
            "policy key `cadence.retries`: unknown field `retries`",
        ),
        (
            "mix-over-one.toml",
            ("phone_home = 0.10", "phone_home = 0.30"),
            "policy key `channel_mix`: shares sum to",
        ),
    ];
    for (file, (from, to), message) in cases {
        assert!(default.contains(from), "default.toml has no {from:?}");
        let path = dir.join(file);
        std::fs::write(&path, default.replacen(from, to, 1)).expect("write policy");
        let path = path.display().to_string();
        // Alone, and as the second of two: either way nothing is simulated.
        for args in [
            vec!["--policy", path.as_str()],
            vec!["--policy", "deploy/policy/default.toml", "--policy", &path],
        ] {
            let mut all = vec!["simulate", "deploy/scenarios/promise-kept.toml"];
            all.extend(args);
            let out = run(&all);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{file} accepted");
            assert_ne!(out.status.code(), Some(0));
            assert!(stderr.contains(message), "{file}: {stderr}");
            assert!(stderr.contains(&path), "the file is named: {stderr}");
            assert!(out.stdout.is_empty(), "{file}: a timeline was printed");
        }
    }
}

#[test]
fn table_shows_the_hold_scenarios_key_lines_and_the_paused_dpd() {
    // The table's task rows end in the due instant, the account's bucket/DPD, the reason.
    let rows = |name: &str| -> Vec<Vec<String>> {
        ok(&["simulate", &format!("deploy/scenarios/{name}.toml")])
            .lines()
            .skip_while(|l| !l.starts_with("when (local)"))
            .skip(1)
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    };
    // (state, kind, channel, due, bucket/DPD, first word of the reason)
    let has = |r: &[Vec<String>], want: [&str; 6]| {
        r.iter().any(|t| {
            t.len() > 15
                && t[5] == want[0]
                && t[6] == want[1]
                && t[7] == want[2]
                && t[10..14].join(" ") == want[3]
                && t[14] == want[4]
                && t[15] == want[5]
        })
    };
    let dispute = rows("hold-dispute-placed-and-resolved");
    for want in [
        [
            "cancelled",
            "collection_call",
            "phone_mobile",
            "Tue 11-03 13:00 CST",
            "M1/2",
            "hold:dispute",
        ],
        [
            "due",
            "hold_review",
            "none",
            "Fri 11-06 10:00 CST",
            "M1/5",
            "review",
        ],
        [
            "due",
            "collection_call",
            "phone_mobile",
            "Fri 11-06 14:00 CST",
            "M1/5",
            "hold",
        ],
    ] {
        assert!(has(&dispute, want), "{want:?} in {dispute:#?}");
    }
    let hardship = rows("hold-hardship-pause-dpd");
    for want in [
        [
            "due",
            "hold_review",
            "none",
            "Tue 11-17 10:30 CST",
            "M1/24",
            "review",
        ],
        [
            "due",
            "collection_call",
            "phone_mobile",
            "Fri 11-20 10:00 CST",
            "M1/24",
            "hold",
        ],
    ] {
        assert!(has(&hardship, want), "{want:?} in {hardship:#?}");
    }
    let opt_out = rows("opt-out-sms-reminders-move-to-phone");
    for want in [
        [
            "cancelled",
            "pre_due_reminder",
            "sms",
            "Thu 11-26 10:00 CST",
            "M0/0",
            "restriction:opt_out:sms",
        ],
        [
            "due",
            "pre_due_reminder",
            "phone_mobile",
            "Thu 11-26 10:00 CST",
            "M0/0",
            "pre-due",
        ],
    ] {
        assert!(has(&opt_out, want), "{want:?} in {opt_out:#?}");
    }
    let hours = rows("agreed-hours-18-20");
    for want in [
        [
            "cancelled",
            "collection_call",
            "phone_mobile",
            "Tue 11-03 13:00 CST",
            "M1/2",
            "restriction:agreed_hours",
        ],
        [
            "due",
            "collection_call",
            "phone_mobile",
            "Tue 11-03 18:00 CST",
            "M1/2",
            "attempt",
        ],
        [
            "due",
            "promise_reminder",
            "phone_mobile",
            "Wed 11-04 19:59 CST",
            "M1/3",
            "remind",
        ],
    ] {
        assert!(has(&hours, want), "{want:?} in {hours:#?}");
    }
}
