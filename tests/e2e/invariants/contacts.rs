//! The contact invariants (issues 18 and 19), judged from what the database recorded and
//! the `task.due` events received, with an oracle of its own (it does not call the core's
//! rules it checks):
//!
//! - *caps*: no phone task fired beyond a cap in force when it fired: the conversations
//!   with the debtor on the local day (across the debtor's accounts), the unanswered
//!   attempts on the task's contact point that day, and, in the Regulation F profile, the
//!   call attempts per account in the rolling window and the quiet days after a
//!   conversation (calls the debtor asked for, `callback`, are exempt from those two);
//! - *holds*: no contact task fired while a hold or restriction covering it was in force:
//!   a hold with scope `all` or a reason that stops all contact, a hold on the task's
//!   channel, an opt-out or do-not-call of its channel or contact point (or of every
//!   channel / every phone), workplace prohibited (`phone_work`), third party refused
//!   (`contact_person`), or agreed hours the firing falls outside of.
//!
//! "In force when it fired" means known to the service by then: an attempt from its
//! `recorded_at`, a hold or restriction from the `decided_at` of the journal line that
//! recorded it, each plus [`GRACE`]; and in force at the firing instant by the publisher's
//! own times (placed, released, effective, expires, lifted), as the rules read them.

use std::collections::HashMap;

use jiff::{civil::Time, tz::TimeZone, SignedDuration, Timestamp};
use serde_json::Value;
use uuid::Uuid;

use super::observed::{ts, Observed, Transition};
use crate::harness::TestEnv;

/// How long after its recorded time a contact, hold or restriction may still be unseen
/// by a firing. A worker stamps the batch's decision time (`recorded_at`, the journal's
/// `decided_at`) before it takes the account locks and commits; a scheduler that reads
/// the ledger and fires between the stamp and the commit cannot see it. The stamp-to-
/// commit span is the batch's transaction (milliseconds), its wait for the locks a firing
/// or another batch holds, and at most one statement timeout of the fault tests
/// (`DB_TIMEOUT_SECS` 3) before the batch is retried with a new stamp: 5 s covers it.
pub const GRACE: SignedDuration = SignedDuration::from_secs(5);

/// The caps of the policy the test ran with (0 = no cap).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub conversations_per_debtor_per_day: usize,
    pub unanswered_per_point_per_day: usize,
    /// Regulation F: at most `attempts` placed calls per account in `window` (0 = off),
    /// none within `quiet` after a conversation about the account (zero = off).
    pub regf_attempts: usize,
    pub regf_window: SignedDuration,
    pub regf_quiet: SignedDuration,
}

impl Caps {
    /// The default policy's caps (China's: 3 conversations, 6 unanswered; Regulation F
    /// off).
    pub const DEFAULT: Caps = Caps {
        conversations_per_debtor_per_day: 3,
        unanswered_per_point_per_day: 6,
        regf_attempts: 0,
        regf_window: SignedDuration::ZERO,
        regf_quiet: SignedDuration::ZERO,
    };
}

/// One firing of a task (`task.due`), at the instant it was fired.
#[derive(Debug, Clone)]
pub struct Firing {
    pub task: Uuid,
    pub account: String,
    pub kind: String,
    pub channel: String,
    pub point: Option<String>,
    pub at: Timestamp,
}

/// One row of `contact_attempts`.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub debtor: String,
    pub account: String,
    pub channel: String,
    pub outbound: bool,
    pub party: String,
    pub result: String,
    pub point: Option<String>,
    pub task: Option<String>,
    pub started_at: Timestamp,
    pub recorded_at: Timestamp,
}

impl AttemptRow {
    fn conversation(&self) -> bool {
        self.result == "connected" && self.party == "debtor"
    }

    fn unanswered(&self) -> bool {
        self.outbound
            && matches!(
                self.result.as_str(),
                "no_answer" | "busy" | "voicemail" | "failed"
            )
    }

    fn placed_call(&self) -> bool {
        self.outbound && is_phone(&self.channel)
    }
}

