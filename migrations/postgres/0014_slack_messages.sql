-- Where each approval's Slack message went, as `chat.postMessage` answered (bot token only; an
-- incoming webhook says nothing of it): a decision made elsewhere (the CLI, the console, an
-- expiry, a superseded plan) replaces the message's buttons with the outcome (`chat.update`).
CREATE TABLE slack_messages (
    approval_id TEXT PRIMARY KEY,
    channel     TEXT NOT NULL,           -- the channel's id
    ts          TEXT NOT NULL,           -- the message's timestamp: Slack's id for it
    posted_at   BIGINT NOT NULL          -- unix ms
);
