//! The contact, hold and arrangement traffic of a wave of [`Load`] (issues 18, 19 and
//! 22), and the follow-ups that wait for the event before them to be applied.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use uuid::Uuid;

use super::Load;
use crate::{
    fault_support::Rng,
    harness::{cny, TestEnv},
};

/// Events published together: (type, data).
pub(super) type Group = Vec<(&'static str, serde_json::Value)>;

/// The field of a follow-up's data that says when it happened, set as it is published.
pub(super) fn sent_at_field(ty: &str) -> &'static str {
    match ty {
        "hold.released" => "released_at",
        "payment.reversed" => "reversed_at",
        _ => "received_at",
    }
}

impl Load {
    /// The contact, hold and arrangement traffic of a day account `i` of wave `w` (issues
    /// 18, 19 and 22), by `i % 6`: an arrangement ([`Load::arrangement_traffic`]); three
    /// conversations with a debtor who owes on this account and
    /// the next (the cap reached across both: their calls move to tomorrow); a callback
    /// asked for a few seconds ahead (fired in the run); a wrong number, six unanswered
    /// attempts on one contact point (its daily cap) and a correction of one of them;
    /// a hold or restriction, by wave: a dispute hold placed (twice: a duplicate
    /// publication) and released in the next wave; a release published before its
    /// hardship hold;
    /// do-not-call on the mobile, workplace prohibited and agreed hours around now, the
    /// do-not-call lifted 3 s later. One attempt per wave names an account never seen.
    pub async fn contacts_and_holds(
        &mut self,
        env: &TestEnv,
        rng: &mut Rng,
        acc: &str,
        w: usize,
        i: usize,
    ) {
        let now = Timestamp::now();
        let attempt =
            |attempt_id: String, channel: &str, point: &str, result: &str, party: &str| {
                json!({"account_id": acc, "attempt_id": attempt_id, "channel": channel,
                   "direction": "outbound", "contact_point_id": point, "party": party,
                   "result": result, "started_at": now - SignedDuration::from_secs(30),
                   "agent_id": "dialer-1"})
            };
        match i % 6 {
            1 => {
                // This account and the next (i % 6 == 2) belong to one debtor.
                let debtor = format!("deb-{acc}");
                let next = acc.rsplit_once('-').map_or_else(
                    || acc.to_owned(),
                    |(head, n)| format!("{head}-{}", n.parse::<usize>().unwrap_or(0) + 1),
                );
                for (k, on) in [acc, acc, next.as_str()].into_iter().enumerate() {
                    let mut a = attempt(
                        format!("talk-{acc}-{k}"),
                        "phone_mobile",
                        &format!("cp-{on}-m"),
                        "connected",
                        "debtor",
                    );
                    a["account_id"] = json!(on);
                    a["debtor_id"] = json!(debtor);
                    a["disposition"] = json!(["other", "refused", "promise_made"][k]);
                    if k == 1 {
                        a["direction"] = json!("inbound");
                    }
                    self.send(env, "contact.attempted", on, a).await;
                }
            }
            3 => {
                let secs = 4 + i64::try_from(rng.below(5)).expect("small");
                let at = now + SignedDuration::from_secs(secs);
                self.horizon = self.horizon.max(at + SignedDuration::from_secs(1));
                let mut a = attempt(
                    format!("cb-{acc}"),
                    "phone_mobile",
                    &format!("cp-{acc}-m"),
                    "connected",
                    "debtor",
                );
                a["disposition"] = json!("callback_requested");
                a["callback_at"] = json!(at);
                self.send(env, "contact.attempted", acc, a).await;
            }
            4 => {
                let wrong = attempt(
                    format!("wn-{acc}"),
                    "phone_work",
                    &format!("cp-{acc}-w"),
                    "wrong_number",
                    "unknown",
                );
                self.send(env, "contact.attempted", acc, wrong).await;
                for k in 0..6 {
                    let result = ["no_answer", "busy", "voicemail"][k % 3];
                    let a = attempt(
                        format!("na-{acc}-{k}"),
                        "phone_mobile",
                        &format!("cp-{acc}-m"),
                        result,
                        "unknown",
                    );
                    self.send(env, "contact.attempted", acc, a).await;
                }
                // A correction: the first of them was a failed call after all.
                let fix = attempt(
                    format!("na-{acc}-0"),
                    "phone_mobile",
                    &format!("cp-{acc}-m"),
                    "failed",
                    "unknown",
                );
                self.send(env, "contact.attempted", acc, fix).await;
            }
            5 => self.hold_traffic(env, acc, w, now).await,
            0 => self.arrangement_traffic(env, acc, w, now).await,
            _ => {}
        }
        if i == 0 {
            let stranger = format!("{}u{w}", self.prefix);
            let a = attempt(
                format!("u-{stranger}"),
                "phone_mobile",
                "cp-u",
                "no_answer",
                "unknown",
            );
            let mut a = a;
            a["account_id"] = json!(stranger);
            self.send(env, "contact.attempted", &stranger, a).await;
        }
    }

