//! Schema migrations: `schema/NNNN_name.sql`, embedded in the binary, applied in order
//! by `hush migrate` and at `serve` start, and recorded with a SHA-256 checksum in
//! `schema_migrations`.
//!
//! # Concurrent instances
//!
//! ClickHouse has no transactions and no compare-and-set, so a lock row would need
//! leases, expiry and fencing to survive a crashed holder. Instead every migration
//! statement must be idempotent (`CREATE ... IF NOT EXISTS`, `ALTER ... ADD COLUMN IF
//! NOT EXISTS`, `DROP ... IF EXISTS`, `ALTER ... MODIFY SETTING` to a fixed value, ...), and two instances that race simply both
//! apply it: the second execution of each statement is a no-op, and each instance runs
//! the files in order itself, so neither sees a later migration before an earlier one.
//! `schema_migrations` is a `ReplacingMergeTree` keyed by version, so the duplicate
//! records collapse, and readers take the latest record per version anyway. The unit
//! and integration tests apply every migration twice to keep this rule honest. A
//! migration that moves data (INSERT ... SELECT, mutations) must guard itself, e.g. by
//! inserting into a table created in the same file only when it is empty.
//!
//! # Statements
//!
//! A file may hold several statements. A statement ends with a `;` that is the last
//! character of a line (comment lines starting with `--` excepted); `;` elsewhere,
//! e.g. inside a string literal, does not split. Statements are sent verbatim (no
//! client-side `?` binding), so comments and literals are free-form.
//!
//! # Adding a migration
//!
//! Add `schema/NNNN_name.sql` with the next number and one line to [`MIGRATIONS`].
//! A unit test fails when the list and the directory disagree. Never edit a file that
//! was released: the checksum check refuses to start against a database where it ran.

use std::fmt::Write as _;
use std::time::Duration;

use clickhouse::Client;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ClickHouseConfig;
use crate::db;

/// One embedded migration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The `NNNN` prefix of the file name.
    pub version: u32,
    /// The file name without `.sql`, e.g. `0001_events`.
    pub name: &'static str,
    /// The file's content.
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../schema/", $name, ".sql")),
        }
    };
}

/// Every migration, in the order they are applied.
static MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_events"),
    migration!(2, "0002_salts"),
    migration!(3, "0003_purge_log"),
    migration!(4, "0004_events_dedup_window"),
    migration!(5, "0005_dropped"),
    migration!(6, "0006_sessions"),
    migration!(7, "0007_hourly"),
];

/// The bookkeeping table. Not a numbered migration itself: it must exist before the
/// first one can be recorded.
const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version";

/// The embedded migrations in application order.
pub fn migrations() -> &'static [Migration] {
    MIGRATIONS
}

impl Migration {
    /// The file name under `schema/`.
    pub fn file_name(&self) -> String {
        format!("{}.sql", self.name)
    }

    /// Lower-case hex SHA-256 of the file content.
    pub fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        let mut hex = String::with_capacity(64);
        for byte in digest {
            // Writing into a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }

    /// The statements of this file, in order, without their terminating `;`.
    pub fn statements(&self) -> Vec<&'static str> {
        split_statements(self.sql)
    }
}

/// Splits a migration file into statements: see the module documentation.
fn split_statements(sql: &str) -> Vec<&str> {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in sql.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let trimmed = line.trim_end();
        if trimmed.trim_start().starts_with("--") || !trimmed.ends_with(';') {
            continue;
        }
        // The `;` is the last non-blank byte of this line.
        let end = line_start + trimmed.len() - 1;
        push_statement(&mut statements, &sql[start..end]);
        start = offset;
    }
    push_statement(&mut statements, &sql[start..]);
    statements
}

fn push_statement<'a>(statements: &mut Vec<&'a str>, text: &'a str) {
    let has_code = text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with("--")
    });
    if has_code {
        statements.push(text.trim());
    }
}

/// Why the schema could not be brought up to date, or is not.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("ClickHouse request failed while {context}: {source}")]
    ClickHouse {
        context: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("migration {file}, statement {statement}, failed: {source}")]
    Statement {
        file: String,
        /// 1-based position of the statement in the file.
        statement: usize,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error(
        "migration {file} was changed after it was applied ({detail}); restore the \
         applied version and put the change in a new migration"
    )]
    Modified { file: String, detail: String },
    #[error("migrations not applied yet: {}", .0.join(", "))]
    Pending(Vec<String>),
}

