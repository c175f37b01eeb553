//! The arrangements' invariants (issue 22), judged from the accounts' state, the task rows
//! and the outbox once the system has settled:
//!
//! - each instalment's expiry fired at most once, and planned at most once while open;
//! - nothing fired for a kept instalment: an instalment met and never missed has no
//!   expiry emitted;
//! - no instalment lost: every unmet instalment of an open arrangement still has its
//!   expiry open (the scheduler will judge it), so none is left pending forever;
//! - misses counted once: an arrangement's miss count is the number of its instalments
//!   ever missed (an expiry applied twice would count one twice);
//! - outcomes published once: a kept arrangement has exactly one `arrangement.kept` and no
//!   `arrangement.broken` (a reversal after it was kept breaks it: then both); a broken one
//!   at least one `arrangement.broken`; never two `arrangement.broken` ids for one
//!   instalment and reason.

use std::collections::HashMap;

use collections_core::{
    arrangement::{parse_instalment_key, ArrangementStatus, InstalmentStatus},
    AccountState,
};
use serde_json::Value;
use uuid::Uuid;

use crate::harness::TestEnv;

/// (account, arrangement id, instalment number).
type InstalmentKey = (String, String, u32);

/// An outcome published: (routing key, instalment number, reason, event id).
type Outcome = (String, u64, String, Uuid);

/// What was judged, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub arrangements: usize,
    pub kept: usize,
    pub broken: usize,
    pub instalments: usize,
    pub expiries_fired: usize,
}

/// Counts and violations (what was broken, detail).
pub async fn check(env: &TestEnv) -> (Counts, Vec<(&'static str, String)>) {
    let mut v = Vec::new();
    let mut c = Counts::default();
    let states: Vec<(String, Value)> = sqlx::query_as(
        "SELECT account_id, state FROM accounts
         WHERE jsonb_array_length(coalesce(state->'arrangements', '[]'::jsonb)) > 0",
    )
    .fetch_all(&env.db)
    .await
    .expect("accounts");
    // The tasks of instalments, by (account, arrangement, number): (kind, status).
    let rows: Vec<(Uuid, String, String, String, String)> = sqlx::query_as(
        "SELECT task_id, account_id, kind, status, promise_id FROM tasks
         WHERE promise_id LIKE '%#%'
           AND kind IN ('promise_reminder', 'promise_check', 'instalment_expiry')",
    )
    .fetch_all(&env.db)
    .await
    .expect("instalment tasks");
    let mut tasks: HashMap<InstalmentKey, Vec<(Uuid, String, String)>> = HashMap::new();
    for (id, account, kind, status, key) in rows {
        if let Some((arrangement, n)) = parse_instalment_key(&key) {
            tasks
                .entry((account, arrangement.to_owned(), n))
                .or_default()
                .push((id, kind, status));
        }
    }
    // The outcomes written to the outbox, by (account, arrangement): (type, number, reason, id).
    let outcomes: Vec<(String, String, Value, Uuid)> = sqlx::query_as(
        "SELECT account_id, routing_key, body, event_id FROM outbox
         WHERE routing_key IN ('arrangement.kept', 'arrangement.broken')",
    )
    .fetch_all(&env.db)
    .await
    .expect("outcomes");
    let mut published: HashMap<(String, String), Vec<Outcome>> = HashMap::new();
    for (account, key, body, id) in outcomes {
        let data = &body["data"];
        published
            .entry((
                account,
                data["arrangement_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
            .or_default()
            .push((
                key,
                data["instalment_number"].as_u64().unwrap_or(0),
                data["reason"].as_str().unwrap_or_default().to_owned(),
                id,
            ));
    }

    for (account, state) in states {
        let state: AccountState = match serde_json::from_value(state) {
            Ok(s) => s,
            Err(e) => {
                v.push((
                    "well-formed",
                    format!("{account}: state does not parse: {e}"),
                ));
                continue;
            }
        };
        for a in &state.arrangements {
            if a.instalments.is_empty() {
                // Only its cancellation has arrived.
                continue;
            }
            c.arrangements += 1;
            let name = format!("{account}/{}", a.arrangement_id);
            let mut ever_missed = 0;
            for i in &a.instalments {
                c.instalments += 1;
                let of = tasks
                    .get(&(account.clone(), a.arrangement_id.clone(), i.number))
                    .map_or(&[][..], Vec::as_slice);
                let expiries = |status: &str| {
                    of.iter()
                        .filter(|(_, k, s)| k == "instalment_expiry" && s == status)
                        .count()
                };
                let (fired, open) = (
                    expiries("emitted"),
                    expiries("scheduled") + expiries("claimed"),
                );
                c.expiries_fired += fired;
                if fired > 1 {
                    v.push((
                        "each instalment expiry fired once",
                        format!("{name} #{}: {fired} expiries emitted", i.number),
                    ));
                }
                if open > 1 || (open > 0 && fired > 0) {
                    v.push((
                        "each instalment expiry fired once",
                        format!(
                            "{name} #{}: {fired} emitted and {open} still open",
                            i.number
                        ),
                    ));
                }
                let missed = i.missed_once || i.status == InstalmentStatus::Missed;
                ever_missed += u32::from(missed);
                if i.status == InstalmentStatus::Met && !i.missed_once && fired > 0 {
                    v.push((
                        "nothing fired for a kept instalment",
                        format!(
                            "{name} #{} was met and never missed, its expiry fired",
                            i.number
                        ),
                    ));
                }
                if a.status == ArrangementStatus::Open
                    && i.status == InstalmentStatus::Pending
                    && open == 0
                {
                    v.push((
                        "no instalment left without its expiry",
                        format!(
                            "{name} #{} is pending in an open arrangement, no expiry open \
                             (tasks {of:?})",
                            i.number
                        ),
                    ));
                }
            }
            if a.misses != ever_missed {
                v.push((
                    "misses counted once",
                    format!(
                        "{name}: {} misses counted, {ever_missed} instalments ever missed",
                        a.misses
                    ),
                ));
            }
            let out = published
                .get(&(account.clone(), a.arrangement_id.clone()))
                .map_or(&[][..], Vec::as_slice);
            let kept = out.iter().filter(|o| o.0 == "arrangement.kept").count();
            let broken = out.iter().filter(|o| o.0 == "arrangement.broken").count();
            let mut seen = HashMap::new();
            for o in out.iter().filter(|o| o.0 == "arrangement.broken") {
                if let Some(other) = seen.insert((o.1, o.2.clone()), o.3) {
                    v.push((
                        "outcomes published once",
                        format!(
                            "{name}: arrangement.broken #{} ({}) twice, ids {other} and {}",
                            o.1, o.2, o.3
                        ),
                    ));
                }
            }
            match a.status {
                ArrangementStatus::Kept => {
                    c.kept += 1;
                    if kept != 1 || broken != 0 {
                        v.push((
                            "outcomes published once",
                            format!("{name} is kept: {kept} kept and {broken} broken published"),
                        ));
                    }
                }
                ArrangementStatus::Broken => {
                    c.broken += 1;
                    if broken == 0 || kept > 1 {
                        v.push((
                            "outcomes published once",
                            format!("{name} is broken: {kept} kept and {broken} broken published"),
                        ));
                    }
                }
                _ => {
                    if kept > 0 {
                        v.push((
                            "outcomes published once",
                            format!(
                                "{name} is {:?}, yet arrangement.kept was published",
                                a.status
                            ),
                        ));
                    }
                }
            }
        }
    }
    (c, v)
}
