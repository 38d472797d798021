//! The Slack messages of approvals (Block Kit): the request posted when a plan starts waiting
//! (who, which policy, each action with `ORG-WIDE` marked, the warnings, Approve / Reject), and
//! the update that replaces it once someone decided in Slack.
//!
//! Everything shown comes from the plan and the envelope, which hold text from Atlassian and
//! senders: it is escaped for Slack's mrkdwn (`&`, `<`, `>`), so a group named `<!channel>`
//! notifies no one and a crafted name cannot make a link.

use handlers::{Envelope, Plan};
use serde_json::{Value, json};

use crate::config::{SLACK_OUTBOX, SlackSettings};
use crate::store::outbox::NewDelivery;

/// The `action_id`s of the two buttons.
pub const APPROVE: &str = "approve";
pub const REJECT: &str = "reject";

/// Slack's limit on a section's text is 3,000 characters; a longer plan is cut with a pointer to
/// the full one.
const SECTION_LIMIT: usize = 2_900;

/// Escapes text for Slack's mrkdwn.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `code` spans cannot hold a backtick.
fn code(text: &str) -> String {
    format!("`{}`", escape(&text.replace('`', "'")))
}

fn mrkdwn(text: String) -> Value {
    json!({ "type": "mrkdwn", "text": text })
}

/// The request to decide on approval `approval_id` of `plan`.
pub fn approval_request(
    slack: &SlackSettings,
    approval_id: &str,
    plan: &Plan,
    envelope: &Envelope,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Result<NewDelivery, serde_json::Error> {
    let who = envelope
        .subject
        .account_id
        .as_deref()
        .map_or_else(|| "no one named".to_owned(), code);
    let org_wide = plan.actions.iter().filter(|a| a.action.org_wide()).count();
    let mut actions = String::from("*Actions*");
    for (i, planned) in plan.actions.iter().enumerate() {
        let line = format!(
            "\n• {}{} {}",
            if planned.action.org_wide() {
                "*ORG-WIDE* "
            } else {
                ""
            },
            code(planned.action.type_name()),
            code(&planned.action.target())
        );
        if actions.len() + line.len() > SECTION_LIMIT {
            actions.push_str(&format!(
                "\n… and {} more: `gatehouse approvals show {approval_id}`",
                plan.actions.len() - i
            ));
            break;
        }
        actions.push_str(&line);
    }
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": "Approval needed" } }),
        json!({ "type": "section", "fields": [
            mrkdwn(format!("*Who*\n{who}")),
            mrkdwn(format!("*Policy*\n{}", code(&plan.handler))),
            mrkdwn(format!("*Event*\n{} from {}", code(&envelope.event_type.as_str()), code(&envelope.source))),
            mrkdwn(format!("*Tenant*\n{}", code(envelope.tenant_name()))),
        ] }),
        json!({ "type": "section", "text": mrkdwn(actions) }),
    ];
    if !plan.warnings.is_empty() {
        let warnings: Vec<Value> = plan
            .warnings
            .iter()
            .take(9)
            .map(|w| mrkdwn(format!(":warning: {}", escape(w))))
            .collect();
        blocks.push(json!({ "type": "context", "elements": warnings }));
    }
    blocks.push(json!({ "type": "actions", "block_id": "approval", "elements": [
        {
            "type": "button", "action_id": APPROVE, "value": approval_id, "style": "primary",
            "text": { "type": "plain_text", "text": "Approve" },
            "confirm": {
                "title": { "type": "plain_text", "text": "Approve this plan?" },
                "text": mrkdwn(format!("{} action(s){} will be performed.", plan.actions.len(),
                    if org_wide > 0 { format!(", {org_wide} of them organization-wide,") } else { String::new() })),
                "confirm": { "type": "plain_text", "text": "Approve" },
                "deny": { "type": "plain_text", "text": "Cancel" }
            }
        },
        {
            "type": "button", "action_id": REJECT, "value": approval_id, "style": "danger",
            "text": { "type": "plain_text", "text": "Reject" }
        }
    ] }));
    blocks.push(json!({ "type": "context", "elements": [mrkdwn(format!(
        "Approval {} · expires {} · or `gatehouse approvals approve {approval_id}`",
        code(approval_id),
        expires_at.format("%Y-%m-%d %H:%M UTC")
    ))] }));
    let mut message = json!({
        "text": format!("Approval needed: {} wants to act on {who} ({} action(s))", escape(&plan.handler), plan.actions.len()),
        "blocks": blocks,
    });
    if let (Some(channel), Some(_)) = (&slack.channel, &slack.bot_token) {
        message["channel"] = json!(channel);
    }
    Ok(NewDelivery {
        endpoint: SLACK_OUTBOX.to_owned(),
        source_key: format!("approval:{approval_id}"),
        message_type: "slack.approval".to_owned(),
        url: None,
        payload: serde_json::to_string(&message)?,
    })
}

/// What became of a click, shown in place of the request (or to the clicker alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClickResult {
    /// The decision was recorded: `approved` or `rejected`, by whom.
    Decided { decision: &'static str, by: String },
    /// Nothing was decided, and why (already decided, expired, not an approver).
    Refused(String),
}

/// The update sent to a click's `response_url`; `click` makes each click's update its own
/// delivery.
pub fn click_update(
    response_url: &str,
    approval_id: &str,
    click: &str,
    result: &ClickResult,
) -> Result<NewDelivery, serde_json::Error> {
    let message = match result {
        ClickResult::Decided { decision, by } => {
            let what = if *decision == "approved" {
                "the plan is queued and will be performed as recorded"
            } else {
                "nothing of the plan will be performed"
            };
            let text = format!(
                "*{}* by <@{}>: {what} (approval {})",
                capitalized(decision),
                escape(by),
                code(approval_id)
            );
            json!({
                "replace_original": true,
                "text": text,
                "blocks": [{ "type": "section", "text": mrkdwn(text) }],
            })
        }
        ClickResult::Refused(why) => json!({
            "replace_original": false,
            "response_type": "ephemeral",
            "text": format!("Nothing was decided on approval {}: {}", code(approval_id), escape(why)),
        }),
    };
    Ok(NewDelivery {
        endpoint: SLACK_OUTBOX.to_owned(),
        source_key: format!("click:{approval_id}:{click}"),
        message_type: "slack.update".to_owned(),
        url: Some(response_url.to_owned()),
        payload: serde_json::to_string(&message)?,
    })
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_atlassian_cannot_mention_or_link() {
        assert_eq!(
            escape("<!channel> & <https://x|y>"),
            "&lt;!channel&gt; &amp; &lt;https://x|y&gt;"
        );
        assert_eq!(code("a`b<c"), "`a'b&lt;c`");
        assert_eq!(capitalized("approved"), "Approved");
    }
}
