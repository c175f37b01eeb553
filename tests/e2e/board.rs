//! The task board in a real headless Chromium (WebDriver through chromedriver): the page
//! loads, a published `payment.failed` shows up as a row without a reload, a row opens
//! the account's timeline. Saves a screenshot to docs/board.png (README.md shows it).
//!
//! Chromium and chromedriver come from Debian (`chromium`, `chromium-driver`); the test
//! installs them with apt-get when they are missing (as root, as the test set-up of
//! deploy/local/test.sh runs).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

use crate::{
    api::{free_port, payment_failed, start_api},
    harness::{zone_where_it_is, TestEnv},
};

const WAIT: Duration = Duration::from_secs(20);

/// chromedriver's path, installing Debian's chromium and chromium-driver when missing.
fn chromedriver() -> String {
    let found = |name: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if let (Some(driver), Some(_)) = (found("chromedriver"), found("chromium")) {
        return driver;
    }
    let status = std::process::Command::new("sh")
        .args([
            "-c",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
             || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null)",
        ])
        .status()
        .expect("apt-get runs");
    assert!(
        status.success(),
        "installing chromium and chromium-driver (as root)"
    );
    found("chromedriver").expect("chromedriver installed")
}

#[tokio::test]
async fn the_board_shows_a_new_delinquency_live_and_opens_its_timeline() {
    let driver = chromedriver();
    let mut env = TestEnv::new().await;
    env.start_workers().await;
    env.spawn("task-scheduler").await;
    // Some tasks already on the board (for the screenshot): calls waiting for the morning
    // in two zones, a promise with its reminder and check.
    let (night, _) = zone_where_it_is(5);
    let (evening, _) = zone_where_it_is(22);
    for (i, zone) in [&night, &evening, &night, &evening, &night]
        .into_iter()
        .enumerate()
    {
        let a = format!("acc-board-{i}");
        env.publish(
            "payment.failed",
            &a,
            payment_failed(
                &a,
                zone,
                80_000 + 35_000 * i64::try_from(i).expect("i"),
                3 + 17 * i64::try_from(i).expect("i"),
            ),
        )
        .await;
    }
    let promised = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(26);
    env.publish(
        "promise.made",
        "acc-board-1",
        json!({
            "account_id": "acc-board-1",
            "promise_id": "ptp-board-1",
            "amount": crate::harness::cny(50_000),
            "promised_at": promised,
            "captured_by": "agent-0107",
            "channel": "phone_mobile",
        }),
    )
    .await;
    env.publish_raw("payment.failed", b"{not json").await;
    env.wait_count("SELECT count(*) FROM dead_letters", 1, WAIT)
        .await;
    env.wait_count(
        "SELECT count(*) FROM tasks WHERE account_id LIKE 'acc-board-%'",
        7,
        WAIT,
    )
    .await;

    let api = start_api(&env, 0, &[("AMQP_URL", &env.amqp_url.clone())], "api").await;
    let port = free_port();
    let mut chromedriver = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let caps = json!({
        "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,900"],
        }
    });
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(caps.as_object().expect("object").clone());
    let deadline = Instant::now() + WAIT;
    let browser = loop {
        match builder.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "chromedriver answers: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    browser
        .goto(&format!("{}/", api.base))
        .await
        .expect("open the board");
    let live = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#live.on"))
        .await
        .expect("the board follows the stream");
    assert_eq!(live.text().await.expect("text"), "live");
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#tasks tbody tr[data-account='acc-board-0']"))
        .await
        .expect("existing tasks are listed");

    // A new delinquency, at night for the customer: its call is scheduled for the morning.
    let published = Instant::now();
    env.publish(
        "payment.failed",
        "acc-board-new",
        payment_failed("acc-board-new", &night, 260_000, 45),
    )
    .await;
    let row = browser
        .wait()
        .at_most(Duration::from_secs(2))
        .every(Duration::from_millis(25))
        .for_element(Locator::Css(
            "#tasks tbody tr[data-account='acc-board-new']",
        ))
        .await
        .expect("the new call appears without a reload within 2 s");
    let appeared = published.elapsed();
    assert!(
        appeared <= Duration::from_secs(2),
        "appeared after {appeared:?}"
    );
    println!("payment.failed published -> row on the board: {appeared:?}");
    let text = row.text().await.expect("row text");
    assert!(
        text.contains("collection call") && text.contains("M2"),
        "{text}"
    );
    // The call waits for 08:00 in the customer's zone, and the row says so (the board
    // learns the zone of an account it had not seen from /v1/accounts).
    let deadline = Instant::now() + WAIT;
    loop {
        let cell = browser
            .find(Locator::Css(
                "#tasks tbody tr[data-account='acc-board-new'] td.due",
            ))
            .await
            .expect("due cell");
        let due = cell.text().await.expect("text");
        if due.lines().next().is_some_and(|l| l.contains("08:00")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "due in the customer's zone: {due}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Its timeline.
    row.click().await.expect("click the row");
    let journal = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#timeline:not([hidden]) #tl-journal li"))
        .await
        .expect("the timeline opens");
    let first = journal.text().await.expect("text");
    assert!(
        first.contains("event applied") && first.contains("policy"),
        "{first}"
    );
    let title = browser
        .find(Locator::Css("#tl-title"))
        .await
        .expect("title");
    assert_eq!(title.text().await.expect("text"), "Account acc-board-new");
    let planned = browser
        .find_all(Locator::Css("#tl-journal li"))
        .await
        .expect("lines");
    assert!(planned.len() >= 2, "event and decision lines");

    // Counts in the tabs follow.
    let scheduled = browser
        .find(Locator::Css("#count-scheduled"))
        .await
        .expect("count");
    let deadline = Instant::now() + WAIT;
    while scheduled.text().await.expect("text") == "0" {
        assert!(Instant::now() < deadline, "the scheduled tab counts tasks");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let png = browser.screenshot().await.expect("screenshot");
    let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs");
    std::fs::create_dir_all(docs).expect("docs/");
    std::fs::write(format!("{docs}/board.png"), png).expect("write docs/board.png");

    // The dead-letters tab.
    browser
        .find(Locator::Css("button[data-tab='dead']"))
        .await
        .expect("tab")
        .click()
        .await
        .expect("click");
    let dead = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#dead:not([hidden]) #dead-queues tbody tr"))
        .await
        .expect("dead letters listed");
    assert!(dead.text().await.expect("text").contains(".dlq"));
    let reason = browser
        .find(Locator::Css("#dead-reasons tbody tr"))
        .await
        .expect("a reason row");
    let reason = reason.text().await.expect("text");
    let recorded: String = sqlx::query_scalar("SELECT reason FROM dead_letters")
        .fetch_one(&env.db)
        .await
        .expect("the worker recorded the dead letter");
    assert!(
        reason.contains("collections.payment-failed") && reason.contains(&recorded),
        "{reason}"
    );
    browser.close().await.expect("close the browser");
    let _ = chromedriver.kill().await;
}