    async fn hold_traffic(&mut self, env: &TestEnv, acc: &str, w: usize, now: Timestamp) {
        let later = now + SignedDuration::from_secs(3);
        let hold_id = format!("hold-{acc}");
        let placed = |reason: &str, pause: bool| {
            json!({"account_id": acc, "hold_id": hold_id, "reason": reason, "scope": "all",
                   "placed_at": now, "pause_dpd": pause, "placed_by": "fault-suite"})
        };
        let released = |outcome: &str| {
            json!({"account_id": acc, "hold_id": hold_id, "outcome": outcome,
                   "released_at": later, "released_by": "fault-suite"})
        };
        match w % 3 {
            0 => {
                // Placed twice (a duplicate publication); released once the placement is
                // applied (the next wave), in published order.
                self.send(env, "hold.placed", acc, placed("dispute", false))
                    .await;
                let placement = *self.inputs.last().expect("just sent");
                self.send(env, "hold.placed", acc, placed("dispute", false))
                    .await;
                self.follow(
                    placement,
                    acc,
                    vec![vec![("hold.released", released("resolved"))]],
                );
            }
            1 => {
                // A release published before its placement, dated a few seconds ahead: the
                // hold is in force over the account's open call when the placement is
                // applied, after its release. The call must wait for the hold's end and
                // not be lost (this once stranded the account without a next step).
                let release = released("expired");
                let place = placed("hardship", true);
                self.send(env, "hold.released", acc, release).await;
                self.send(env, "hold.placed", acc, place).await;
            }
            _ => {
                let hour = now.to_zoned(self.day.1.clone()).hour();
                let restrictions = [
                    json!({"kind": "do_not_call", "channel": "phone_mobile"}),
                    json!({"kind": "workplace_prohibited"}),
                    json!({"kind": "agreed_hours", "hours": {
                        "start": format!("{hour:02}:00"),
                        "end": format!("{:02}:00", (hour + 3).min(21))}}),
                ];
                for (k, mut r) in restrictions.into_iter().enumerate() {
                    r["account_id"] = json!(acc);
                    r["restriction_id"] = json!(format!("rst-{acc}-{k}"));
                    r["effective_at"] = json!(now);
                    r["source"] = json!("fault-suite");
                    self.send(env, "contact.restricted", acc, r).await;
                }
                self.send(
                    env,
                    "contact.unrestricted",
                    acc,
                    json!({"account_id": acc, "restriction_id": format!("rst-{acc}-0"),
                           "effective_at": later}),
                )
                .await;
            }
        }
    }