/// A hold as the account records it, with when the service learned of it.
#[derive(Debug, Clone, Default)]
pub struct HoldView {
    pub id: String,
    pub reason: Option<String>,
    /// `None` = scope `all` (or unknown: then only a stop-all reason covers).
    pub channels: Option<Vec<String>>,
    pub placed_at: Option<Timestamp>,
    pub released_at: Option<Timestamp>,
    pub known_since: Option<Timestamp>,
}

/// A restriction as the account records it, with when the service learned of it.
#[derive(Debug, Clone, Default)]
pub struct RestrictionView {
    pub id: String,
    pub kind: Option<String>,
    pub channel: Option<String>,
    pub point: Option<String>,
    pub hours: Option<(Time, Time)>,
    pub effective_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub lifted_at: Option<Timestamp>,
    pub known_since: Option<Timestamp>,
}

/// What the check needs of an account.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub debtor: String,
    pub zone: TimeZone,
    pub holds: Vec<HoldView>,
    pub restrictions: Vec<RestrictionView>,
}

/// Everything the contact invariants judge.
#[derive(Debug, Clone)]
pub struct ContactWorld {
    pub firings: Vec<Firing>,
    pub attempts: Vec<AttemptRow>,
    pub accounts: HashMap<String, AccountView>,
    pub caps: Caps,
}

fn is_phone(channel: &str) -> bool {
    matches!(channel, "phone_mobile" | "phone_work" | "phone_home")
}

fn known(since: Option<Timestamp>, at: Timestamp) -> bool {
    // A record without the journal line that dates it is taken as known all along.
    since.is_none_or(|s| s + GRACE <= at)
}

const STOP_ALL: [&str; 4] = [
    "cease_communication",
    "attorney_represented",
    "bankruptcy",
    "deceased",
];

/// Phone tasks fired beyond a cap in force when they fired, one line each.
pub fn cap_violations(w: &ContactWorld) -> Vec<String> {
    let mut out = Vec::new();
    for f in w.firings.iter().filter(|f| is_phone(&f.channel)) {
        let Some(acc) = w.accounts.get(&f.account) else {
            out.push(format!(
                "{} {} fired for unknown account {}",
                f.kind, f.task, f.account
            ));
            continue;
        };
        let day = f.at.to_zoned(acc.zone.clone()).date();
        let seen: Vec<&AttemptRow> = w
            .attempts
            .iter()
            .filter(|a| a.debtor == acc.debtor && a.recorded_at + GRACE <= f.at)
            .collect();
        let on_day = |a: &&&AttemptRow| a.started_at.to_zoned(acc.zone.clone()).date() == day;
        let talks = seen
            .iter()
            .filter(|a| a.conversation())
            .filter(on_day)
            .count();
        let max = w.caps.conversations_per_debtor_per_day;
        if max > 0 && talks >= max {
            out.push(format!(
                "{} {} (account {}, debtor {}) fired at {} with {talks} conversations on {day} \
                 already recorded (cap {max})",
                f.kind, f.task, f.account, acc.debtor, f.at
            ));
        }
        if let Some(point) = &f.point {
            let unanswered = seen
                .iter()
                .filter(|a| a.point.as_ref() == Some(point) && a.unanswered())
                .filter(on_day)
                .count();
            let max = w.caps.unanswered_per_point_per_day;
            if max > 0 && unanswered >= max {
                out.push(format!(
                    "{} {} (account {}) fired at {} to contact point {point} with {unanswered} \
                     unanswered attempts on {day} (cap {max})",
                    f.kind, f.task, f.account, f.at
                ));
            }
        }
        if f.kind == "callback" {
            continue;
        }
        let quiet = w.caps.regf_quiet;
        if quiet.is_positive() {
            if let Some(c) = seen
                .iter()
                .filter(|a| a.account == f.account && a.conversation())
                .map(|a| a.started_at)
                .filter(|s| *s <= f.at && f.at < *s + quiet)
                .max()
            {
                out.push(format!(
                    "{} {} (account {}) fired at {} within the quiet period of {quiet:#} after \
                     the conversation at {c}",
                    f.kind, f.task, f.account, f.at
                ));
            }
        }
        let max = w.caps.regf_attempts;
        if max > 0 {
            let span = w.caps.regf_window;
            let inside = |t: Timestamp| t < f.at && f.at.duration_since(t) < span;
            // The service's own earlier calls on the account (callbacks exempt), and the
            // collectors' own dials (attempts that name no task).
            let fired = w
                .firings
                .iter()
                .filter(|o| o.account == f.account && is_phone(&o.channel) && o.kind != "callback")
                .filter(|o| o.task != f.task && inside(o.at))
                .count();
            let manual = seen
                .iter()
                .filter(|a| a.account == f.account && a.placed_call() && a.task.is_none())
                .filter(|a| inside(a.started_at))
                .count();
            if fired + manual >= max {
                out.push(format!(
                    "{} {} (account {}) fired at {} after {fired} fired and {manual} manual call \
                     attempts in the last {span:#} (cap {max})",
                    f.kind, f.task, f.account, f.at
                ));
            }
        }
    }
    out
}

