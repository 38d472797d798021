//! Editing, deleting or reordering any row makes `verify` fail at that row, on both databases.
//! The append-only triggers are dropped first, as an intruder with database access would.

use gatehouse::audit::{BreakReason, verify};
use gatehouse::store::{Backend, Store};
use sqlx::AssertSqlSafe;

use super::{fill, open_store, sqlite_url};
use crate::helpers::TempDir;
use crate::store::PgDatabase;

const N: usize = 10;

async fn exec(store: &Store, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn disable_guards(store: &Store) {
    match store.backend() {
        Backend::Sqlite => {
            exec(store, "DROP TRIGGER audit_records_no_update").await;
            exec(store, "DROP TRIGGER audit_records_no_delete").await;
        }
        Backend::Postgres => exec(store, "ALTER TABLE audit_records DISABLE TRIGGER USER").await,
    }
}

/// What an intruder does, and where `verify` must say the chain breaks.
struct Case {
    name: &'static str,
    sql: &'static [&'static str],
    seq: u64,
    reason: fn(&BreakReason) -> bool,
}

const CASES: &[Case] = &[
    Case {
        name: "edit a field",
        sql: &["UPDATE audit_records SET outcome_status = 'forged' WHERE seq = 5"],
        seq: 5,
        reason: |r| matches!(r, BreakReason::HashMismatch { .. }),
    },
    Case {
        name: "edit the time",
        sql: &["UPDATE audit_records SET time = time + 1 WHERE seq = 2"],
        seq: 2,
        reason: |r| matches!(r, BreakReason::HashMismatch { .. }),
    },
    Case {
        name: "edit the first record",
        sql: &["UPDATE audit_records SET account_id = 'someone-else' WHERE seq = 1"],
        seq: 1,
        reason: |r| matches!(r, BreakReason::HashMismatch { .. }),
    },
    Case {
        name: "delete a row",
        sql: &["DELETE FROM audit_records WHERE seq = 5"],
        seq: 5,
        reason: |r| *r == BreakReason::Missing,
    },
    Case {
        name: "delete the last row",
        sql: &["DELETE FROM audit_records WHERE seq = 10"],
        seq: 10,
        reason: |r| *r == BreakReason::Missing,
    },
    Case {
        name: "delete the last row and rewind the head",
        sql: &[
            "DELETE FROM audit_records WHERE seq = 10",
            "UPDATE audit_head SET seq = 9, hash = 'forged' WHERE id = 1",
        ],
        seq: 9,
        reason: |r| matches!(r, BreakReason::HeadMismatch { .. }),
    },
    Case {
        name: "move the head back over the last records",
        sql: &[
            "UPDATE audit_head SET seq = 7, hash = (SELECT hash FROM audit_records WHERE seq = 7) WHERE id = 1",
        ],
        seq: 8,
        reason: |r| {
            *r == BreakReason::BeyondHead {
                head_seq: 7,
                max_seq: 10,
                unnumbered: 0,
            }
        },
    },
    Case {
        name: "move the head back to the start",
        sql: &[
            "UPDATE audit_head SET seq = 0, hash = '0000000000000000000000000000000000000000000000000000000000000000' WHERE id = 1",
        ],
        seq: 1,
        reason: |r| {
            matches!(
                r,
                BreakReason::BeyondHead {
                    head_seq: 0,
                    max_seq: 10,
                    ..
                }
            )
        },
    },
    Case {
        name: "take the last record out of the numbering and move the head back",
        sql: &[
            "UPDATE audit_records SET seq = 0 WHERE seq = 10",
            "UPDATE audit_head SET seq = 9, hash = (SELECT hash FROM audit_records WHERE seq = 9) WHERE id = 1",
        ],
        seq: 10,
        reason: |r| {
            *r == BreakReason::BeyondHead {
                head_seq: 9,
                max_seq: 9,
                unnumbered: 1,
            }
        },
    },
    Case {
        name: "swap two rows",
        sql: &[
            "UPDATE audit_records SET seq = -4 WHERE seq = 4",
            "UPDATE audit_records SET seq = 4 WHERE seq = 3",
            "UPDATE audit_records SET seq = 3 WHERE seq = -4",
        ],
        seq: 3,
        reason: |r| *r == BreakReason::Reordered { links_to: 4 },
    },
    Case {
        name: "edit a row and its stored hash",
        sql: &[
            "UPDATE audit_records SET outcome_status = 'forged', hash = 'a' || substr(hash, 2) WHERE seq = 6",
        ],
        seq: 6,
        reason: |r| matches!(r, BreakReason::HashMismatch { .. }),
    },
    Case {
        name: "break a link",
        sql: &[
            "UPDATE audit_records SET prev_hash = '0000000000000000000000000000000000000000000000000000000000000001' WHERE seq = 7",
        ],
        seq: 7,
        reason: |r| matches!(r, BreakReason::PrevHashMismatch { .. }),
    },
    Case {
        name: "make a row unreadable",
        sql: &["UPDATE audit_records SET kind = 'invented' WHERE seq = 8"],
        seq: 8,
        reason: |r| matches!(r, BreakReason::Unreadable(_)),
    },
];

