//! Which schema the database holds, compared with the migrations this binary embeds.
//!
//! Migrations are a release step (`collectionsctl migrate`, a Kubernetes Job or the compose
//! one-shot): the services do not apply them at start, they check the schema and refuse to
//! run against one they cannot use. Nothing here counts migrations: the binary's own list
//! (`sqlx::migrate!`) is compared with the database's `_sqlx_migrations`, so migrations
//! added later need no change here.
//!
//! - Every embedded migration must be applied, successfully and with the same checksum;
//!   otherwise the schema is older than the binary (or another history), and the binary
//!   refuses to start until the migrations are applied.
//! - Migrations the binary does not know (a newer release applied them) are accepted while
//!   the binary is at least `schema_compat.oldest_compatible` (migration 0010): an
//!   expanding migration leaves the number alone, a contracting one raises it to its own
//!   version. See deploy/README.md, "Migrations".

use sqlx::migrate::{Migration, Migrator};

use crate::{Store, StoreError};

/// The migrations this binary was built with (`services/store/migrations`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// What the schema check found when the binary may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaCheck {
    /// Exactly the migrations this binary knows.
    Current {
        /// The latest migration.
        version: i64,
    },
    /// Newer migrations than this binary knows, all of them expanding for it.
    NewerCompatible {
        /// The database's latest migration.
        applied: i64,
        /// This binary's latest migration.
        known: i64,
    },
}

/// Why a binary must not run against the database's schema. The messages say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaMismatch {
    /// No migration has been applied: an empty database.
    #[error(
        "the database has no schema yet (no migration applied); apply the migrations first: \
         `collectionsctl migrate` (deploy/README.md, \"Migrations\")"
    )]
    Empty,
    /// Migrations of this binary are not applied: the schema is older than the binary.
    #[error(
        "the database schema is older than this binary: migration(s) {missing:?} not applied \
         (this binary knows up to {known}); apply them first: `collectionsctl migrate` \
         (deploy/README.md, \"Migrations\")"
    )]
    Older {
        /// The versions not applied.
        missing: Vec<i64>,
        /// This binary's latest migration.
        known: i64,
    },
    /// A migration failed partway and is recorded as unsuccessful.
    #[error(
        "migration {0} is recorded as failed in _sqlx_migrations; repair the schema by hand, \
         delete that row and run `collectionsctl migrate` again"
    )]
    Failed(i64),
    /// The database applied a migration of the same number but different text.
    #[error(
        "migration {0} in the database differs from this binary's copy (checksum): the binary \
         and the database come from different schema histories"
    )]
    Changed(i64),
    /// The schema is newer than this binary and has contracted past what it knows.
    #[error(
        "the database schema (migration {applied}) is newer than this binary knows ({known}) \
         and is incompatible with it: it needs binaries that know migration \
         {oldest_compatible} or later; deploy the newer release"
    )]
    Newer {
        /// The database's latest migration.
        applied: i64,
        /// This binary's latest migration.
        known: i64,
        /// `schema_compat.oldest_compatible`.
        oldest_compatible: i64,
    },
}

/// One row of `_sqlx_migrations`.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The migration's number.
    pub version: i64,
    /// False when it failed partway.
    pub success: bool,
    /// SHA-384 of its text.
    pub checksum: Vec<u8>,
}