/// Contact tasks fired while a hold or restriction covering them was in force, one line
/// each.
pub fn hold_violations(w: &ContactWorld) -> Vec<String> {
    let mut out = Vec::new();
    for f in w.firings.iter().filter(|f| f.channel != "none") {
        let Some(acc) = w.accounts.get(&f.account) else {
            continue;
        };
        let t = f.at;
        for h in &acc.holds {
            let in_force =
                h.placed_at.is_some_and(|p| p <= t) && h.released_at.is_none_or(|r| t < r);
            if !in_force || !known(h.known_since, t) {
                continue;
            }
            let stops_all = h.reason.as_deref().is_some_and(|r| STOP_ALL.contains(&r));
            let covers = stops_all
                || match &h.channels {
                    None => true,
                    Some(list) => list.contains(&f.channel),
                };
            if covers {
                out.push(format!(
                    "{} {} (account {}, {}) fired at {t} under hold {} ({})",
                    f.kind,
                    f.task,
                    f.account,
                    f.channel,
                    h.id,
                    h.reason.as_deref().unwrap_or("?")
                ));
            }
        }
        for r in &acc.restrictions {
            let in_force = r.kind.is_some()
                && r.effective_at.is_some_and(|e| e <= t)
                && r.expires_at.is_none_or(|x| t < x)
                && r.lifted_at.is_none_or(|l| t < l);
            if !in_force || !known(r.known_since, t) {
                continue;
            }
            let channel = f.channel.as_str();
            let point = f.point.as_deref();
            let by = |everything: bool| match (&r.point, &r.channel) {
                (Some(p), _) => point == Some(p.as_str()),
                (None, Some(c)) => c == channel,
                (None, None) => everything,
            };
            let forbids = match r.kind.as_deref() {
                Some("opt_out") => by(true),
                Some("do_not_call") => by(is_phone(channel)),
                Some("workplace_prohibited") => channel == "phone_work",
                Some("third_party_refused") => channel == "contact_person",
                Some("agreed_hours") => r.hours.is_some_and(|(start, end)| {
                    let local = t.to_zoned(acc.zone.clone()).time();
                    !(start <= local && local < end)
                }),
                _ => false,
            };
            if forbids {
                out.push(format!(
                    "{} {} (account {}, {channel}{}) fired at {t} under restriction {} ({})",
                    f.kind,
                    f.task,
                    f.account,
                    point.map(|p| format!(" to {p}")).unwrap_or_default(),
                    r.id,
                    r.kind.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    out
}

fn opt_ts(v: &Value) -> Option<Timestamp> {
    ts(v)
}

fn opt_str(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// Reads the world the contact invariants judge: every firing received, the ledger, and
/// each account's debtor, zone, holds and restrictions (with the journal's dates).
pub async fn read(env: &TestEnv, observed: &Observed, caps: Caps) -> ContactWorld {
    let rows: Vec<(Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT task_id, channel, contact_point_id FROM tasks")
            .fetch_all(&env.db)
            .await
            .expect("tasks");
    let task_rows: HashMap<Uuid, (String, Option<String>)> =
        rows.into_iter().map(|(id, c, p)| (id, (c, p))).collect();
    let mut firings = Vec::new();
    for r in observed
        .received
        .iter()
        .filter(|r| r.transition == Transition::Due)
    {
        let (Some(t), Some((channel, point))) =
            (observed.tasks.get(&r.task_id), task_rows.get(&r.task_id))
        else {
            continue;
        };
        let mut times = r.times.clone();
        times.sort();
        times.dedup();
        for at in times {
            firings.push(Firing {
                task: r.task_id,
                account: r.account.clone(),
                kind: t.kind.clone(),
                channel: channel.clone(),
                point: point.clone(),
                at,
            });
        }
    }

    let rows: Vec<(String, String, Value, i64, i64)> = sqlx::query_as(
        "SELECT debtor_id, account_id, attempt,
                (extract(epoch FROM started_at) * 1000000)::bigint,
                (extract(epoch FROM recorded_at) * 1000000)::bigint
         FROM contact_attempts",
    )
    .fetch_all(&env.db)
    .await
    .expect("contact_attempts");
    let attempts = rows
        .into_iter()
        .map(|(debtor, account, a, started, recorded)| AttemptRow {
            debtor,
            account,
            channel: opt_str(&a["channel"]).unwrap_or_default(),
            outbound: a["direction"] == "outbound",
            party: opt_str(&a["party"]).unwrap_or_default(),
            result: opt_str(&a["result"]).unwrap_or_default(),
            point: opt_str(&a["contact_point_id"]),
            task: opt_str(&a["task_id"]),
            started_at: Timestamp::from_microsecond(started).expect("started_at"),
            recorded_at: Timestamp::from_microsecond(recorded).expect("recorded_at"),
        })
        .collect();

    // When the service learned of each hold and restriction: its journal line.
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT account_id, kind, detail, (extract(epoch FROM decided_at) * 1000000)::bigint
         FROM journal WHERE kind IN ('hold_placed', 'contact_restricted')",
    )
    .fetch_all(&env.db)
    .await
    .expect("journal");
    let mut learned: HashMap<(String, String), Timestamp> = HashMap::new();
    for (account, kind, detail, at) in rows {
        let prefix = if kind == "hold_placed" {
            "hold "
        } else {
            "restriction "
        };
        let Some(id) = detail
            .strip_prefix(prefix)
            .and_then(|d| d.split_once(": "))
            .map(|(id, _)| format!("{kind}:{id}"))
        else {
            continue;
        };
        let at = Timestamp::from_microsecond(at).expect("decided_at");
        let e = learned.entry((account, id)).or_insert(at);
        *e = (*e).min(at);
    }

    let rows: Vec<(String, Option<Value>)> =
        sqlx::query_as("SELECT account_id, state FROM accounts")
            .fetch_all(&env.db)
            .await
            .expect("accounts");
    let mut accounts = HashMap::new();
    for (id, state) in rows {
        let state = state.unwrap_or(Value::Null);
        let zone = state["timezone"]
            .as_str()
            .and_then(|z| TimeZone::get(z).ok())
            .unwrap_or(TimeZone::UTC);
        let debtor = opt_str(&state["debtor_id"]).unwrap_or_else(|| id.clone());
        let since =
            |kind: &str, rid: &str| learned.get(&(id.clone(), format!("{kind}:{rid}"))).copied();
        let holds = state["holds"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        let hid = opt_str(&h["hold_id"]).unwrap_or_default();
                        HoldView {
                            known_since: since("hold_placed", &hid),
                            id: hid,
                            reason: opt_str(&h["reason"]),
                            channels: h["scope"].as_array().map(|l| {
                                l.iter()
                                    .filter_map(|c| c.as_str().map(str::to_owned))
                                    .collect()
                            }),
                            placed_at: opt_ts(&h["placed_at"]),
                            released_at: opt_ts(&h["released_at"]),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let restrictions = state["restrictions"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        let rid = opt_str(&r["restriction_id"]).unwrap_or_default();
                        let hm = |v: &Value| v.as_str().and_then(|s| s.parse::<Time>().ok());
                        RestrictionView {
                            known_since: since("contact_restricted", &rid),
                            id: rid,
                            kind: opt_str(&r["kind"]),
                            channel: opt_str(&r["channel"]),
                            point: opt_str(&r["contact_point_id"]),
                            hours: hm(&r["hours"]["start"]).zip(hm(&r["hours"]["end"])),
                            effective_at: opt_ts(&r["effective_at"]),
                            expires_at: opt_ts(&r["expires_at"]),
                            lifted_at: opt_ts(&r["lifted_at"]),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        accounts.insert(
            id,
            AccountView {
                debtor,
                zone,
                holds,
                restrictions,
            },
        );
    }
    ContactWorld {
        firings,
        attempts,
        accounts,
        caps,
    }
}

#[cfg(test)]
mod tests {
    //! Each invariant can fail: hand-built worlds that break it are caught, and the same
    //! worlds within the rules (or within the grace) pass.

    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("instant")
    }

    fn world() -> ContactWorld {
        let mut accounts = HashMap::new();
        accounts.insert(
            "acc-1".to_owned(),
            AccountView {
                debtor: "d-1".into(),
                zone: TimeZone::get("Asia/Shanghai").expect("zone"),
                holds: Vec::new(),
                restrictions: Vec::new(),
            },
        );
        ContactWorld {
            firings: Vec::new(),
            attempts: Vec::new(),
            accounts,
            caps: Caps::DEFAULT,
        }
    }

    fn fire(kind: &str, channel: &str, point: Option<&str>, when: &str) -> Firing {
        Firing {
            task: Uuid::new_v4(),
            account: "acc-1".into(),
            kind: kind.into(),
            channel: channel.into(),
            point: point.map(str::to_owned),
            at: at(when),
        }
    }

    fn attempt(
        result: &str,
        party: &str,
        point: &str,
        started: &str,
        recorded: &str,
    ) -> AttemptRow {
        AttemptRow {
            debtor: "d-1".into(),
            account: "acc-2".into(),
            channel: "phone_mobile".into(),
            outbound: true,
            party: party.into(),
            result: result.into(),
            point: Some(point.into()),
            task: None,
            started_at: at(started),
            recorded_at: at(recorded),
        }
    }

    #[test]
    fn a_call_after_three_conversations_that_day_is_a_violation() {
        let mut w = world();
        for m in ["01", "02", "03"] {
            // Another account of the same debtor: the cap is per person.
            w.attempts.push(attempt(
                "connected",
                "debtor",
                "cp-1",
                &format!("2026-12-04T02:{m}:00Z"),
                &format!("2026-12-04T02:{m}:30Z"),
            ));
        }
        w.firings.push(fire(
            "collection_call",
            "phone_mobile",
            None,
            "2026-12-04T05:00:00Z",
        ));
        assert_eq!(cap_violations(&w).len(), 1, "{:?}", cap_violations(&w));
        // Two conversations only: within the cap.
        w.attempts.pop();
        assert!(cap_violations(&w).is_empty());
    }

    #[test]
    fn a_conversation_recorded_within_the_grace_before_the_firing_is_not_held_against_it() {
        let mut w = world();
        for m in ["01", "02", "03"] {
            w.attempts.push(attempt(
                "connected",
                "debtor",
                "cp-1",
                &format!("2026-12-04T02:{m}:00Z"),
                &format!("2026-12-04T02:{m}:30Z"),
            ));
        }
        // The third was recorded 2 s before the firing: the firing may not have seen it.
        w.firings.push(fire(
            "collection_call",
            "phone_mobile",
            None,
            "2026-12-04T02:03:32Z",
        ));
        assert!(cap_violations(&w).is_empty());
        w.firings[0].at = at("2026-12-04T02:03:36Z");
        assert_eq!(cap_violations(&w).len(), 1);
        // The next local day (Shanghai) is a new day.
        w.firings[0].at = at("2026-12-04T16:00:00Z");
        assert!(cap_violations(&w).is_empty());
    }

    #[test]
    fn a_call_to_a_point_with_six_unanswered_attempts_that_day_is_a_violation() {
        let mut w = world();
        for m in 0..6 {
            w.attempts.push(attempt(
                if m % 2 == 0 { "no_answer" } else { "busy" },
                "unknown",
                "cp-1",
                &format!("2026-12-04T02:0{m}:00Z"),
                &format!("2026-12-04T02:0{m}:10Z"),
            ));
        }
        w.firings.push(fire(
            "collection_call",
            "phone_mobile",
            Some("cp-1"),
            "2026-12-04T06:00:00Z",
        ));
        assert_eq!(cap_violations(&w).len(), 1);
        // Another point is not capped.
        w.firings[0].point = Some("cp-2".into());
        assert!(cap_violations(&w).is_empty());
        // An SMS is not a phone call.
        w.firings[0].point = Some("cp-1".into());
        w.firings[0].channel = "sms".into();
        assert!(cap_violations(&w).is_empty());
    }

    #[test]
    fn regulation_f_quiet_days_and_seven_in_seven_are_violations_except_for_callbacks() {
        let mut w = world();
        w.caps.regf_attempts = 7;
        w.caps.regf_window = SignedDuration::from_hours(7 * 24);
        w.caps.regf_quiet = SignedDuration::from_hours(7 * 24);
        let mut talk = attempt(
            "connected",
            "debtor",
            "cp-1",
            "2026-12-01T02:00:00Z",
            "2026-12-01T02:01:00Z",
        );
        talk.account = "acc-1".into();
        w.attempts.push(talk);
        w.firings.push(fire(
            "collection_call",
            "phone_mobile",
            None,
            "2026-12-04T02:00:00Z",
        ));
        assert_eq!(cap_violations(&w).len(), 1, "{:?}", cap_violations(&w));
        w.firings[0].kind = "callback".into();
        assert!(cap_violations(&w).is_empty(), "a callback is consented");
        // Eight days later the quiet period is over.
        w.firings[0].kind = "collection_call".into();
        w.firings[0].at = at("2026-12-08T03:00:00Z");
        assert!(cap_violations(&w).is_empty());
        // Seven fired calls in the window, then an eighth.
        w.attempts.clear();
        w.firings.clear();
        for d in 1..=7 {
            w.firings.push(fire(
                "collection_call",
                "phone_mobile",
                None,
                &format!("2026-12-0{d}T02:00:00Z"),
            ));
        }
        assert!(cap_violations(&w).is_empty());
        w.firings.push(fire(
            "collection_call",
            "phone_home",
            None,
            "2026-12-07T09:00:00Z",
        ));
        assert_eq!(cap_violations(&w).len(), 1, "{:?}", cap_violations(&w));
    }

    fn hold(
        reason: &str,
        channels: Option<&[&str]>,
        placed: &str,
        released: Option<&str>,
    ) -> HoldView {
        HoldView {
            id: format!("h-{reason}"),
            reason: Some(reason.into()),
            channels: channels.map(|l| l.iter().map(|c| (*c).to_owned()).collect()),
            placed_at: Some(at(placed)),
            released_at: released.map(at),
            known_since: Some(at(placed)),
        }
    }

    #[test]
    fn a_task_fired_under_a_hold_that_covers_it_is_a_violation() {
        let mut w = world();
        let acc = w.accounts.get_mut("acc-1").expect("account");
        acc.holds.push(hold(
            "dispute",
            None,
            "2026-12-04T01:00:00Z",
            Some("2026-12-04T04:00:00Z"),
        ));
        w.firings.push(fire(
            "promise_reminder",
            "sms",
            None,
            "2026-12-04T02:00:00Z",
        ));
        assert_eq!(hold_violations(&w).len(), 1);
        // After the release, or before the placement: allowed.
        w.firings[0].at = at("2026-12-04T04:00:00Z");
        assert!(hold_violations(&w).is_empty());
        w.firings[0].at = at("2026-12-04T00:59:00Z");
        assert!(hold_violations(&w).is_empty());
        // Known only 3 s before the firing: within the grace.
        w.firings[0].at = at("2026-12-04T01:00:03Z");
        assert!(hold_violations(&w).is_empty());
        // A channel hold covers its channels only; a stop-all reason covers everything.
        let acc = w.accounts.get_mut("acc-1").expect("account");
        acc.holds = vec![hold(
            "complaint",
            Some(&["phone_work", "sms"]),
            "2026-12-04T01:00:00Z",
            None,
        )];
        w.firings[0].at = at("2026-12-04T02:00:00Z");
        assert_eq!(hold_violations(&w).len(), 1, "sms is covered");
        w.firings[0].channel = "phone_mobile".into();
        assert!(hold_violations(&w).is_empty());
        let acc = w.accounts.get_mut("acc-1").expect("account");
        acc.holds = vec![hold(
            "attorney_represented",
            Some(&["letter"]),
            "2026-12-04T01:00:00Z",
            None,
        )];
        assert_eq!(hold_violations(&w).len(), 1, "attorney stops all contact");
        // Tasks that contact nobody are not judged.
        w.firings[0].channel = "none".into();
        assert!(hold_violations(&w).is_empty());
    }

    #[test]
    fn a_task_fired_against_a_restriction_in_force_is_a_violation() {
        let mut w = world();
        let restriction =
            |kind: &str, channel: Option<&str>, point: Option<&str>| RestrictionView {
                id: format!("r-{kind}"),
                kind: Some(kind.into()),
                channel: channel.map(str::to_owned),
                point: point.map(str::to_owned),
                hours: (kind == "agreed_hours").then(|| {
                    (
                        "18:00".parse().expect("time"),
                        "20:00".parse().expect("time"),
                    )
                }),
                effective_at: Some(at("2026-12-04T01:00:00Z")),
                expires_at: Some(at("2026-12-05T01:00:00Z")),
                lifted_at: None,
                known_since: Some(at("2026-12-04T01:00:00Z")),
            };
        // (restriction, task channel, task point, violation?) at 10:00 Shanghai.
        let cases = [
            (restriction("opt_out", Some("sms"), None), "sms", None, true),
            (
                restriction("opt_out", Some("sms"), None),
                "phone_mobile",
                None,
                false,
            ),
            (restriction("opt_out", None, None), "visit", None, true),
            (
                restriction("do_not_call", None, Some("cp-9")),
                "phone_home",
                Some("cp-9"),
                true,
            ),
            (
                restriction("do_not_call", None, Some("cp-9")),
                "phone_home",
                Some("cp-8"),
                false,
            ),
            (
                restriction("do_not_call", None, None),
                "phone_work",
                None,
                true,
            ),
            (restriction("do_not_call", None, None), "sms", None, false),
            (
                restriction("workplace_prohibited", None, None),
                "phone_work",
                None,
                true,
            ),
            (
                restriction("workplace_prohibited", None, None),
                "phone_mobile",
                None,
                false,
            ),
            (
                restriction("third_party_refused", None, None),
                "contact_person",
                None,
                true,
            ),
            (
                restriction("agreed_hours", None, None),
                "phone_mobile",
                None,
                true,
            ),
        ];
        for (r, channel, point, bad) in cases {
            let kind = r.kind.clone();
            let acc = w.accounts.get_mut("acc-1").expect("account");
            acc.restrictions = vec![r];
            w.firings = vec![fire(
                "collection_call",
                channel,
                point,
                "2026-12-04T02:00:00Z",
            )];
            assert_eq!(
                !hold_violations(&w).is_empty(),
                bad,
                "{kind:?} on {channel} {point:?}"
            );
        }
        // Inside the agreed hours (19:00 Shanghai), after expiry, after a lift: allowed.
        w.firings[0].at = at("2026-12-04T11:00:00Z");
        assert!(hold_violations(&w).is_empty());
        w.firings[0].at = at("2026-12-05T02:00:00Z");
        assert!(hold_violations(&w).is_empty());
        w.firings[0].at = at("2026-12-04T02:00:00Z");
        let acc = w.accounts.get_mut("acc-1").expect("account");
        acc.restrictions[0].lifted_at = Some(at("2026-12-04T01:30:00Z"));
        assert!(hold_violations(&w).is_empty());
    }
}