async fn run_case(store: Store, case: &Case) {
    fill(&store, N).await;
    let clean = verify(&store, 1, |_| {}).await.unwrap();
    assert!(clean.is_intact(), "{}: {clean:?}", case.name);
    disable_guards(&store).await;
    for sql in case.sql {
        exec(&store, sql).await;
    }
    let report = verify(&store, 1, |_| {}).await.unwrap();
    let broken = report
        .broken
        .unwrap_or_else(|| panic!("{}: verify did not notice", case.name));
    assert_eq!(broken.seq, case.seq, "{}: {broken}", case.name);
    assert!((case.reason)(&broken.reason), "{}: {broken}", case.name);
    // Everything before the break verified (for a head mismatch, every record did).
    let before = if matches!(broken.reason, BreakReason::HeadMismatch { .. }) {
        case.seq
    } else {
        case.seq - 1
    };
    assert_eq!(report.checked, before, "{}", case.name);
    store.close().await;
}

#[tokio::test]
async fn sqlite_verify_names_the_tampered_row() {
    for case in CASES {
        let dir = TempDir::new();
        run_case(open_store(&sqlite_url(&dir)).await, case).await;
    }
}

#[tokio::test]
async fn postgres_verify_names_the_tampered_row() {
    for case in CASES {
        let db = PgDatabase::create().await;
        run_case(open_store(&db.url).await, case).await;
        db.drop_now().await;
    }
}

/// Fills a trail on `url` and checks each of `statements` is refused as append-only.
async fn refuses(url: &str, statements: &[&'static str]) {
    let store = open_store(url).await;
    fill(&store, 3).await;
    for sql in statements {
        let error = sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("append-only"), "{error}");
    }
    store.close().await;
}

#[tokio::test]
async fn the_table_refuses_updates_and_deletes() {
    const UPDATE: &str = "UPDATE audit_records SET outcome_status = 'x' WHERE seq = 1";
    const DELETE: &str = "DELETE FROM audit_records WHERE seq = 1";
    let dir = TempDir::new();
    refuses(&sqlite_url(&dir), &[UPDATE, DELETE]).await;
    let db = PgDatabase::create().await;
    refuses(&db.url, &[UPDATE, DELETE, "TRUNCATE audit_records"]).await;
    db.drop_now().await;
}

#[tokio::test]
async fn verify_from_a_seq_trusts_the_record_before_it() {
    let dir = TempDir::new();
    let store = open_store(&sqlite_url(&dir)).await;
    fill(&store, N).await;
    disable_guards(&store).await;
    exec(
        &store,
        "UPDATE audit_records SET outcome_status = 'forged' WHERE seq = 3",
    )
    .await;
    let from_start = verify(&store, 1, |_| {}).await.unwrap();
    assert_eq!(from_start.broken.unwrap().seq, 3);
    let mut seen = Vec::new();
    let later = verify(&store, 5, |seq| seen.push(seq)).await.unwrap();
    assert!(later.is_intact(), "{later:?}");
    assert_eq!(seen, (5..=N as u64).collect::<Vec<_>>());
    // Just past the head: nothing new since the last check.
    let nothing_new = verify(&store, N as u64 + 1, |_| {}).await.unwrap();
    assert!(
        nothing_new.is_intact() && nothing_new.checked == 0,
        "{nothing_new:?}"
    );
    // Further: the records before it are not there, which is not intact.
    let cut = verify(&store, N as u64 + 5, |_| {}).await.unwrap();
    assert_eq!(cut.broken.unwrap().seq, N as u64 + 4);
    store.close().await;
}

/// An anchor is checked against the record itself, not only its hash column: with `--from` past
/// the anchored record the walk never hashes it, and an edit under an unchanged hash would pass.
#[tokio::test]
async fn an_anchored_record_edited_under_its_hash_is_caught() {
    let dir = TempDir::new();
    let store = open_store(&sqlite_url(&dir)).await;
    fill(&store, N).await;
    let anchor: String = sqlx::query_scalar("SELECT hash FROM audit_records WHERE seq = 5")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(
        gatehouse::audit::verify::check_anchor(&store, 5, &anchor)
            .await
            .unwrap()
            .is_none()
    );
    disable_guards(&store).await;
    exec(
        &store,
        "UPDATE audit_records SET outcome_status = 'forged' WHERE seq = 5",
    )
    .await;
    assert!(verify(&store, 6, |_| {}).await.unwrap().is_intact());
    let broken = gatehouse::audit::verify::check_anchor(&store, 5, &anchor)
        .await
        .unwrap()
        .expect("the edit is caught");
    assert_eq!(broken.seq, 5);
    assert!(
        matches!(broken.reason, BreakReason::HashMismatch { .. }),
        "{broken}"
    );
    store.close().await;
}

