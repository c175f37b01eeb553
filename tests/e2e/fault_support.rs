//! What the fault tests share: the load they publish, the invariant check of a workers-only
//! test, a test environment behind a proxy, and the seeded generator of fault moments.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use uuid::Uuid;

use crate::{
    harness::{cny, zone_where_it_is, TestEnv},
    invariants::{verify, Caps, Expect, Observed},
    proxy::{target, via, Proxy},
};

pub fn failed(account: &str, zone: &str, due: &str) -> serde_json::Value {
    json!({
        "account_id": account, "customer": {"timezone": zone},
        "installment": {"number": 2, "due_date": due, "amount": cny(10_000)},
        "overdue_amount": cny(10_000), "failure_reason": "insufficient_funds",
        "attempted_at": Timestamp::now(),
    })
}

/// The invariants (`crate::invariants`) for a test that runs workers only: every input
/// applied exactly once, every committed task event received, ids stable, nothing
/// dead-lettered; and, since every input is a `payment.failed` of its own account, one
/// call per input.
pub async fn check_invariants(env: &TestEnv, inputs: &[Uuid]) -> Observed {
    let observed = verify(
        env,
        &Expect {
            inputs,
            scheduler: false,
            settle: Duration::from_secs(60),
            horizon: None,
            crashed_firings: false,
            caps: Caps::DEFAULT,
        },
    )
    .await;
    let calls = observed
        .tasks
        .values()
        .filter(|t| t.kind == "collection_call")
        .count();
    assert_eq!(calls, inputs.len(), "one call per delinquent account");
    println!("invariants hold: {}", observed.summary);
    observed
}

/// Publishes one `payment.failed` per account `<prefix><i>`; returns the event ids.
pub async fn publish_load(env: &TestEnv, prefix: &str, range: std::ops::Range<usize>) -> Vec<Uuid> {
    let (zone, tz) = zone_where_it_is(13);
    let today = Timestamp::now().to_zoned(tz).date().to_string();
    let mut ids = Vec::with_capacity(range.len());
    for i in range {
        let acc = format!("{prefix}{i}");
        ids.push(
            env.publish("payment.failed", &acc, failed(&acc, &zone, &today))
                .await,
        );
    }
    ids
}

/// A test environment whose link to the broker (`AMQP_URL`) or the database
/// (`DATABASE_URL`) goes through a proxy of the test's own, and its extra variables.
pub async fn env_behind_proxy(var: &str, extra_env: &[(&str, &str)]) -> (TestEnv, Proxy) {
    let mut env = TestEnv::new().await;
    let (url, port) = match var {
        "AMQP_URL" => (env.amqp_url.clone(), 5672),
        _ => (env.database_url.clone(), 5432),
    };
    let proxy = Proxy::start(target(&url, port).await).await;
    env.extra_env
        .push((var.into(), via(&url, proxy.addr, port)));
    for (k, v) in extra_env {
        env.extra_env.push(((*k).into(), (*v).into()));
    }
    (env, proxy)
}

/// xorshift64* seeded from the clock (or a variable, to replay a run): the fault
/// schedule of a failing run can be reproduced; the system's own timing cannot.
pub struct Rng(u64);

impl Rng {
    /// Seeds from `var` when set, else from the clock; prints the seed.
    pub fn seeded(var: &str, test: &str) -> (Self, u64) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                #[allow(clippy::cast_possible_truncation)]
                let low = nanos as u64;
                low ^ u64::from(std::process::id()).rotate_left(32)
            });
        println!("{test}: fault seed {seed} (replay the fault schedule with {var}={seed})");
        (Self::new(seed), seed)
    }

    fn new(seed: u64) -> Self {
        // splitmix64 of the seed: never zero, well spread even for small seeds.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration between `lo` and `hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }

    /// An independent generator (for a concurrent task).
    pub fn fork(&mut self) -> Self {
        Self::new(self.next())
    }
}
