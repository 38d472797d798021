//! Keeping the hash chain verified without walking it whole at every look. The console says on
//! every audit page whether the chain is intact, and a walk is linear in the trail's length
//! (minutes on ten million records), so a [`ChainWatch`] remembers what it verified and each
//! [`ChainWatch::check`] costs the records appended since the last one plus one slice:
//!
//! 1. the newest record it verified is hashed again and compared with the hash it had then
//!    ([`check_anchor`]): a chain rewritten at or before it, every later hash recomputed, no
//!    longer matches;
//! 2. the records appended since are verified up to the head, with the head itself and the
//!    records outside the chain ([`verify`] from the next `seq`);
//! 3. one slice of the older records is verified again, where the last check stopped
//!    ([`verify_slice`]): round after round every record is hashed again, so an edit that left
//!    its hash behind, or a deleted row, is found when the round reaches it.
//!
//! The first check verifies the newest slice; the records before it are verified by the first
//! round, and until that round is over the status says how far the chain was verified. A broken
//! link stays reported: every later check walks the whole chain (as `gatehouse audit verify`
//! does) until it verifies again, e.g. after a restore from a backup.

use chrono::{DateTime, Utc};

use super::log::{AuditError, head};
use super::verify::{BrokenLink, check_anchor, verify, verify_slice};
use crate::store::Store;

/// Older records verified again by each check.
pub const SLICE: u64 = 20_000;

/// What the last check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStatus {
    /// The chain's head when checked (0 for an empty trail).
    pub head_seq: u64,
    /// The first broken link, when there is one.
    pub broken: Option<BrokenLink>,
    /// The chain is verified from this `seq` to the head: 1 once a round has been completed.
    pub verified_from: u64,
    /// When the last complete round ended: every record from the first to the head of then
    /// hashed again and its links checked. `None` until the first round is over.
    pub last_round_at: Option<DateTime<Utc>>,
    /// The current round: the next `seq` it verifies, and its last.
    pub round: (u64, u64),
}

impl ChainStatus {
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// What a watch knows between checks (see the module docs).
#[derive(Debug, Clone)]
pub struct ChainWatch {
    slice: u64,
    /// The newest record verified, and its hash then.
    tip: Option<(u64, String)>,
    /// The next `seq` the current round verifies, and its last (empty when the first is past
    /// the second). Until a round is over, the first one ends just before where the chain was
    /// first verified from.
    round: (u64, u64),
    last_round_at: Option<DateTime<Utc>>,
    /// The broken link the last check found: the next one walks the whole chain.
    broken: Option<BrokenLink>,
}

impl Default for ChainWatch {
    fn default() -> Self {
        ChainWatch::new(SLICE)
    }
}

impl ChainWatch {
    /// A watch that verifies `slice` older records a check (at least one).
    pub fn new(slice: u64) -> Self {
        ChainWatch {
            slice: slice.max(1),
            tip: None,
            round: (1, 0),
            last_round_at: None,
            broken: None,
        }
    }

    /// Checks the chain (see the module docs). An `Err` means the store could not be read: what
    /// was verified before the error is kept, the rest is verified by the next check.
    pub async fn check(&mut self, store: &Store) -> Result<ChainStatus, AuditError> {
        let report = match (&self.tip, &self.broken) {
            // An empty trail has no record to anchor to: it is checked as the first time.
            (Some((seq, hash)), None) if *seq > 0 => {
                if let Some(broken) = check_anchor(store, *seq, hash).await? {
                    let (head_seq, _) = head(store).await?;
                    return Ok(self.found_broken(broken, head_seq));
                }
                verify(store, seq + 1, |_| {}).await?
            }
            _ => {
                // The first check, or the chain was broken: a broken chain is walked whole, so
                // it stays reported until every record verifies again.
                let from = match self.broken {
                    Some(_) => 1,
                    None => head(store).await?.0.saturating_sub(self.slice - 1).max(1),
                };
                let report = verify(store, from, |_| {}).await?;
                if report.is_intact() {
                    self.round = (1, from - 1);
                }
                report
            }
        };
        if let Some(broken) = report.broken {
            return Ok(self.found_broken(broken, report.head_seq));
        }
        self.broken = None;
        self.tip = Some((report.head_seq, report.head_hash));
        let (next, end) = self.round;
        if next <= end {
            let to = next.saturating_add(self.slice - 1).min(end);
            let slice = verify_slice(store, next, to).await?;
            if let Some(broken) = slice.broken {
                return Ok(self.found_broken(broken, report.head_seq));
            }
            self.round.0 = to + 1;
        }
        if self.round.0 > self.round.1 {
            // Every record up to the round's end was verified again, and the checks since
            // verified the rest up to the head: the next round starts from the first.
            self.last_round_at = Some(Utc::now());
            self.round = (1, report.head_seq);
        }
        Ok(self.status(report.head_seq))
    }

    fn found_broken(&mut self, broken: BrokenLink, head_seq: u64) -> ChainStatus {
        self.broken = Some(broken);
        self.tip = None;
        self.round = (1, 0);
        self.status(head_seq)
    }

    fn status(&self, head_seq: u64) -> ChainStatus {
        ChainStatus {
            head_seq,
            broken: self.broken.clone(),
            // Whole once a round is over; until then from just after where the first round ends.
            verified_from: match self.last_round_at {
                Some(_) => 1,
                None => self.round.1 + 1,
            },
            last_round_at: self.last_round_at,
            round: self.round,
        }
    }
}