/// Compares the migrations a binary embeds with those the database applied.
/// `oldest_compatible` is read only when the database has migrations the binary does not
/// know; `None` then means it could not be read (treated as incompatible).
///
/// # Errors
/// The mismatch that forbids running.
pub fn compare(
    embedded: &[Migration],
    applied: &[Applied],
    oldest_compatible: Option<i64>,
) -> Result<SchemaCheck, SchemaMismatch> {
    let embedded: Vec<&Migration> = embedded
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .collect();
    let known = embedded.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(failed) = applied.iter().find(|a| !a.success) {
        return Err(SchemaMismatch::Failed(failed.version));
    }
    let latest = applied.iter().map(|a| a.version).max();
    let Some(latest) = latest else {
        return Err(SchemaMismatch::Empty);
    };
    // Newer first: a binary that is too old must say so, not that it misses nothing.
    if latest > known {
        let oldest = oldest_compatible.unwrap_or(i64::MAX);
        if known < oldest {
            return Err(SchemaMismatch::Newer {
                applied: latest,
                known,
                oldest_compatible: oldest,
            });
        }
    }
    let mut missing = Vec::new();
    for m in &embedded {
        match applied.iter().find(|a| a.version == m.version) {
            None => missing.push(m.version),
            Some(a) if a.checksum != m.checksum.as_ref() => {
                return Err(SchemaMismatch::Changed(m.version));
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Err(SchemaMismatch::Older { missing, known });
    }
    Ok(if latest > known {
        SchemaCheck::NewerCompatible {
            applied: latest,
            known,
        }
    } else {
        SchemaCheck::Current { version: known }
    })
}

impl Store {
    /// Applies the pending migrations of this binary (the release step: `collectionsctl
    /// migrate`). sqlx takes an advisory lock, so two runs at once apply each migration
    /// once. A database with migrations this binary does not know is left alone with
    /// [`SchemaMismatch::Newer`] (or nothing to do, when it is compatible).
    ///
    /// # Errors
    /// When a migration fails, or the schema is newer than this binary.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let applied = self.applied_migrations().await?;
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        if applied.iter().any(|a| a.version > known) {
            // Nothing of ours to apply past a newer release; only say whether we may run.
            self.check_schema().await?;
            return Ok(());
        }
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Checks that this binary may run against the database's schema (see the module
    /// documentation).
    ///
    /// # Errors
    /// [`StoreError::Schema`] when it may not; a database error when the check could not
    /// be made.
    pub async fn check_schema(&self) -> Result<SchemaCheck, StoreError> {
        let applied = self.applied_migrations().await?;
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let oldest_compatible = if applied.iter().any(|a| a.version > known) {
            self.oldest_compatible().await?
        } else {
            None
        };
        Ok(compare(
            MIGRATOR.migrations.as_ref(),
            &applied,
            oldest_compatible,
        )?)
    }

    /// The rows of `_sqlx_migrations`, none when the table does not exist yet.
    async fn applied_migrations(&self) -> Result<Vec<Applied>, StoreError> {
        let exists = sqlx::query_scalar!(
            r#"SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS "exists!""#
        )
        .fetch_one(&self.pool)
        .await?;
        if !exists {
            return Ok(Vec::new());
        }
        let rows = sqlx::query!(
            "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version"
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Applied {
                version: r.version,
                success: r.success,
                checksum: r.checksum,
            })
            .collect())
    }

    /// `schema_compat.oldest_compatible`, `None` if the table is missing.
    async fn oldest_compatible(&self) -> Result<Option<i64>, StoreError> {
        let exists =
            sqlx::query_scalar!(r#"SELECT to_regclass('schema_compat') IS NOT NULL AS "exists!""#)
                .fetch_one(&self.pool)
                .await?;
        if !exists {
            return Ok(None);
        }
        Ok(
            sqlx::query_scalar!("SELECT max(oldest_compatible) FROM schema_compat")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sqlx::migrate::MigrationType;

    use super::*;

    fn migration(version: i64, sql: &'static str) -> Migration {
        Migration::new(
            version,
            Cow::Borrowed("m"),
            MigrationType::Simple,
            Cow::Borrowed(sql),
            false,
        )
    }

    fn applied(m: &Migration) -> Applied {
        Applied {
            version: m.version,
            success: true,
            checksum: m.checksum.to_vec(),
        }
    }

    #[test]
    fn every_embedded_migration_applied_is_current() {
        let ours = [migration(1, "a"), migration(2, "b")];
        let db: Vec<Applied> = ours.iter().map(applied).collect();
        assert_eq!(
            compare(&ours, &db, None),
            Ok(SchemaCheck::Current { version: 2 })
        );
    }

    #[test]
    fn a_missing_migration_is_an_older_schema() {
        let ours = [migration(1, "a"), migration(2, "b"), migration(3, "c")];
        let db = vec![applied(&ours[0])];
        assert_eq!(
            compare(&ours, &db, None),
            Err(SchemaMismatch::Older {
                missing: vec![2, 3],
                known: 3
            })
        );
        assert_eq!(compare(&ours, &[], None), Err(SchemaMismatch::Empty));
    }

    #[test]
    fn a_newer_schema_is_accepted_only_down_to_its_oldest_compatible_binary() {
        let ours = [migration(1, "a"), migration(2, "b")];
        let mut db: Vec<Applied> = ours.iter().map(applied).collect();
        db.push(applied(&migration(3, "c")));
        assert_eq!(
            compare(&ours, &db, Some(2)),
            Ok(SchemaCheck::NewerCompatible {
                applied: 3,
                known: 2
            })
        );
        assert_eq!(
            compare(&ours, &db, Some(3)),
            Err(SchemaMismatch::Newer {
                applied: 3,
                known: 2,
                oldest_compatible: 3
            })
        );
        assert!(matches!(
            compare(&ours, &db, None),
            Err(SchemaMismatch::Newer { .. })
        ));
    }

    #[test]
    fn a_failed_or_edited_migration_is_refused() {
        let ours = [migration(1, "a"), migration(2, "b")];
        let mut db: Vec<Applied> = ours.iter().map(applied).collect();
        db[1].checksum = migration(2, "b edited").checksum.to_vec();
        assert_eq!(compare(&ours, &db, None), Err(SchemaMismatch::Changed(2)));
        db[1] = applied(&ours[1]);
        db[1].success = false;
        assert_eq!(compare(&ours, &db, None), Err(SchemaMismatch::Failed(2)));
    }
}