/// The console's watch verifies a long chain a slice at a time: the newest records first, the
/// older ones in rounds, and what is appended since each check. An edit behind the watch's back
/// is found when its round reaches the record; a record rewritten at the newest verified one at
/// the next check; a broken chain stays reported until the whole of it verifies again.
#[tokio::test]
async fn the_watch_verifies_a_slice_at_a_time_and_finds_what_was_altered() {
    use gatehouse::audit::ChainWatch;
    let dir = TempDir::new();
    let store = open_store(&sqlite_url(&dir)).await;
    let log = fill(&store, N).await;
    let mut watch = ChainWatch::new(4);

    // The newest slice (7..=10), then the first slice of the older records (1..=4).
    let first = watch.check(&store).await.unwrap();
    assert!(first.is_intact(), "{first:?}");
    assert_eq!((first.head_seq, first.verified_from), (10, 7));
    assert_eq!((first.round, first.last_round_at), ((5, 6), None));
    // 5..=6 ends the first round: every record is verified, and the next round begins.
    let second = watch.check(&store).await.unwrap();
    assert_eq!(second.verified_from, 1);
    assert!(second.last_round_at.is_some());
    assert_eq!(second.round, (1, 10));

    // Appended since: verified up to the new head, with a slice of the round.
    for i in 0..3 {
        log.append(super::sample(100 + i)).await.unwrap();
    }
    let third = watch.check(&store).await.unwrap();
    assert!(third.is_intact(), "{third:?}");
    assert_eq!((third.head_seq, third.round), (13, (5, 10)));

    // An old record edited under its hash: found when the round reaches it, and still
    // reported at the next check (which walks the whole chain).
    disable_guards(&store).await;
    let original: String = sqlx::query_scalar("SELECT outcome_status FROM audit_records WHERE seq = 6")
        .fetch_one(store.pool())
        .await
        .unwrap();
    exec(
        &store,
        "UPDATE audit_records SET outcome_status = 'forged' WHERE seq = 6",
    )
    .await;
    for _ in 0..2 {
        let status = watch.check(&store).await.unwrap();
        let broken = status.broken.expect("the edit is found");
        assert_eq!(broken.seq, 6);
        assert!(
            matches!(broken.reason, BreakReason::HashMismatch { .. }),
            "{broken}"
        );
    }
    // Put back (a restore): the whole chain verifies again, and the watch goes on.
    exec(
        &store,
        &format!("UPDATE audit_records SET outcome_status = '{original}' WHERE seq = 6"),
    )
    .await;
    let restored = watch.check(&store).await.unwrap();
    assert!(restored.is_intact(), "{restored:?}");
    assert_eq!((restored.verified_from, restored.round), (1, (1, 13)));

    // The newest record verified, edited: found at the next check, before any round reaches it.
    exec(
        &store,
        "UPDATE audit_records SET outcome_status = 'forged' WHERE seq = 13",
    )
    .await;
    let status = watch.check(&store).await.unwrap();
    let broken = status.broken.expect("the edit is found");
    assert_eq!(broken.seq, 13);
    assert!(
        matches!(broken.reason, BreakReason::HashMismatch { .. }),
        "{broken}"
    );
    store.close().await;
}

/// Records past the head (written behind the chain's back) are found by the next check too.
#[tokio::test]
async fn the_watch_finds_records_outside_the_chain_and_an_empty_trail_is_intact() {
    use gatehouse::audit::ChainWatch;
    let dir = TempDir::new();
    let store = open_store(&sqlite_url(&dir)).await;
    let mut watch = ChainWatch::new(4);
    for _ in 0..2 {
        let empty = watch.check(&store).await.unwrap();
        assert!(empty.is_intact() && empty.head_seq == 0, "{empty:?}");
    }
    fill(&store, N).await;
    assert!(watch.check(&store).await.unwrap().is_intact());
    disable_guards(&store).await;
    // The head moved back over the last two records.
    exec(
        &store,
        "UPDATE audit_head SET seq = 8, hash = (SELECT hash FROM audit_records WHERE seq = 8)",
    )
    .await;
    let status = watch.check(&store).await.unwrap();
    let broken = status.broken.expect("records past the head are found");
    assert!(
        matches!(broken.reason, BreakReason::BeyondHead { .. }),
        "{broken}"
    );
    store.close().await;
}
