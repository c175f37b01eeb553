//! Fault injection: a TCP proxy of our own between the binaries and RabbitMQ/Postgres cuts
//! and restores connections (the shared servers are never restarted); processes are killed
//! with SIGKILL; the broker closes connections itself. Invariants are then checked from the
//! database and the task exchange (`crate::invariants`).
//!
//! Fault moments come from a seeded generator; each test prints its seed, and
//! `FAULT_SEED=<seed>` (`SOAK_SEED` for the soak) replays the same fault schedule.
//!
//! This file holds the fault tests' entry points, so that their names (`faults::...`, which
//! test filters select) stay put; the scenarios are in `crate::faults_workers`,
//! `crate::faults_scheduler` and `crate::soak`, the proxy in `crate::proxy`, and what they
//! share in `crate::fault_support`.

use crate::{faults_scheduler, faults_workers, soak};

// ---------------------------------------------------------------------------------------
// Workers.

#[tokio::test]
async fn broker_connection_cut_under_load_loses_and_duplicates_nothing() {
    faults_workers::broker_connection_cut_under_load_loses_and_duplicates_nothing().await;
}

#[tokio::test]
async fn database_outage_is_retried_never_dead_lettered() {
    faults_workers::database_outage_is_retried_never_dead_lettered().await;
}

#[tokio::test]
async fn a_long_database_outage_gives_the_deliveries_back_until_it_ends() {
    faults_workers::a_long_database_outage_gives_the_deliveries_back_until_it_ends().await;
}

#[tokio::test]
async fn database_stall_is_timed_out_and_retried_never_dead_lettered() {
    faults_workers::database_stall_is_timed_out_and_retried_never_dead_lettered().await;
}

#[tokio::test]
async fn kill_9_of_a_worker_under_load_loses_and_duplicates_nothing() {
    faults_workers::kill_9_of_a_worker_under_load_loses_and_duplicates_nothing().await;
}

#[tokio::test]
async fn broker_stall_under_load_loses_and_duplicates_nothing() {
    faults_workers::broker_stall_under_load_loses_and_duplicates_nothing().await;
}

#[tokio::test]
async fn health_endpoints_report_readiness_and_metrics_count_events() {
    faults_workers::health_endpoints_report_readiness_and_metrics_count_events().await;
}

#[tokio::test]
async fn a_deleted_queue_is_redeclared_and_consuming_resumes() {
    faults_workers::a_deleted_queue_is_redeclared_and_consuming_resumes().await;
}

#[tokio::test]
async fn postgres_tls_is_used_when_the_url_asks_for_it() {
    faults_workers::postgres_tls_is_used_when_the_url_asks_for_it().await;
}

#[tokio::test]
async fn an_event_the_database_refuses_is_isolated_and_dead_lettered_not_retried_forever() {
    faults_workers::an_event_the_database_refuses_is_isolated_and_dead_lettered_not_retried_forever().await;
}

#[tokio::test]
async fn binaries_refuse_to_start_without_credentials_or_with_a_bad_policy() {
    faults_workers::binaries_refuse_to_start_without_credentials_or_with_a_bad_policy().await;
}

#[tokio::test]
async fn broker_closing_the_workers_connection_under_load_loses_and_duplicates_nothing() {
    faults_workers::broker_closing_the_workers_connection_under_load_loses_and_duplicates_nothing()
        .await;
}

// ---------------------------------------------------------------------------------------
// The scheduler.

/// kill -9 of the scheduler at random moments under load, restarted each time: claims
/// left by a dead scheduler are rescued and fired with the same ids; nothing is lost,
/// nothing fired twice under two ids, nothing fired at night.
#[tokio::test]
async fn kill_9_of_the_scheduler_at_random_moments_loses_and_duplicates_nothing() {
    faults_scheduler::scheduler_under_faults(
        "kill_9_of_the_scheduler",
        faults_scheduler::SchedulerFault::Kill9,
        3,
    )
    .await;
}

/// The scheduler's broker link cut twice under load (publishes of a claimed batch fail;
/// the session is rebuilt; the claims are rescued and fired again with the same ids).
#[tokio::test]
async fn scheduler_broker_cut_under_load_loses_and_duplicates_nothing() {
    faults_scheduler::scheduler_under_faults(
        "scheduler_broker_cut",
        faults_scheduler::SchedulerFault::BrokerCut,
        2,
    )
    .await;
}

/// The scheduler's database link cut twice under load (claims and completions fail and
/// are retried; a batch already published is completed once the database is back).
#[tokio::test]
async fn scheduler_database_cut_under_load_loses_and_duplicates_nothing() {
    faults_scheduler::scheduler_under_faults(
        "scheduler_database_cut",
        faults_scheduler::SchedulerFault::DatabaseCut,
        2,
    )
    .await;
}

/// A broker holding one scheduler's confirms longer than the old claim timeout while a
/// second scheduler runs: the claim holds (it outlasts the confirm wait), completions are
/// fenced by the claim's token, and each call fires exactly once.
#[tokio::test]
async fn a_broker_stalling_confirms_past_the_claim_timeout_fires_each_task_once() {
    faults_scheduler::a_broker_stalling_confirms_past_the_claim_timeout_fires_each_task_once()
        .await;
}

#[tokio::test]
async fn a_task_cancelled_as_it_comes_due_is_never_also_fired() {
    faults_scheduler::a_task_cancelled_as_it_comes_due_is_never_also_fired().await;
}

// ---------------------------------------------------------------------------------------
// The soak.

#[tokio::test]
#[ignore = "soak: run by hand, minutes long"]
async fn soak_with_random_faults() {
    soak::soak_with_random_faults().await;
}
