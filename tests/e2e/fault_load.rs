//! The load of the scheduler's fault tests and the soak: a policy with timings in seconds,
//! waves of delinquent accounts in an afternoon zone and two night zones, promises, night
//! tasks set back to the evening, and the checks of what happened at night. The contact,
//! hold and arrangement traffic of each wave is in `traffic`.

mod traffic;

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
    invariants::{Caps, Observed, Transition},
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
    /// Inputs waiting for the event before them to be applied (a hold's release, an
    /// arrangement's payments and reversal): (that event's id, account, the groups still
    /// to send, in order). Each group is published at once (its instant set then, see
    /// `traffic::sent_at_field`), the next once the group's last event is applied.
    followups: Vec<(Uuid, String, Vec<traffic::Group>)>,
}

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
