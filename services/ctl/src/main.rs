//! `collectionsctl`: the operator's tool.
//!
//! Demo scenario, the simulator (`simulate`, the core's own functions on a virtual clock),
//! `policy check`, `watch` of task events, dead letters (list, show, replay), and the
//! database's operations: `migrate` (the release step) and `prune` (retention). It keeps
//! no rules of its own: everything it decides comes from `collections-core`.

mod database;
mod dlq;
mod simulate;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use collections_bus::{
    lapin::{
        options::{
            BasicConsumeOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
        },
        types::FieldTable,
        BasicProperties, Channel, Connection,
    },
    EventsExchange, EVENTS_EXCHANGE, TASKS_EXCHANGE,
};
use dlq::DlqCmd;
use futures::StreamExt;
use jiff::{tz::TimeZone, SignedDuration, Timestamp};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "collectionsctl", about = "Operate the collections service")]
struct Cli {
    /// Broker URL with its credentials (needed by every command but `simulate` and
    /// `policy check`). Never defaulted: credentials come from the environment.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print task events as dashboards receive them.
    Watch,
    /// Publish a sample collections scenario and print the task events it causes.
    Demo {
        /// Keep watching after the scenario.
        #[arg(long)]
        follow: bool,
    },
    /// Dead-letter queues: list, show and replay.
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// Replay a scenario file through the rules on a virtual clock (no broker, no
    /// database) and print the timeline of tasks.
    Simulate {
        /// Scenario file (TOML, see deploy/scenarios/README.md).
        scenario: PathBuf,
        /// Policy file; give it twice to compare two policies side by side. Default: the
        /// scenario's own `policy`, else the built-in default.
        #[arg(long)]
        policy: Vec<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Keep the clock running this long after the last event (overrides the scenario's
        /// `horizon`), e.g. "72h".
        #[arg(long)]
        horizon: Option<String>,
    },
    /// Policy files: check them as the workers would at start-up.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Apply the pending migrations (the release step, before the new binaries roll out;
    /// deploy/README.md, "Migrations"). Needs DATABASE_URL of a role that may run DDL.
    Migrate {
        #[command(flatten)]
        db: database::DbArgs,
    },
    /// Delete history past its horizon: published outbox rows, inbox ids past the dedupe
    /// horizon, closed tasks, and journal entries when RETENTION_JOURNAL_DAYS is set. One
    /// pass, in small batches, safe beside the services and beside another prune.
    Prune {
        #[command(flatten)]
        db: database::DbArgs,
        #[command(flatten)]
        retention: collections_runtime::config::RetentionArgs,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate policy files; prints each one's version, or the key and problem.
    Check {
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Offline commands: no broker needed.
    match cli.cmd {
        Cmd::Simulate {
            scenario,
            policy,
            json,
            horizon,
        } => return simulate::run(&scenario, &policy, json, horizon.as_deref()),
        Cmd::Policy {
            cmd: PolicyCmd::Check { files },
        } => return simulate::check_policies(&files),
        Cmd::Migrate { db } => return database::migrate(db).await,
        Cmd::Prune { db, retention } => return database::prune(db, retention).await,
        _ => {}
    }
    let Some(amqp_url) = cli.amqp_url.as_deref() else {
        anyhow::bail!(
            "AMQP_URL is not set (for example amqp://user:password@127.0.0.1:5672/%2f); \
             deploy/local/run.sh prints the one it uses"
        );
    };
    let conn = collections_bus::connect(amqp_url, "collectionsctl")
        .await
        .context("connect to RabbitMQ (AMQP_URL)")?;
    if collections_bus::declare_topology_on(&conn).await?
        == EventsExchange::PredatesAlternateExchange
    {
        eprintln!(
            "note: exchange {EVENTS_EXCHANGE} has no alternate-exchange argument (it predates \
             it): unless a policy sets one, events with an unbound routing key are dropped \
             instead of kept in {}; see deploy/README.md",
            collections_bus::UNROUTED_QUEUE
        );
    }
    match cli.cmd {
        Cmd::Watch => {
            let mut rx = listen(&conn).await?;
            print_header();
            while let Some(v) = rx.recv().await {
                print_task(&v);
            }
        }
        Cmd::Demo { follow } => demo(&conn, follow).await?,
        Cmd::Dlq { cmd } => dlq::run(&conn, cmd).await?,
        Cmd::Simulate { .. } | Cmd::Policy { .. } | Cmd::Migrate { .. } | Cmd::Prune { .. } => {}
    }
    Ok(())
}

async fn listen(conn: &Connection) -> anyhow::Result<tokio::sync::mpsc::Receiver<Value>> {
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    ch.queue_bind(
        q.name().clone(),
        TASKS_EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "collectionsctl-watch".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        let _keep = ch;
        while let Some(Ok(d)) = consumer.next().await {
            if let Ok(v) = serde_json::from_slice::<Value>(&d.data) {
                if tx.send(v).await.is_err() {
                    break;
                }
            }
        }
    });
    Ok(rx)
}

fn print_header() {
    println!(
        "{:<10} {:<10} {:<18} {:<14} {:<22} {:>3} {:<8} reason",
        "account", "event", "kind", "channel", "due (customer local)", "pri", "tone"
    );
}

fn print_task(v: &Value) {
    let d = &v["data"];
    let state = v["type"]
        .as_str()
        .unwrap_or("?")
        .trim_start_matches("task.");
    let due = d["due_at"]
        .as_str()
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(|t| {
            let tz = TimeZone::get("Asia/Shanghai").unwrap_or(TimeZone::UTC);
            t.to_zoned(tz).strftime("%m-%d %H:%M %Z").to_string()
        })
        .unwrap_or_default();
    let mut reason = d["reason"].as_str().unwrap_or("").to_owned();
    if let Some(c) = d["cancel_reason"].as_str() {
        reason = format!("cancelled: {c}");
    }
    println!(
        "{:<10} {:<10} {:<18} {:<14} {:<22} {:>3} {:<8} {}",
        d["account_id"].as_str().unwrap_or("?"),
        state,
        d["kind"].as_str().unwrap_or("?"),
        d["channel"].as_str().unwrap_or("?"),
        due,
        d["priority"],
        d["tone"].as_str().unwrap_or("?"),
        reason
    );
}

async fn publish(ch: &Channel, ty: &str, account: &str, data: Value) -> anyhow::Result<()> {
    let body = json!({
        "specversion": "1.0", "id": Uuid::new_v4(), "source": "collectionsctl-demo",
        "type": ty, "time": Timestamp::now(), "subject": account,
        "datacontenttype": "application/json", "data": data,
    });
    publish_raw(ch, ty, body.to_string().as_bytes()).await
}

async fn publish_raw(ch: &Channel, rk: &str, body: &[u8]) -> anyhow::Result<()> {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/cloudevents+json".into());
    match dlq::republish(ch, rk, body, props).await? {
        dlq::Published::Stored => Ok(()),
        dlq::Published::Returned(_) => anyhow::bail!("no queue is bound to routing key {rk}"),
        dlq::Published::Nacked => anyhow::bail!("the broker refused the {rk} event"),
    }
}

async fn demo(conn: &Connection, follow: bool) -> anyhow::Result<()> {
    let mut rx = listen(conn).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let acc = format!("demo-{}", &Uuid::new_v4().simple().to_string()[..6]);
    let cny = |minor: i64| json!({"minor": minor, "currency": "CNY"});
    let now = Timestamp::now();
    let shanghai = TimeZone::get("Asia/Shanghai")?;
    let today = now.to_zoned(shanghai.clone()).date();
    // "Today at 15:00", or tomorrow if that is less than two hours away: the hour a
    // customer names, in their own zone.
    let mut promised = today
        .at(15, 0, 0, 0)
        .to_zoned(shanghai.clone())?
        .timestamp();
    if promised < now + SignedDuration::from_hours(2) {
        promised = today
            .tomorrow()?
            .at(15, 0, 0, 0)
            .to_zoned(shanghai.clone())?
            .timestamp();
    }
    let promised_later = promised + SignedDuration::from_hours(72);
    // The next 18:00 in the customer's zone: the minute they ask to be called back.
    let mut callback = today
        .at(18, 0, 0, 0)
        .to_zoned(shanghai.clone())?
        .timestamp();
    if callback <= now {
        callback = today
            .tomorrow()?
            .at(18, 0, 0, 0)
            .to_zoned(shanghai.clone())?
            .timestamp();
    }
    let steps: Vec<(&str, &str, Value)> = vec![
        (
            "The first instalment's debit fails (insufficient funds)",
            "payment.failed",
            json!({
            "account_id": acc, "customer": {"timezone": "Asia/Shanghai"},
            "installment": {"number": 1, "due_date": today.to_string(), "amount": cny(150_000)},
            "overdue_amount": cny(150_000), "failure_reason": "insufficient_funds", "attempted_at": now}),
        ),
        (
            "The collector gets a promise: the full amount at 15:00",
            "promise.made",
            json!({
            "account_id": acc, "promise_id": format!("{acc}-p1"), "amount": cny(150_000),
            "promised_at": promised, "captured_by": "agent-007", "channel": "phone_mobile"}),
        ),
        (
            "Billing reports the promise broken",
            "promise.broken",
            json!({
            "account_id": acc, "promise_id": format!("{acc}-p1"), "reason": "no_payment"}),
        ),
        (
            "The collector reaches the customer, who asks to be called back at 18:00",
            "contact.attempted",
            json!({
            "account_id": acc, "attempt_id": format!("{acc}-a1"), "channel": "phone_mobile",
            "direction": "outbound", "contact_point_id": format!("{acc}-mobile"),
            "party": "debtor", "result": "connected", "disposition": "callback_requested",
            "callback_at": callback, "started_at": Timestamp::now(), "agent_id": "agent-007"}),
        ),
        (
            "The customer reports hardship: collection is held, the DPD clock paused",
            "hold.placed",
            json!({
            "account_id": acc, "hold_id": format!("{acc}-h1"), "reason": "hardship",
            "scope": "all", "placed_at": Timestamp::now(), "pause_dpd": true,
            "placed_by": "desk-2"}),
        ),
        (
            "The hardship case is resolved: the hold is released, collection resumes",
            "hold.released",
            json!({
            "account_id": acc, "hold_id": format!("{acc}-h1"), "outcome": "resolved",
            "released_at": Timestamp::now(), "released_by": "desk-2"}),
        ),
        (
            "A second promise, three days out (a delay tactic?)",
            "promise.made",
            json!({
            "account_id": acc, "promise_id": format!("{acc}-p2"), "amount": cny(150_000),
            "promised_at": promised_later, "captured_by": "agent-007", "channel": "phone_mobile"}),
        ),
        (
            "A partial payment arrives",
            "payment.received",
            json!({
            "account_id": acc, "payment_id": format!("{acc}-pay1"), "amount": cny(50_000), "received_at": now}),
        ),
        (
            "The rest arrives: the account is cured",
            "payment.received",
            json!({
            "account_id": acc, "payment_id": format!("{acc}-pay2"), "amount": cny(100_000),
            "received_at": Timestamp::now(), "overdue_amount_after": cny(0)}),
        ),
    ];
    println!("Account {acc} (customer in Asia/Shanghai); times shown in the customer's zone.\n");
    for (i, (what, ty, data)) in steps.into_iter().enumerate() {
        println!("{}. {what}  [{ty}]", i + 1);
        publish(&ch, ty, &acc, data).await?;
        drain_for(&mut rx, Duration::from_millis(1500)).await;
        println!();
    }
    println!("A malformed message goes to the dead-letter queue with its reason:");
    publish_raw(&ch, "payment.failed", b"{not json").await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    dlq::run(
        conn,
        DlqCmd::Show {
            queue: "collections.payment-failed".into(),
            limit: 1,
        },
    )
    .await?;
    if follow {
        println!("\nWatching task events (Ctrl-C to stop)...");
        print_header();
        while let Some(v) = rx.recv().await {
            print_task(&v);
        }
    }
    Ok(())
}

async fn drain_for(rx: &mut tokio::sync::mpsc::Receiver<Value>, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    let mut first = true;
    while let Ok(Some(v)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if first {
            print_header();
            first = false;
        }
        print_task(&v);
    }
    if first {
        println!("   (no task events)");
    }
}
