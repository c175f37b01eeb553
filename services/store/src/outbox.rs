//! The outbox: outbound messages written in the transaction that decided them, each with
//! an `outbox_pending` entry until the broker confirms it.

use std::{collections::HashMap, sync::LazyLock};

use collections_core::outbound::OutboundMessage;
use sqlx::{postgres::PgRow, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::{Store, StoreError};

/// How long a writer owns the outbox rows it just wrote (and a relay the rows it claimed)
/// before a relay may publish them: the default of `OUTBOX_LEASE_SECS`. Longer than the
/// broker's confirm timeout (30 s) plus a margin for the mark, so a publisher that waits
/// on a slow broker keeps its rows.
pub const OUTBOX_LEASE_SECS: u64 = 40;

/// A committed outbound message waiting to be published.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Outbox sequence.
    pub id: i64,
    /// CloudEvents id.
    pub event_id: Uuid,
    /// Exchange.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Serialised CloudEvent.
    pub body: Vec<u8>,
    /// The lease number the holder got the row with (the fencing token): 0 for the writer
    /// that committed it, one more at each relay's claim. Only the latest holder's mark
    /// counts.
    pub lease: i64,
}

impl Store {
    /// Marks outbox rows published (confirmed by the broker) by deleting their
    /// `outbox_pending` entries, each only if its lease is still the caller's: a row a
    /// relay took over meanwhile (the caller's lease ran out) is the relay's to mark.
    /// Returns how many rows the caller had lost so (their messages went out twice, with
    /// the same ids). The outbox rows themselves are never updated.
    ///
    /// # Errors
    /// A database error; the rows stay unpublished and a relay publishes them again later.
    pub async fn mark_published(&self, rows: &[OutboxRow]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let leases: Vec<i64> = rows.iter().map(|r| r.lease).collect();
        // Asynchronous commit (see the function): a lost mark only republishes with the
        // same event ids.
        // collections_mark_published: live definition in migrations/0007_fencing_tokens.sql.
        let marked = sqlx::query_scalar!(
            r#"SELECT collections_mark_published($1, $2) AS "marked!""#,
            &ids,
            &leases
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((rows.len() as u64).saturating_sub(u64::try_from(marked).unwrap_or(0)))
    }

    /// Claims up to `limit` unpublished outbox rows whose lease has run out (their writer
    /// crashed or lost the broker), leasing them to the caller (the next lease number),
    /// oldest first. Runs every
    /// second in every process: it reads only `outbox_pending`, whose rows are the
    /// unpublished ones, and fetches the bodies by primary key.
    ///
    /// # Errors
    /// A database error.
    pub async fn claim_stale_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        // Oldest first along the primary key (migration 0005 explains the scan); the
        // bodies are fetched by id, so the outbox's history is never scanned.
        let mut out: Vec<OutboxRow> = sqlx::query!(
            r#"WITH claimed AS (
                 UPDATE outbox_pending
                 SET lease_until = now() + make_interval(secs => $2), lease = lease + 1
                 WHERE id = ANY(ARRAY(
                     SELECT id FROM outbox_pending
                     WHERE lease_until < now()
                     ORDER BY id LIMIT $1
                     FOR UPDATE SKIP LOCKED))
                 RETURNING id, lease)
             SELECT o.id, o.event_id, o.exchange, o.routing_key, o.body::text AS "body!",
                    c.lease
             FROM outbox o JOIN claimed c ON c.id = o.id"#,
            limit,
            self.leases.outbox_secs,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| OutboxRow {
            id: r.id,
            event_id: r.event_id,
            exchange: r.exchange,
            routing_key: r.routing_key,
            body: r.body.into_bytes(),
            lease: r.lease,
        })
        .collect();
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    /// Number of outbox rows not yet published.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM outbox_pending"#)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// Records messages a process published itself, outside the outbox (the scheduler's
/// `task.due`): outbox rows without an `outbox_pending` entry, so no relay publishes them
/// again and the task-event feed serves them in commit order with the rest. A row with
/// the same event id already there stays as it is.
///
/// # Errors
/// A database error.
pub(crate) async fn record_published(
    tx: &mut Transaction<'_, Postgres>,
    messages: &[&OutboundMessage],
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = messages.iter().map(|m| m.event_id).collect();
    let accounts: Vec<&str> = messages.iter().map(|m| m.account_id.as_str()).collect();
    let exchanges: Vec<&str> = messages.iter().map(|m| m.exchange).collect();
    let keys: Vec<&str> = messages.iter().map(|m| m.routing_key.as_str()).collect();
    let bodies = messages
        .iter()
        .map(|m| body_text(m))
        .collect::<Result<Vec<&str>, _>>()?;
    sqlx::query!(
        "INSERT INTO outbox (event_id, account_id, exchange, routing_key, body)
         SELECT e, a, x, k, b::jsonb
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
              WITH ORDINALITY AS o(e, a, x, k, b, n)
         ORDER BY n
         ON CONFLICT (event_id) DO NOTHING",
        &ids,
        &accounts as &[&str],
        &exchanges as &[&str],
        &keys as &[&str],
        &bodies as &[&str],
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// [`insert_outbox`]'s statement.
static INSERT_OUTBOX_SQL: LazyLock<String> =
    LazyLock::new(|| format!("WITH {} SELECT id, event_id FROM sent", outbox_ctes(1)));

/// The CTEs that write outbox rows, each with its `outbox_pending` entry leased to the
/// writer: every statement that writes the outbox uses them, so no row is written without
/// the entry the relays and the publisher go by. `p` numbers the first of six parameters:
/// event ids, account ids, exchanges, routing keys, bodies (arrays) and the lease in
/// seconds, bound by [`bind_outbox`]. The rows written are `sent (id, event_id)`, in input
/// order.
pub(crate) fn outbox_ctes(p: usize) -> String {
    let [e, a, x, k, b, lease] = [p, p + 1, p + 2, p + 3, p + 4, p + 5];
    format!(
        "sent AS (
             INSERT INTO outbox (event_id, account_id, exchange, routing_key, body)
             SELECT e, a, x, k, b::jsonb
             FROM unnest(${e}::uuid[], ${a}::text[], ${x}::text[], ${k}::text[], ${b}::text[])
                  WITH ORDINALITY AS o(e, a, x, k, b, n)
             ORDER BY n
             ON CONFLICT (event_id) DO NOTHING
             RETURNING id, event_id),
         leased AS (
             INSERT INTO outbox_pending (id, lease_until)
             SELECT id, now() + make_interval(secs => ${lease}) FROM sent)"
    )
}

/// Binds the six parameters of [`outbox_ctes`], in its order, for `messages`: the
/// statement and its arguments come from one place.
///
/// # Errors
/// [`StoreError::State`] when a body is not UTF-8 ([`body_text`]).
pub(crate) fn bind_outbox<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    messages: &[&'q OutboundMessage],
    lease_secs: f64,
) -> Result<sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>, StoreError> {
    let strs = |f: fn(&'q OutboundMessage) -> &'q str| -> Vec<&'q str> {
        messages.iter().map(|m| f(m)).collect()
    };
    let bodies = messages
        .iter()
        .map(|m| body_text(m))
        .collect::<Result<Vec<&str>, _>>()?;
    Ok(
        q.bind(messages.iter().map(|m| m.event_id).collect::<Vec<Uuid>>())
            .bind(strs(|m| m.account_id.as_str()))
            .bind(strs(|m| m.exchange))
            .bind(strs(|m| m.routing_key.as_str()))
            .bind(bodies)
            .bind(lease_secs),
    )
}

/// Writes outbound messages with their `outbox_pending` entries, leased to the caller for
/// `lease_secs` (lease number 0); returns the rows in input order.
///
/// # Errors
/// A database error.
pub async fn insert_outbox<'m>(
    tx: &mut Transaction<'_, Postgres>,
    messages: impl Iterator<Item = &'m OutboundMessage>,
    lease_secs: f64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let messages: Vec<&OutboundMessage> = messages.collect();
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    // Built at runtime (the CTEs are shared with the batch statement): not checked at
    // build time.
    let rows = bind_outbox(
        sqlx::query(INSERT_OUTBOX_SQL.as_str()),
        &messages,
        lease_secs,
    )?
    .fetch_all(&mut **tx)
    .await?;
    let by_event = sent_ids(&rows)?;
    Ok(messages
        .iter()
        .filter_map(|m| {
            by_event.get(&m.event_id).map(|id| OutboxRow {
                id: *id,
                event_id: m.event_id,
                exchange: m.exchange.to_owned(),
                routing_key: m.routing_key.clone(),
                body: m.body.clone(),
                lease: 0,
            })
        })
        .collect())
}

/// The `sent (id, event_id)` rows of a statement built on [`outbox_ctes`], by event id.
///
/// # Errors
/// [`StoreError::State`] when a row lacks a column or holds another type (`try_get`, not
/// `get`: a panic would take the whole pipeline down, and be retried for ever).
pub(crate) fn sent_ids(rows: &[PgRow]) -> Result<HashMap<Uuid, i64>, StoreError> {
    let bad = |e: sqlx::Error| StoreError::state(format!("outbox row: {e}"));
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid, _>("event_id").map_err(bad)?,
                r.try_get::<i64, _>("id").map_err(bad)?,
            ))
        })
        .collect()
}

/// A serialised message as text for a `jsonb` parameter.
///
/// # Errors
/// [`StoreError::State`] when the body is not UTF-8 (serde_json writes only UTF-8, so a
/// body that is not was built wrongly): never a `null` in its place, which would publish
/// an empty message.
fn body_text(m: &OutboundMessage) -> Result<&str, StoreError> {
    std::str::from_utf8(&m.body).map_err(|e| {
        StoreError::state(format!(
            "outbound message {}: body is not UTF-8: {e}",
            m.event_id
        ))
    })
}
