//! The scheduler under faults: a load whose tasks come due during the test (night
//! accounts included), kill -9 and link cuts of the scheduler at random moments, and the
//! race of cancellations with firing. The `#[test]` entry points are in `crate::faults`.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use jiff::{tz::TimeZone, SignedDuration, Timestamp};
use serde_json::json;
use uuid::Uuid;

use crate::{
    fault_support::{failed, Rng},
    harness::{cny, zone_where_it_is, TestEnv},
    invariants::{verify, Caps, Expect, Observed, Transition},
    proxy::{target, via, Proxy},
};

/// The scheduler's world under load: a policy with promise timings and cadence hours in
/// seconds, accounts in a zone where it is early afternoon, and accounts in two zones where
/// it is night (about 02:00 and 23:00).
pub struct Load {
    prefix: String,
    day: (String, TimeZone),
    nights: [(String, TimeZone); 2],
    /// Every input published, in order.
    pub inputs: Vec<Uuid>,
    /// Night accounts' contact tasks whose due instant the test set back to the last
    /// evening (20:59:30 local), as an outage would leave them: they come due at night.
    pub set_back: HashMap<Uuid, Timestamp>,
    pub waves: usize,
    /// The last instant a task of this load comes due today (the last cadence hour, the
    /// latest promise's expiry).
    pub horizon: Timestamp,
    /// The contact caps of the policy written.
    pub caps: Caps,
    /// Hold releases waiting for their placement to be applied: (placement's event id,
    /// account, release data).
    releases: Vec<(Uuid, String, serde_json::Value)>,
    /// Arrangement traffic waiting for the event before it to be applied: (that event's
    /// id, account, the groups still to send, in order). Each group is published at once
    /// (its instants set then), the next once the group's last event is applied.
    followups: Vec<(Uuid, String, Vec<Group>)>,
}

