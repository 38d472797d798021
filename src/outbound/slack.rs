//! The Slack messages of approvals (Block Kit): the request posted when a plan starts waiting
//! (who, which policy, each action with `ORG-WIDE` marked, the warnings, Approve / Reject), the
//! update that replaces it once someone decided in Slack (through the click's `response_url`),
//! and, with a bot token, the one that replaces it once the plan was settled anywhere else (the
//! CLI, the console, an expiry, a superseded plan: `chat.update`), so no message keeps offering
//! buttons for a plan already settled.
//!
//! Everything shown comes from the plan and the envelope, which hold text from Atlassian and
//! senders: it is escaped for Slack's mrkdwn (`&`, `<`, `>`), so a group named `<!channel>`
//! notifies no one and a crafted name cannot make a link.

use handlers::{Envelope, Plan};
use serde_json::{Value, json};

use crate::config::{SLACK_OUTBOX, SlackSettings};
use crate::store::ApprovalState;
use crate::store::outbox::NewDelivery;

/// The `action_id`s of the two buttons.
pub const APPROVE: &str = "approve";
pub const REJECT: &str = "reject";

/// The outbox's `message_type`s of Slack deliveries: the request, a click's update (to its
/// `response_url`), and a settlement's update (`chat.update` of the request).
pub const REQUEST: &str = "slack.approval";
pub const CLICK_UPDATE: &str = "slack.update";
pub const SETTLED_UPDATE: &str = "slack.settled";

/// The `source_key` prefix of a settlement's update; `{approval id}:{state}` follows (an approved
/// plan may be superseded later: each settlement is its own update).
const SETTLED_KEY: &str = "settled:";

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
        source_key: request_key(approval_id),
        message_type: REQUEST.to_owned(),
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
        message_type: CLICK_UPDATE.to_owned(),
        url: Some(response_url.to_owned()),
        payload: serde_json::to_string(&message)?,
    })
}

/// The `source_key` of approval `approval_id`'s request.
pub fn request_key(approval_id: &str) -> String {
    format!("approval:{approval_id}")
}

/// The approval a request's delivery (`approval:{id}`) is about.
pub fn approval_of(source_key: &str) -> Option<&str> {
    source_key.strip_prefix("approval:")
}

/// The approval a settlement's update (`settled:{id}:{state}`) is about, and the state it
/// announces.
pub fn settled_of(source_key: &str) -> Option<(&str, ApprovalState)> {
    let (id, state) = source_key.strip_prefix(SETTLED_KEY)?.split_once(':')?;
    Some((id, ApprovalState::parse(state)?))
}

/// Is an update announcing `announced` still what approval's `current` state says? An approved
/// plan that ran is still approved; any other move (an approved plan superseded) overtakes it.
pub fn still_current(announced: ApprovalState, current: ApprovalState) -> bool {
    let settled = |state| match state {
        ApprovalState::Executed => ApprovalState::Approved,
        other => other,
    };
    settled(announced) == settled(current)
}

