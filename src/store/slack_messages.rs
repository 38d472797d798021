//! Where each approval's Slack message went (`chat.postMessage` answers with the channel's id
//! and the message's `ts`), so a decision made outside Slack can replace the message's buttons
//! with the outcome (`chat.update`). Only a bot token learns this: an incoming webhook answers
//! `ok` and nothing else, and its messages cannot be changed afterwards.

use sqlx::Row;

use super::{Store, StoreError, to_millis};

/// A posted message, as Slack names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackMessage {
    /// The channel's id (`C…`), which `chat.update` needs (a name will not do).
    pub channel: String,
    /// The message's timestamp: Slack's id for it within the channel.
    pub ts: String,
}

impl Store {
    /// Remembers where approval `approval_id`'s message went. The first post is kept: a message
    /// posted twice (a lost answer, retried) is updated where it was first seen.
    pub async fn record_slack_message(
        &self,
        approval_id: &str,
        message: &SlackMessage,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO slack_messages (approval_id, channel, ts, posted_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (approval_id) DO NOTHING",
        )
        .bind(approval_id)
        .bind(&message.channel)
        .bind(&message.ts)
        .bind(to_millis(chrono::Utc::now()))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Where approval `approval_id`'s message went, once Slack said.
    pub async fn slack_message(&self, approval_id: &str) -> Result<Option<SlackMessage>, StoreError> {
        let row = sqlx::query("SELECT channel, ts FROM slack_messages WHERE approval_id = $1")
            .bind(approval_id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| {
            Ok(SlackMessage {
                channel: row.try_get("channel")?,
                ts: row.try_get("ts")?,
            })
        })
        .transpose()
    }
}