/// Events published together: (type, data).
type Group = Vec<(&'static str, serde_json::Value)>;

impl Load {
    /// Writes the policy (POLICY_FILE for every binary of `env`): reminder and check 3 s
    /// around the promise, expiry 6 s after it, and `cadence` cadence hours every
    /// `step` from `first` (local times in the day zone), 3 attempts a day.
    pub fn new(
        env: &mut TestEnv,
        prefix: &str,
        first: Duration,
        step: Duration,
        cadence: u32,
    ) -> Self {
        Self::with_profile(env, prefix, first, step, cadence, false)
    }

    /// As [`Load::new`]; with `regulation_f`, the policy also keeps Regulation F's caps
    /// (deploy/policy/us-reg-f.toml: 7 call attempts in 7 days per account, 7 quiet days
    /// after a conversation).
    pub fn with_profile(
        env: &mut TestEnv,
        prefix: &str,
        first: Duration,
        step: Duration,
        cadence: u32,
        regulation_f: bool,
    ) -> Self {
        let day = zone_where_it_is(13);
        let nights = [zone_where_it_is(2), zone_where_it_is(23)];
        let start = Timestamp::now() + SignedDuration::try_from(first).expect("duration");
        let last_hour =
            start + SignedDuration::try_from(step * cadence.saturating_sub(1)).expect("duration");
        let hours: Vec<String> = (0..cadence)
            .map(|k| {
                let at = start + SignedDuration::try_from(step * k).expect("duration");
                format!("\"{}\"", at.to_zoned(day.1.clone()).strftime("%H:%M:%S"))
            })
            .collect();
        let mut text = collections_core::policy::DEFAULT_POLICY_TOML.to_owned();
        for (from, to) in [
            (
                "reminder_before = \"1h\"",
                "reminder_before = \"3s\"".to_owned(),
            ),
            ("check_after = \"1h\"", "check_after = \"3s\"".to_owned()),
            ("grace = \"2h\"", "grace = \"6s\"".to_owned()),
            (
                "hours = [\"10:00\", \"13:00\", \"17:00\", \"20:00\"]",
                format!("hours = [{}]", hours.join(", ")),
            ),
            (
                "default_timezone = \"Asia/Shanghai\"",
                format!("default_timezone = \"{}\"", day.0),
            ),
        ] {
            assert!(text.contains(from), "the default policy has `{from}`");
            text = text.replacen(from, &to, 1);
        }
        let mut caps = Caps::DEFAULT;
        if regulation_f {
            for (from, to) in [
                ("max_call_attempts = 0", "max_call_attempts = 7"),
                (
                    "quiet_after_conversation = \"0s\"",
                    "quiet_after_conversation = \"168h\"",
                ),
            ] {
                assert!(text.contains(from), "the default policy has `{from}`");
                text = text.replacen(from, to, 1);
            }
            caps.regf_attempts = 7;
            caps.regf_window = SignedDuration::from_hours(7 * 24);
            caps.regf_quiet = SignedDuration::from_hours(7 * 24);
        }
        // The arrangements' grace too (issue 22): instalments missed within the test.
        let section = text
            .find("[arrangement]")
            .expect("an [arrangement] section");
        let at = section
            + text[section..]
                .find("grace = \"2h\"")
                .expect("the arrangement grace");
        text.replace_range(at..at + "grace = \"2h\"".len(), "grace = \"6s\"");
        if let Err(e) = collections_core::Policy::from_toml_str(&text) {
            panic!("the test policy is valid: {e}");
        }
        let path = env.log_dir.join("policy.toml");
        std::fs::write(&path, text).expect("write policy");
        env.extra_env
            .push(("POLICY_FILE".into(), path.display().to_string()));
        Self {
            caps,
            releases: Vec::new(),
            followups: Vec::new(),
            prefix: prefix.to_owned(),
            day,
            nights,
            inputs: Vec::new(),
            set_back: HashMap::new(),
            waves: 0,
            horizon: last_hour + SignedDuration::from_secs(1),
        }
    }

    /// One wave: `day` delinquent accounts in the afternoon zone and `night` in the night
    /// zones; half of each make a promise 4-8 s ahead. A night account's promise is sent
    /// once its `payment.failed` (which names its zone) is applied, so its tasks are
    /// planned in its own zone.
    pub async fn wave(&mut self, env: &TestEnv, rng: &mut Rng, day: usize, night: usize) {
        let w = self.waves;
        self.waves += 1;
        self.release_held(env).await;
        self.send_followups(env).await;
        let mut promises = Vec::new();
        for i in 0..day {
            let acc = format!("{}d{w}-{i}", self.prefix);
            let (zone, tz) = &self.day;
            let today = Timestamp::now().to_zoned(tz.clone()).date().to_string();
            self.inputs.push(
                env.publish("payment.failed", &acc, failed(&acc, zone, &today))
                    .await,
            );
            if i % 2 == 0 {
                promises.push(acc);
            }
        }
        for acc in &promises {
            self.promise(env, rng, acc).await;
        }
        for i in 0..day {
            let acc = format!("{}d{w}-{i}", self.prefix);
            self.contacts_and_holds(env, rng, &acc, w, i).await;
        }
        let mut night_ids = Vec::new();
        for i in 0..night {
            let acc = format!("{}n{w}-{i}", self.prefix);
            let (zone, tz) = &self.nights[i % 2];
            let today = Timestamp::now().to_zoned(tz.clone()).date().to_string();
            let id = env
                .publish("payment.failed", &acc, failed(&acc, zone, &today))
                .await;
            self.inputs.push(id);
            night_ids.push((id, acc, i));
        }
        // Once a night account's zone is known (its payment.failed applied): a promise from
        // every other one, and from the rest the news that the first instalment failed
        // too, which re-ranks their open call (priority 1, re-announced with an id of its
        // own).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !night_ids.is_empty() {
            let ids: Vec<Uuid> = night_ids.iter().map(|(id, _, _)| *id).collect();
            let applied: Vec<Uuid> =
                sqlx::query_scalar("SELECT event_id FROM inbox WHERE event_id = ANY($1)")
                    .bind(&ids)
                    .fetch_all(&env.db)
                    .await
                    .unwrap_or_default();
            let (ready, rest): (Vec<_>, Vec<_>) = night_ids
                .into_iter()
                .partition(|(id, _, _)| applied.contains(id));
            for (_, acc, i) in ready {
                if i % 2 == 0 {
                    self.promise(env, rng, &acc).await;
                } else {
                    let (zone, tz) = &self.nights[i % 2];
                    let today = Timestamp::now().to_zoned(tz.clone()).date().to_string();
                    let mut first = failed(&acc, zone, &today);
                    first["installment"]["number"] = json!(1);
                    self.inputs
                        .push(env.publish("payment.failed", &acc, first).await);
                }
            }
            night_ids = rest;
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Publishes an input and records it.
    async fn send(&mut self, env: &TestEnv, ty: &str, acc: &str, data: serde_json::Value) {
        self.inputs.push(env.publish(ty, acc, data).await);
    }

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
                let mut release = released("resolved");
                release["released_at"] = json!(Timestamp::now());
                self.releases.push((placement, acc.to_owned(), release));
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
                self.follow(acc, vec![payments]);
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

    /// Queues `groups` to follow the input just sent on `acc`.
    fn follow(&mut self, acc: &str, groups: Vec<Group>) {
        let after = *self.inputs.last().expect("just sent");
        self.followups.push((after, acc.to_owned(), groups));
    }

    /// Publishes the next group of each arrangement's traffic whose previous event has been
    /// applied, its instants (`received_at`, `reversed_at`) set now.
    async fn send_followups(&mut self, env: &TestEnv) {
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
                let at = if ty == "payment.reversed" {
                    "reversed_at"
                } else {
                    "received_at"
                };
                data[at] = json!(Timestamp::now());
                self.send(env, ty, &acc, data).await;
            }
            if !groups.is_empty() {
                self.follow(&acc, groups);
            }
        }
    }

    /// Sends what still waits on the events before it (hold releases, payments and
    /// reversals of arrangements), for up to `wait`.
    pub async fn finish(&mut self, env: &TestEnv, wait: Duration) {
        let deadline = Instant::now() + wait;
        while !(self.releases.is_empty() && self.followups.is_empty()) && Instant::now() < deadline
        {
            self.release_held(env).await;
            self.send_followups(env).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Publishes the hold releases whose placement has been applied.
    async fn release_held(&mut self, env: &TestEnv) {
        if self.releases.is_empty() {
            return;
        }
        let ids: Vec<Uuid> = self.releases.iter().map(|r| r.0).collect();
        let applied: Vec<Uuid> =
            sqlx::query_scalar("SELECT event_id FROM inbox WHERE event_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&env.db)
                .await
                .unwrap_or_default();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.releases)
            .into_iter()
            .partition(|r| applied.contains(&r.0));
        self.releases = waiting;
        for (_, acc, mut data) in ready {
            data["released_at"] = json!(Timestamp::now());
            self.send(env, "hold.released", &acc, data).await;
        }
    }

    pub async fn promise(&mut self, env: &TestEnv, rng: &mut Rng, acc: &str) {
        let secs = 4 + i64::try_from(rng.below(5)).expect("small");
        let promised = Timestamp::now() + SignedDuration::from_secs(secs);
        // Check 3 s and expiry 6 s after the promise.
        self.horizon = self.horizon.max(promised + SignedDuration::from_secs(7));
        self.inputs.push(
            env.publish(
                "promise.made",
                acc,
                json!({"account_id": acc, "promise_id": format!("ptp-{acc}"),
                       "amount": cny(10_000), "promised_at": promised,
                       "captured_by": "agent-7", "channel": "phone_mobile"}),
            )
            .await,
        );
    }

    /// Sets the night accounts' planned contact tasks (due tomorrow morning, local) back to
    /// 20:59:30 of the last evening, as if an outage had held them since: they are due now,
    /// at night, and must be moved, never fired.
    pub async fn set_back_night_tasks(&mut self, env: &TestEnv) {
        for (zone, tz) in &self.nights {
            let local = Timestamp::now().to_zoned(tz.clone());
            let mut date = local.date();
            if local.hour() < 21 {
                date = date.yesterday().expect("date");
            }
            let evening = date
                .at(20, 59, 30, 0)
                .to_zoned(tz.clone())
                .expect("local time")
                .timestamp();
            let micros = evening.as_microsecond();
            for attempt in 0.. {
                // A deadlock with a worker's batch is possible (both lock task rows);
                // Postgres aborts one side, and either side retries.
                let r: Result<Vec<Uuid>, _> = sqlx::query_scalar(
                    "UPDATE tasks t SET due_at = to_timestamp($1::float8 / 1000000)
                     FROM accounts a
                     WHERE a.account_id = t.account_id AND a.state->>'timezone' = $2
                       AND t.account_id LIKE $3 || '%'
                       AND t.status = 'scheduled' AND t.due_at > now()
                       AND t.kind NOT IN ('promise_expiry', 'supervisor_review')
                     RETURNING t.task_id",
                )
                .bind(micros)
                .bind(zone)
                .bind(&self.prefix)
                .fetch_all(&env.db)
                .await;
                match r {
                    Ok(ids) => {
                        for id in ids {
                            self.set_back.insert(id, evening);
                        }
                        break;
                    }
                    Err(e) if attempt < 5 => {
                        eprintln!("set back night tasks: {e}; retrying");
                    }
                    Err(e) => panic!("set back night tasks: {e}"),
                }
            }
        }
    }

    /// Publishes `waves` waves 300-900 ms apart, setting night tasks back halfway and at
    /// the end.
    pub async fn run(
        &mut self,
        env: &TestEnv,
        rng: &mut Rng,
        waves: usize,
        day: usize,
        night: usize,
    ) {
        for w in 0..waves {
            self.wave(env, rng, day, night).await;
            if w == waves / 2 {
                self.set_back_night_tasks(env).await;
            }
            tokio::time::sleep(rng.millis(300, 900)).await;
        }
        self.finish(env, Duration::from_secs(20)).await;
        // Let the last night payments be planned, then set their tasks back too.
        env.wait_count(
            &format!(
                "SELECT count(*) FROM inbox WHERE event_id IN ({})",
                self.inputs
                    .iter()
                    .map(|i| format!("'{i}'"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            i64::try_from(self.inputs.len()).expect("count"),
            Duration::from_secs(20),
        )
        .await;
        self.set_back_night_tasks(env).await;
    }

    /// Night-time checks on top of the invariants: every task the test set back to the
    /// evening came due at night and was moved (re-announced as `task.scheduled` at a
    /// later instant inside the window) or cancelled, never fired. Returns (moved,
    /// cancelled).
    pub fn check_night(&self, observed: &Observed) -> (usize, usize) {
        let (mut moved, mut cancelled) = (0, 0);
        let mut problems = Vec::new();
        for (task, evening) in &self.set_back {
            let events = observed.of_task(*task);
            let row = &observed.tasks[task];
            let zone = &observed.zones[&row.account];
            let tz = TimeZone::get(zone).expect("zone");
            if events.iter().any(|e| e.transition == Transition::Due) {
                problems.push(format!("{} {task} of {} fired", row.kind, row.account));
            }
            let moves: Vec<_> = events
                .iter()
                .filter(|e| e.transition == Transition::Moved)
                .collect();
            for m in &moves {
                let local = m.due_at.to_zoned(tz.clone());
                let fired = m.times.first().copied().unwrap_or(m.due_at);
                if m.due_at <= *evening || m.due_at < fired || !(8..21).contains(&local.hour()) {
                    problems.push(format!(
                        "{} {task} of {} moved from {evening} to {} ({} local, announced at {fired})",
                        row.kind,
                        row.account,
                        m.due_at,
                        local.strftime("%F %T")
                    ));
                }
            }
            let was_cancelled = events.iter().any(|e| e.transition == Transition::Cancelled);
            if moves.is_empty() && !was_cancelled {
                problems.push(format!(
                    "{} {task} of {} came due at night and was neither moved nor cancelled \
                     (status {}, due {})",
                    row.kind, row.account, row.status, row.due_at
                ));
            }
            moved += usize::from(!moves.is_empty());
            cancelled += usize::from(moves.is_empty() && was_cancelled);
        }
        assert!(
            problems.is_empty(),
            "night tasks: {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
        (moved, cancelled)
    }
}

/// The database's clock, in microseconds (claims are stamped with it).
async fn db_clock(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
        .fetch_one(&env.db)
        .await
        .expect("clock")
}

/// Waits up to `wait` until tasks claimed after `since` (database clock, microseconds)
/// are still claimed; returns how many (0 when none came).
async fn claims_since(env: &TestEnv, since: i64, wait: Duration) -> i64 {
    let deadline = Instant::now() + wait;
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasks
             WHERE status = 'claimed' AND claimed_at > to_timestamp($1::float8 / 1000000)",
        )
        .bind(since)
        .fetch_one(&env.db)
        .await
        .unwrap_or(0);
        if n > 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What the scheduler did, by kind of task event (the scheduler's work was really done
/// under the faults, not skipped).
pub fn scheduler_work(observed: &Observed) -> HashMap<&'static str, usize> {
    let mut m = HashMap::new();
    for r in &observed.received {
        let Some(t) = observed.tasks.get(&r.task_id) else {
            continue;
        };
        let key = match (r.transition, t.kind.as_str()) {
            (Transition::Due, "collection_call") if t.attempt > 1 => "cadence call due",
            (Transition::Due, "collection_call") => "first call due",
            (Transition::Due, "promise_reminder") => "reminder due",
            (Transition::Due, "promise_check") => "check due",
            (Transition::Moved, _) => "moved at firing",
            (Transition::Reranked, _) => "re-ranked",
            _ => continue,
        };
        *m.entry(key).or_default() += 1;
    }
    m.insert("promise expired", observed.summary.expiries);
    m.insert("instalment expired", observed.summary.instalment_expiries);
    m
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerFault {
    /// SIGKILL, then a new process.
    Kill9,
    /// The scheduler's broker link cut (RST) and restored.
    BrokerCut,
    /// The scheduler's database link cut and restored.
    DatabaseCut,
}

/// Runs the four workers and a scheduler (its links to the broker or the database through
/// a proxy of the test's own) under inbound load whose tasks come due during the test,
/// inflicts `fault` on the scheduler `times` times at random moments, then checks the
/// invariants, the night-time moves, and that the scheduler's work was done.
pub async fn scheduler_under_faults(test: &str, fault: SchedulerFault, times: usize) {
    let started = Instant::now();
    let (mut rng, _) = Rng::seeded("FAULT_SEED", test);
    let mut env = TestEnv::new().await;
    let mut load = Load::new(
        &mut env,
        "acc-",
        Duration::from_secs(4),
        Duration::from_secs(4),
        5,
    );
    // Small claims, so that a fault is likely to catch a batch between claim and mark.
    env.extra_env.push(("SCHEDULER_BATCH".into(), "10".into()));
    env.start_workers().await;
    let (proxy, overrides) = match fault {
        SchedulerFault::Kill9 => (None, Vec::new()),
        SchedulerFault::BrokerCut => {
            let p = Proxy::start(target(&env.amqp_url, 5672).await).await;
            let url = via(&env.amqp_url, p.addr, 5672);
            (Some(p), vec![("AMQP_URL".to_owned(), url)])
        }
        SchedulerFault::DatabaseCut => {
            let p = Proxy::start(target(&env.database_url, 5432).await).await;
            let url = via(&env.database_url, p.addr, 5432);
            (Some(p), vec![("DATABASE_URL".to_owned(), url)])
        }
    };
    let first = env.start("task-scheduler", &overrides, "task-scheduler-0");
    let mut fault_rng = rng.fork();
    let env_ref = &env;
    let faults = async {
        let mut scheduler = first;
        let mut done = Vec::new();
        let mut orphaned = 0;
        let t0 = Instant::now();
        let mut n = 0;
        // A kill that leaves no claim behind proves little: kill again (at most twice more).
        while n < times || (fault == SchedulerFault::Kill9 && orphaned == 0 && n < times + 2) {
            n += 1;
            tokio::time::sleep(fault_rng.millis(800, 3500)).await;
            // Then strike while the scheduler holds fresh claims (a batch between claim
            // and mark), if it takes one within 4 s.
            let since = db_clock(env_ref).await;
            let busy = claims_since(env_ref, since, Duration::from_secs(4)).await;
            let at = t0.elapsed().as_secs_f64();
            match (fault, &proxy) {
                (SchedulerFault::Kill9, _) => {
                    scheduler.start_kill().expect("SIGKILL");
                    let _ = scheduler.wait().await;
                    // Claims of the dead process: only the rescuer can return them.
                    let left = claims_since(env_ref, since, Duration::ZERO).await;
                    orphaned += left;
                    let pause = fault_rng.millis(0, 500);
                    tokio::time::sleep(pause).await;
                    scheduler =
                        env_ref.start("task-scheduler", &overrides, &format!("task-scheduler-{n}"));
                    done.push(format!(
                        "kill -9 at {at:.1}s ({busy} claimed, {left} left behind), restarted \
                         {pause:?} later"
                    ));
                }
                (_, Some(p)) => {
                    let outage = fault_rng.millis(1000, 3000);
                    p.cut();
                    tokio::time::sleep(outage).await;
                    p.restore();
                    done.push(format!(
                        "{fault:?} at {at:.1}s ({busy} claimed) for {outage:?}"
                    ));
                }
                (_, None) => unreachable!("a link fault has its proxy"),
            }
        }
        (scheduler, done, orphaned, n)
    };
    let mut load_rng = rng.fork();
    let loading = load.run(env_ref, &mut load_rng, 8, 16, 6);
    let ((scheduler, done, orphaned, strikes), ()) = tokio::join!(faults, loading);
    env.children.push(("task-scheduler".into(), scheduler));
    println!("{test}: faults {done:?}");
    if fault == SchedulerFault::Kill9 {
        assert!(
            orphaned > 0,
            "a kill -9 left claims behind (claimed, maybe published, not marked): {done:?}"
        );
    }

    let observed = verify(
        &env,
        &Expect {
            inputs: &load.inputs,
            scheduler: true,
            // A claim left by the last kill runs out after the claim timeout (40 s) and
            // waits for the rescuer's next round (5 s).
            settle: Duration::from_secs(60),
            horizon: Some(load.horizon),
            // A kill between publish and mark, or a link cut that loses the confirm.
            crashed_firings: fault != SchedulerFault::DatabaseCut,
            caps: load.caps,
        },
    )
    .await;
    let (moved, cancelled) = load.check_night(&observed);
    let work = scheduler_work(&observed);
    let logs: String = (0..=strikes)
        .map(|n| env.log(&format!("task-scheduler-{n}")))
        .collect();
    let rescued = logs
        .matches("rescued tasks claimed by a scheduler that died")
        .count();
    println!(
        "{test}: invariants hold in {:.1}s: {}; night tasks set back {}: {moved} moved, \
         {cancelled} cancelled first; scheduler work {work:?}; rescues logged {rescued}",
        started.elapsed().as_secs_f64(),
        observed.summary,
        load.set_back.len(),
    );
    for what in [
        "first call due",
        "cadence call due",
        "reminder due",
        "check due",
        "promise expired",
        "instalment expired",
        "moved at firing",
        "re-ranked",
    ] {
        assert!(
            work.get(what).copied().unwrap_or(0) > 0,
            "the scheduler's work includes {what}: {work:?}"
        );
    }
    match fault {
        SchedulerFault::Kill9 => {}
        SchedulerFault::BrokerCut => assert!(
            logs.contains("scheduler session ended; reconnecting"),
            "the broker cut was seen by the scheduler"
        ),
        SchedulerFault::DatabaseCut => assert!(
            logs.contains("claim failed; retrying")
                || logs.contains("database failed")
                || logs.contains("database unavailable")
                || logs.contains("scheduler session ended; reconnecting"),
            "the database cut was seen by the scheduler"
        ),
    }
}

/// No fault at all: calls come due the moment they are planned and promises made right
/// after them cancel them, so cancellations race the scheduler's claims. The policy keeps
/// Regulation F's caps too (the load's collector dials and conversations reach them). A task must never
/// be both announced cancelled and fired, and a cancellation the journal records must have
/// been made. (Claims pass over accounts a worker holds; a worker that would cancel a
/// task being fired waits for the firing to settle: ARCHITECTURE.md, "Tasks being fired".)
pub async fn a_task_cancelled_as_it_comes_due_is_never_also_fired() {
    let (mut rng, _) = Rng::seeded("FAULT_SEED", "cancelled_as_it_comes_due");
    let mut env = TestEnv::new().await;
    let mut load = Load::with_profile(
        &mut env,
        "acc-",
        Duration::from_secs(4),
        Duration::from_secs(4),
        3,
        true,
    );
    env.start_workers().await;
    env.spawn("task-scheduler").await;
    load.run(&env, &mut rng, 8, 30, 0).await;
    let observed = verify(
        &env,
        &Expect {
            inputs: &load.inputs,
            scheduler: true,
            settle: Duration::from_secs(45),
            horizon: Some(load.horizon),
            crashed_firings: false,
            caps: load.caps,
        },
    )
    .await;
    println!("invariants hold: {}", observed.summary);
}

/// A broker that takes a scheduler's publishes but holds its confirms for 25 s, longer
/// than the claim timeout of old (15 s) and shorter than the confirm timeout (30 s),
/// while a second scheduler runs. The stalled scheduler's claim must hold until its
/// confirms come in (claim timeout > confirm timeout + margin), and a completion must
/// only complete its own claim (fencing token). The contact window closes 8 s after the
/// calls come due: a second scheduler that rescued them and fired them again would find
/// the window closed and move them to tomorrow, where they would fire a second time
/// under a new id (a second call to the customer). Each call fires exactly once.
pub async fn a_broker_stalling_confirms_past_the_claim_timeout_fires_each_task_once() {
    const CALLS: usize = 8;
    const STALL: Duration = Duration::from_secs(25);
    let mut env = TestEnv::new().await;
    let (zone, tz) = zone_where_it_is(13);
    let window_end = Timestamp::now() + SignedDuration::from_secs(45);
    let fire_at = window_end - SignedDuration::from_secs(8);
    let mut text = collections_core::policy::DEFAULT_POLICY_TOML.to_owned();
    for (from, to) in [
        (
            "end = \"21:00\"".to_owned(),
            format!(
                "end = \"{}\"",
                window_end.to_zoned(tz.clone()).strftime("%H:%M:%S")
            ),
        ),
        (
            "default_timezone = \"Asia/Shanghai\"".to_owned(),
            format!("default_timezone = \"{zone}\""),
        ),
        // Inside the shortened window: the next attempts are planned for tomorrow.
        (
            "hours = [\"10:00\", \"13:00\", \"17:00\", \"20:00\"]".to_owned(),
            "hours = [\"10:00\"]".to_owned(),
        ),
    ] {
        assert!(text.contains(&from), "the default policy has `{from}`");
        text = text.replacen(&from, &to, 1);
    }
    if let Err(e) = collections_core::Policy::from_toml_str(&text) {
        panic!("the test policy is valid: {e}");
    }
    let path = env.log_dir.join("policy.toml");
    std::fs::write(&path, text).expect("write policy");
    env.extra_env
        .push(("POLICY_FILE".into(), path.display().to_string()));
    env.start_workers().await;

    // The calls are planned (due at once), then set to come due together at `fire_at`,
    // before any scheduler runs: the first scheduler claims them all in one batch.
    let today = Timestamp::now().to_zoned(tz.clone()).date().to_string();
    let mut inputs = Vec::new();
    for i in 0..CALLS {
        let acc = format!("acc-s{i}");
        inputs.push(
            env.publish("payment.failed", &acc, failed(&acc, &zone, &today))
                .await,
        );
    }
    env.wait_count(
        "SELECT count(*) FROM tasks WHERE kind = 'collection_call'",
        i64::try_from(CALLS).expect("small"),
        Duration::from_secs(20),
    )
    .await;
    let calls: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE tasks SET due_at = to_timestamp($1::float8 / 1000000)
         WHERE kind = 'collection_call' RETURNING task_id",
    )
    .bind(fire_at.as_microsecond())
    .fetch_all(&env.db)
    .await
    .expect("set the calls' instant");
    assert_eq!(calls.len(), CALLS);
    assert!(
        Timestamp::now() + SignedDuration::from_secs(5) < fire_at,
        "set-up took too long: the calls are due at {fire_at}, the scheduler must be up first"
    );

    // The first scheduler's broker link goes through a proxy; a long heartbeat, so that
    // only the confirm timeout bounds its wait.
    let proxy = Proxy::start(target(&env.amqp_url, 5672).await).await;
    let url = via(&env.amqp_url, proxy.addr, 5672);
    let sep = if url.contains('?') { '&' } else { '?' };
    let overrides = vec![("AMQP_URL".to_owned(), format!("{url}{sep}heartbeat=120"))];
    let first = env.start("task-scheduler", &overrides, "task-scheduler-0");
    env.children.push(("task-scheduler".into(), first));
    let up = Instant::now();
    while !env.log("task-scheduler-0").contains("\"scheduling\"")
        && !env.log("task-scheduler-0").contains(" scheduling")
    {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "the first scheduler did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stall_replies();
    let claimed = env
        .wait_count(
            "SELECT count(*) FROM tasks WHERE status = 'claimed'",
            i64::try_from(CALLS).expect("small"),
            Duration::from_secs(40),
        )
        .await;
    assert_eq!(
        claimed,
        i64::try_from(CALLS).expect("small"),
        "the first scheduler claimed the calls"
    );
    let stalled_at = Instant::now();
    // Now a second scheduler, with a direct link to the broker.
    let second = env.start("task-scheduler", &[], "task-scheduler-1");
    env.children.push(("task-scheduler".into(), second));
    tokio::time::sleep(STALL.saturating_sub(stalled_at.elapsed())).await;
    proxy.restore();

    let observed = verify(
        &env,
        &Expect {
            inputs: &inputs,
            scheduler: true,
            settle: Duration::from_secs(45),
            horizon: Some(fire_at),
            crashed_firings: false,
            caps: Caps::DEFAULT,
        },
    )
    .await;
    for call in &calls {
        let events = observed.of_task(*call);
        let due = events
            .iter()
            .filter(|e| e.transition == Transition::Due)
            .count();
        let moved = events
            .iter()
            .filter(|e| e.transition == Transition::Moved)
            .count();
        assert_eq!(
            (due, moved, observed.tasks[call].status.as_str()),
            (1, 0, "emitted"),
            "call {call}: fired once, never moved to fire again"
        );
    }
    let lost = (0..2)
        .map(|n| env.log(&format!("task-scheduler-{n}")))
        .collect::<String>()
        .matches("rescued tasks claimed by a scheduler that died")
        .count();
    println!(
        "confirms stalled {STALL:?} with two schedulers: invariants hold: {}; rescues logged \
         {lost}",
        observed.summary
    );
}