fn ch(context: &'static str) -> impl FnOnce(clickhouse::error::Error) -> MigrateError {
    move |source| MigrateError::ClickHouse { context, source }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct AppliedRow {
    version: u32,
    name: String,
    checksum: String,
}

/// Creates the database if needed, then applies every pending migration in order.
/// Returns the names of the migrations this call applied (a concurrent instance may
/// report the same ones). Fails without applying anything when an applied migration
/// was edited.
pub async fn run(cfg: &ClickHouseConfig) -> Result<Vec<String>, MigrateError> {
    let timeout = db::request_timeout(cfg);
    // The name is validated as [A-Za-z0-9_] at config load; quoting keeps reserved
    // words and leading digits working.
    let create_db = format!("CREATE DATABASE IF NOT EXISTS `{}`", cfg.database);
    db::timed(
        timeout,
        db::server_client(cfg).query_raw(&create_db).execute(),
    )
    .await
    .map_err(ch("creating the database"))?;

    let client = db::client(cfg);
    db::timed(
        timeout,
        client.query_raw(CREATE_SCHEMA_MIGRATIONS).execute(),
    )
    .await
    .map_err(ch("creating schema_migrations"))?;

    let applied = read_applied(&client, timeout).await?;
    let pending = verify(&applied)?;

    let mut done = Vec::new();
    for migration in pending {
        apply(&client, migration, timeout).await?;
        tracing::info!(migration = migration.name, "applied migration");
        done.push(migration.name.to_owned());
    }
    Ok(done)
}

/// For readiness checks: ClickHouse answers, every embedded migration was applied, and
/// none was edited since. Callers bound the time it may take (one or two small
/// queries).
pub async fn check_current(client: &Client) -> Result<(), MigrateError> {
    let exists: u8 = client
        .query("EXISTS TABLE schema_migrations")
        .fetch_one()
        .await
        .map_err(ch("checking for schema_migrations"))?;
    if exists == 0 {
        return Err(MigrateError::Pending(
            MIGRATIONS.iter().map(|m| m.name.to_owned()).collect(),
        ));
    }
    let applied = fetch_applied(client)
        .await
        .map_err(ch("reading schema_migrations"))?;
    let pending = verify(&applied)?;
    if pending.is_empty() {
        Ok(())
    } else {
        Err(MigrateError::Pending(
            pending.iter().map(|m| m.name.to_owned()).collect(),
        ))
    }
}

async fn read_applied(client: &Client, timeout: Duration) -> Result<Vec<AppliedRow>, MigrateError> {
    db::timed(timeout, fetch_applied(client))
        .await
        .map_err(ch("reading schema_migrations"))
}

async fn fetch_applied(client: &Client) -> clickhouse::error::Result<Vec<AppliedRow>> {
    // The latest record per version wins: duplicates from racing instances are equal,
    // and a record written later (e.g. by an operator) supersedes an earlier one.
    client
        .query(
            "SELECT version, argMax(name, applied_at) AS name, \
             argMax(checksum, applied_at) AS checksum \
             FROM schema_migrations GROUP BY version ORDER BY version",
        )
        .fetch_all()
        .await
}

/// Checks the recorded migrations against the embedded ones and returns those not
/// applied yet, in order.
fn verify(applied: &[AppliedRow]) -> Result<Vec<&'static Migration>, MigrateError> {
    let mut pending = Vec::new();
    for migration in MIGRATIONS {
        let Some(row) = applied.iter().find(|r| r.version == migration.version) else {
            pending.push(migration);
            continue;
        };
        if row.name != migration.name {
            return Err(MigrateError::Modified {
                file: migration.file_name(),
                detail: format!(
                    "version {} was applied as {}.sql",
                    migration.version, row.name
                ),
            });
        }
        let checksum = migration.checksum();
        if row.checksum != checksum {
            return Err(MigrateError::Modified {
                file: migration.file_name(),
                detail: format!("recorded checksum {}, embedded {}", row.checksum, checksum),
            });
        }
    }
    // Versions recorded by a newer binary are tolerated: during a rolling upgrade the
    // old instances keep serving against the (additively) migrated schema.
    for row in applied {
        if !MIGRATIONS.iter().any(|m| m.version == row.version) {
            tracing::warn!(
                version = row.version,
                name = %row.name,
                "database has a migration this binary does not know (newer release?)"
            );
        }
    }
    Ok(pending)
}