/// The update replacing approval `approval_id`'s request once it moved to `to` (by `by`, with
/// `note`) outside Slack, when the request can be changed (a bot token posted it) and `to`
/// settles it. Its `channel` and `ts` are filled in when it is sent, from where the request
/// went.
pub fn settled_update(
    slack: &SlackSettings,
    approval_id: &str,
    to: ApprovalState,
    by: &str,
    note: Option<&str>,
) -> Result<Option<NewDelivery>, serde_json::Error> {
    if slack.update_url().is_none() {
        return Ok(None);
    }
    let id = code(approval_id);
    let text = match to {
        ApprovalState::Approved => format!(
            "*Approved* by {}: the plan is queued and will be performed as recorded (approval {id})",
            code(by)
        ),
        ApprovalState::Rejected => format!(
            "*Rejected* by {}: nothing of the plan will be performed (approval {id}){}",
            code(by),
            note.map(|why| format!("\n>{}", escape(why))).unwrap_or_default()
        ),
        ApprovalState::Expired => format!(
            "*Expired*: nobody decided within `reactions.approval_ttl`, so the plan will not run \
             (approval {id})"
        ),
        ApprovalState::Superseded => format!(
            "*Superseded*: {}; the plan will not run (approval {id})",
            escape(note.unwrap_or("what it was about changed"))
        ),
        ApprovalState::Pending | ApprovalState::Executed => return Ok(None),
    };
    let message = json!({
        "text": text,
        "blocks": [{ "type": "section", "text": mrkdwn(text.clone()) }],
    });
    Ok(Some(NewDelivery {
        endpoint: SLACK_OUTBOX.to_owned(),
        source_key: format!("{SETTLED_KEY}{approval_id}:{}", to.as_str()),
        message_type: SETTLED_UPDATE.to_owned(),
        url: None,
        payload: serde_json::to_string(&message)?,
    }))
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

    fn bot() -> SlackSettings {
        let mut slack = SlackSettings::with_webhook(
            crate::config::Secret::new("https://hooks.slack.com/services/T/B/x"),
            crate::config::Secret::new("signing-secret-0123456789"),
            vec!["U1".to_owned()],
        );
        slack.webhook_url = None;
        slack.bot_token = Some(crate::config::Secret::new("xoxb-1"));
        slack.channel = Some("C1".to_owned());
        slack
    }

    #[test]
    fn each_settlement_replaces_the_request_once_and_says_what_became_of_the_plan() {
        let slack = bot();
        let text = |to, note| {
            let update = settled_update(&slack, "01AP", to, "ops <b>", note)
                .unwrap()
                .unwrap();
            assert_eq!(update.message_type, SETTLED_UPDATE);
            assert_eq!(update.url, None, "to chat.update, with the bot token");
            assert_eq!(settled_of(&update.source_key), Some(("01AP", to)));
            let message: Value = serde_json::from_str(&update.payload).unwrap();
            assert!(message.get("channel").is_none(), "filled in when sent");
            (update.source_key, message["text"].as_str().unwrap().to_owned())
        };
        let (approved_key, approved) = text(ApprovalState::Approved, None);
        assert_eq!(
            approved,
            "*Approved* by `ops &lt;b&gt;`: the plan is queued and will be performed as recorded (approval `01AP`)"
        );
        let (_, rejected) = text(ApprovalState::Rejected, Some("<!here> no"));
        assert!(
            rejected.ends_with("(approval `01AP`)\n>&lt;!here&gt; no"),
            "{rejected}"
        );
        assert!(text(ApprovalState::Expired, None).1.starts_with("*Expired*"));
        let (superseded_key, superseded) = text(ApprovalState::Superseded, Some("account active again"));
        assert!(
            superseded.starts_with("*Superseded*: account active again;"),
            "{superseded}"
        );
        assert_ne!(
            approved_key, superseded_key,
            "an approved plan superseded later updates again"
        );
        for unsettled in [ApprovalState::Pending, ApprovalState::Executed] {
            assert!(
                settled_update(&slack, "01AP", unsettled, "x", None)
                    .unwrap()
                    .is_none()
            );
        }
        // An incoming webhook's message cannot be changed.
        let webhook = SlackSettings {
            webhook_url: Some(crate::config::Secret::new(
                "https://hooks.slack.com/services/T/B/x",
            )),
            ..bot()
        };
        assert!(
            settled_update(&webhook, "01AP", ApprovalState::Approved, "x", None)
                .unwrap()
                .is_none()
        );
        assert_eq!(approval_of(&request_key("01AP")), Some("01AP"));
        assert_eq!(approval_of("click:01AP:1.2"), None);
        assert_eq!(settled_of("settled:01AP:nonsense"), None);
        // A later settlement overtakes an earlier one; a plan that ran is still approved.
        assert!(still_current(ApprovalState::Approved, ApprovalState::Executed));
        assert!(!still_current(ApprovalState::Approved, ApprovalState::Superseded));
        assert!(still_current(
            ApprovalState::Superseded,
            ApprovalState::Superseded
        ));
    }

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