    /// An arrangement on a day account (issue 22), by wave: three instalments 8-12 s ahead
    /// paid by three payments once the plan is applied (kept: nothing of it fires but
    /// reminders); two instalments, the first 4 s ahead and never paid (its expiry fires:
    /// missed, broken, collection resumes; the second's tasks are cancelled); a settlement
    /// at 70 % approved by a supervisor, paid (kept: the account is cured), then the
    /// payment reversed (broken, re-opened, a call planned).
    async fn arrangement_traffic(&mut self, env: &TestEnv, acc: &str, w: usize, now: Timestamp) {
        let plan = |id: &str, kind: &str, dues: &[(i64, i64)]| {
            let instalments: Vec<serde_json::Value> = dues
                .iter()
                .enumerate()
                .map(|(k, (secs, minor))| {
                    json!({"number": k + 1, "due_at": now + SignedDuration::from_secs(*secs),
                           "amount": cny(*minor)})
                })
                .collect();
            json!({"account_id": acc, "arrangement_id": id, "kind": kind,
                   "total": cny(dues.iter().map(|d| d.1).sum()), "instalments": instalments,
                   "settles_in_full": false, "captured_by": "agent-7",
                   "channel": "phone_mobile"})
        };
        let pay = |id: String, minor: i64| {
            (
                "payment.received",
                json!({"account_id": acc, "payment_id": id, "amount": cny(minor)}),
            )
        };
        let last_due = match w % 3 {
            0 => {
                let id = format!("arr-{acc}");
                self.send(
                    env,
                    "arrangement.made",
                    acc,
                    plan(
                        &id,
                        "instalment_plan",
                        &[(8, 3_000), (10, 3_000), (12, 4_000)],
                    ),
                )
                .await;
                let payments = vec![
                    pay(format!("pay-{acc}-1"), 3_000),
                    pay(format!("pay-{acc}-2"), 3_000),
                    pay(format!("pay-{acc}-3"), 4_000),
                ];
                self.follow(self.last_input(), acc, vec![payments]);
                12
            }
            1 => {
                let id = format!("arr-{acc}");
                self.send(
                    env,
                    "arrangement.made",
                    acc,
                    plan(&id, "instalment_plan", &[(4, 5_000), (3_600, 5_000)]),
                )
                .await;
                4
            }
            _ => {
                let id = format!("set-{acc}");
                let mut settlement = plan(&id, "settlement", &[(8, 7_000)]);
                settlement["settles_in_full"] = json!(true);
                settlement["discount_approved_by"] = json!("sup-fault");
                self.send(env, "arrangement.made", acc, settlement).await;
                let reversal = (
                    "payment.reversed",
                    json!({"account_id": acc, "payment_id": format!("pay-{acc}-s"),
                           "amount": cny(7_000), "reason": "returned_debit"}),
                );
                self.follow(
                    self.last_input(),
                    acc,
                    vec![vec![pay(format!("pay-{acc}-s"), 7_000)], vec![reversal]],
                );
                8
            }
        };
        // Check 3 s and expiry 6 s after the last instalment.
        self.horizon = self
            .horizon
            .max(now + SignedDuration::from_secs(last_due + 7));
    }

    /// The input just sent.
    fn last_input(&self) -> Uuid {
        *self.inputs.last().expect("just sent")
    }

    /// Queues `groups` on `acc`, to follow the input `after` once it is applied.
    fn follow(&mut self, after: Uuid, acc: &str, groups: Vec<Group>) {
        self.followups.push((after, acc.to_owned(), groups));
    }

    /// Publishes the next group of each follow-up whose previous event has been applied,
    /// its instants set now.
    pub(super) async fn send_followups(&mut self, env: &TestEnv) {
        if self.followups.is_empty() {
            return;
        }
        let ids: Vec<Uuid> = self.followups.iter().map(|f| f.0).collect();
        let applied: Vec<Uuid> =
            sqlx::query_scalar("SELECT event_id FROM inbox WHERE event_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&env.db)
                .await
                .unwrap_or_default();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.followups)
            .into_iter()
            .partition(|f| applied.contains(&f.0));
        self.followups = waiting;
        for (_, acc, mut groups) in ready {
            let group = groups.remove(0);
            for (ty, mut data) in group {
                data[sent_at_field(ty)] = json!(Timestamp::now());
                self.send(env, ty, &acc, data).await;
            }
            if !groups.is_empty() {
                let after = self.last_input();
                self.follow(after, &acc, groups);
            }
        }
    }

    /// Sends what still waits on the events before it (hold releases, payments and
    /// reversals of arrangements), for up to `wait`.
    pub async fn finish(&mut self, env: &TestEnv, wait: Duration) {
        let deadline = Instant::now() + wait;
        while !self.followups.is_empty() && Instant::now() < deadline {
            self.send_followups(env).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