async fn apply(
    client: &Client,
    migration: &Migration,
    timeout: Duration,
) -> Result<(), MigrateError> {
    for (i, statement) in migration.statements().into_iter().enumerate() {
        db::timed(timeout, client.query_raw(statement).execute())
            .await
            .map_err(|source| MigrateError::Statement {
                file: migration.file_name(),
                statement: i + 1,
                source,
            })?;
    }
    db::timed(
        timeout,
        client
            .query("INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(migration.checksum())
            .execute(),
    )
    .await
    .map_err(ch("recording a migration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_matches_the_schema_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schema");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(Migration::file_name).collect();
        assert_eq!(
            listed, files,
            "every schema/*.sql file must be listed in MIGRATIONS, in order"
        );
    }

    #[test]
    fn versions_are_the_file_prefix_and_contiguous() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            let (prefix, rest) = m.name.split_once('_').expect("NNNN_name");
            assert_eq!(prefix.len(), 4, "{}", m.name);
            assert_eq!(prefix.parse::<u32>().unwrap(), m.version, "{}", m.name);
            assert_eq!(
                m.version as usize,
                i + 1,
                "{}: versions must be 1, 2, 3, ...",
                m.name
            );
            assert!(
                !rest.is_empty()
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn every_statement_is_idempotent_by_construction() {
        // The integration test re-runs the statements; this catches the obvious case
        // early and names the file.
        for m in MIGRATIONS {
            let statements = m.statements();
            assert!(!statements.is_empty(), "{} has no statement", m.name);
            for s in statements {
                let code: String = s
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_ascii_uppercase();
                // Setting a table setting to a fixed value is idempotent as it is.
                assert!(
                    code.contains("IF NOT EXISTS")
                        || code.contains("IF EXISTS")
                        || code.contains(" MODIFY SETTING "),
                    "{}: statement is not idempotent: {s}",
                    m.name
                );
            }
        }
    }

    #[test]
    fn checksum_is_sha256_hex_of_the_content() {
        let m = Migration {
            version: 1,
            name: "0001_x",
            sql: "abc",
        };
        assert_eq!(
            m.checksum(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let edited = Migration { sql: "abc ", ..m };
        assert_ne!(edited.checksum(), m.checksum());
    }

    #[test]
    fn statements_split_at_semicolons_ending_a_line() {
        let sql = "-- header; with a semicolon;\nCREATE TABLE a (x String DEFAULT 'p;q') ENGINE = Memory;\n\n\
                   -- second\nCREATE TABLE b\n(\n  y UInt8\n)\nENGINE = Memory ;  \nSELECT 1";
        let m = Migration {
            version: 1,
            name: "0001_x",
            sql: Box::leak(sql.to_owned().into_boxed_str()),
        };
        assert_eq!(
            m.statements(),
            vec![
                "-- header; with a semicolon;\nCREATE TABLE a (x String DEFAULT 'p;q') ENGINE = Memory",
                "-- second\nCREATE TABLE b\n(\n  y UInt8\n)\nENGINE = Memory",
                "SELECT 1",
            ]
        );
    }

    #[test]
    fn comment_only_and_empty_pieces_are_not_statements() {
        assert!(split_statements("").is_empty());
        assert!(split_statements("\n  \n-- just a note;\n").is_empty());
        assert_eq!(
            split_statements("SELECT 1;\n;\n-- tail\n"),
            vec!["SELECT 1"]
        );
        // Windows line endings.
        assert_eq!(
            split_statements("SELECT 1;\r\nSELECT 2;\r\n"),
            vec!["SELECT 1", "SELECT 2"]
        );
    }

    #[test]
    fn verify_reports_pending_in_order_and_refuses_edits() {
        let pending = verify(&[]).unwrap();
        assert_eq!(pending.len(), MIGRATIONS.len());
        assert!(pending.windows(2).all(|w| w[0].version < w[1].version));

        let first = &MIGRATIONS[0];
        let ok = AppliedRow {
            version: first.version,
            name: first.name.to_owned(),
            checksum: first.checksum(),
        };
        let pending = verify(std::slice::from_ref(&ok)).unwrap();
        assert!(pending.iter().all(|m| m.version != first.version));

        let tampered = AppliedRow {
            checksum: "0".repeat(64),
            ..ok
        };
        let err = verify(&[tampered]).unwrap_err();
        assert!(
            matches!(&err, MigrateError::Modified { file, .. } if *file == first.file_name()),
            "{err}"
        );
        assert!(err.to_string().contains(&first.file_name()), "{err}");

        let renamed = AppliedRow {
            version: first.version,
            name: "0001_other".into(),
            checksum: first.checksum(),
        };
        let err = verify(&[renamed]).unwrap_err();
        assert!(err.to_string().contains("0001_other.sql"), "{err}");
    }

    #[test]
    fn unknown_newer_versions_are_tolerated() {
        let all: Vec<AppliedRow> = MIGRATIONS
            .iter()
            .map(|m| AppliedRow {
                version: m.version,
                name: m.name.to_owned(),
                checksum: m.checksum(),
            })
            .chain(std::iter::once(AppliedRow {
                version: 9_999,
                name: "9999_future".into(),
                checksum: "f".repeat(64),
            }))
            .collect();
        assert!(verify(&all).unwrap().is_empty());
    }
}
