//! `[approvals]`: where people decide on plans that wait for them. `[approvals.slack]` posts each
//! waiting plan to a Slack channel with Approve / Reject buttons and takes the clicks back at
//! `POST /slack/actions`, verified with the app's signing secret.

use serde::{Deserialize, Serialize};

use super::Secret;
use super::outbound::target_problem;

/// `[approvals]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsSettings {
    #[serde(default)]
    pub slack: Option<SlackSettings>,
}

/// `[approvals.slack]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// An incoming-webhook URL (`env:`/`file:`: the URL itself is the credential). Either this,
    /// or `bot_token` and `channel`.
    #[serde(default)]
    pub webhook_url: Option<Secret>,
    /// A bot token (`xoxb-…`) that may `chat.postMessage` to `channel`.
    #[serde(default)]
    pub bot_token: Option<Secret>,
    /// The channel id (`C0123…`) messages go to with `bot_token`.
    #[serde(default)]
    pub channel: Option<String>,
    /// The Slack app's signing secret: every click is checked against it.
    pub signing_secret: Secret,
    /// The Slack user ids (`U0123…`) who may decide. A click by anyone else decides nothing and
    /// is recorded.
    pub approvers: Vec<String>,
    /// Slack's Web API (tests point it at a fake).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Where Slack's `response_url`s point; a click naming another `response_url` is not
    /// followed (tests point it at a fake).
    #[serde(default = "default_hooks_url")]
    pub hooks_url: String,
    /// Allowed age (and skew) of `X-Slack-Request-Timestamp`.
    #[serde(default = "default_tolerance_seconds")]
    pub tolerance_seconds: u64,
    /// Unverified clicks (unsigned, forged, stale) recorded in the audit trail, at most, a minute
    /// (a burst of as many, then one every 60/n seconds). Anyone can post to `/slack/actions`: a
    /// flood must not grow the trail, which keeps every record. The clicks not recorded are
    /// still counted (`gatehouse_verification_failures_total{source="slack"}`), and the next
    /// record says how many there were.
    #[serde(default = "default_unverified_records_per_minute")]
    pub unverified_records_per_minute: u32,
    /// One post's bound.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
    /// Waits after failed posts; after the last, the message is dead (`gatehouse outbound`).
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: Vec<u64>,
    /// Allow `http://` targets (tests and demos).
    #[serde(default)]
    pub allow_http: bool,
    /// Allow targets in private or local networks (tests, a proxy on the same host).
    #[serde(default)]
    pub allow_private_addresses: bool,
}

fn default_api_url() -> String {
    "https://slack.com/api".to_owned()
}

fn default_hooks_url() -> String {
    "https://hooks.slack.com/".to_owned()
}

fn default_tolerance_seconds() -> u64 {
    300
}

fn default_unverified_records_per_minute() -> u32 {
    10
}

fn default_timeout_seconds() -> u64 {
    10
}

fn default_retry_seconds() -> Vec<u64> {
    vec![2, 10, 30, 120, 600]
}

impl SlackSettings {
    /// Settings posting through the incoming webhook `webhook_url`, with defaults elsewhere.
    pub fn with_webhook(webhook_url: Secret, signing_secret: Secret, approvers: Vec<String>) -> Self {
        SlackSettings {
            webhook_url: Some(webhook_url),
            bot_token: None,
            channel: None,
            signing_secret,
            approvers,
            api_url: default_api_url(),
            hooks_url: default_hooks_url(),
            tolerance_seconds: default_tolerance_seconds(),
            unverified_records_per_minute: default_unverified_records_per_minute(),
            timeout_seconds: default_timeout_seconds(),
            retry_seconds: default_retry_seconds(),
            allow_http: false,
            allow_private_addresses: false,
        }
    }

    /// Where a new approval message is posted.
    pub fn post_url(&self) -> String {
        match &self.webhook_url {
            Some(url) => url.expose().to_owned(),
            None => format!("{}/chat.postMessage", self.api_url.trim_end_matches('/')),
        }
    }

    /// Where a posted message is replaced (`chat.update`): with a bot token only (a message posted
    /// through an incoming webhook cannot be changed afterwards).
    pub fn update_url(&self) -> Option<String> {
        (self.webhook_url.is_none() && self.bot_token.is_some())
            .then(|| format!("{}/chat.update", self.api_url.trim_end_matches('/')))
    }

    /// May `user` (a Slack user id) decide?
    pub fn is_approver(&self, user: &str) -> bool {
        self.approvers.iter().any(|a| a == user)
    }

    /// Is `url` a `response_url` gatehouse may follow?
    pub fn is_response_url(&self, url: &str) -> bool {
        let Ok(prefix) = url::Url::parse(&self.hooks_url) else {
            return false;
        };
        let Ok(url) = url::Url::parse(url) else {
            return false;
        };
        url.origin() == prefix.origin() && url.path().starts_with(prefix.path())
    }
}

fn is_slack_id(id: &str, first: &[char]) -> bool {
    id.len() >= 3 && id.starts_with(first) && id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Checks `[approvals]`.
pub(super) fn validate(settings: &super::Settings, error: &mut impl FnMut(String, String)) {
    let Some(slack) = &settings.approvals.slack else {
        return;
    };
    let key = "approvals.slack";
    match (&slack.webhook_url, &slack.bot_token, &slack.channel) {
        (Some(_), None, None) | (None, Some(_), Some(_)) => {}
        (Some(_), _, _) => error(
            format!("{key}.webhook_url"),
            "give either webhook_url, or bot_token and channel, not both".into(),
        ),
        (None, Some(_), None) => error(format!("{key}.channel"), "bot_token needs a channel id".into()),
        (None, None, Some(_)) => error(format!("{key}.bot_token"), "channel needs a bot_token".into()),
        (None, None, None) => error(
            key.to_owned(),
            "give webhook_url, or bot_token and channel: there is nowhere to post".into(),
        ),
    }
    if let Some(channel) = &slack.channel
        && !is_slack_id(channel, &['C', 'G', 'D'])
    {
        error(
            format!("{key}.channel"),
            format!("`{channel}` is not a channel id (C0123…): names can change, ids do not"),
        );
    }
    if let Some(token) = &slack.bot_token
        && !token.expose().starts_with("xoxb-")
    {
        error(
            format!("{key}.bot_token"),
            "a bot token starts with `xoxb-`".into(),
        );
    }
    let targets = [
        (
            "webhook_url",
            slack.webhook_url.as_ref().map(|u| u.expose().to_owned()),
        ),
        ("api_url", slack.bot_token.as_ref().map(|_| slack.api_url.clone())),
        ("hooks_url", Some(slack.hooks_url.clone())),
    ];
    for (name, url) in targets {
        if let Some(url) = url
            && let Some(problem) = target_problem(&url, slack.allow_http, slack.allow_private_addresses)
        {
            // The webhook URL is a credential: say what is wrong, not what it is.
            let problem = if name == "webhook_url" {
                problem.replace(url.as_str(), "the URL")
            } else {
                problem
            };
            error(format!("{key}.{name}"), problem);
        }
    }
    if slack.unverified_records_per_minute == 0 {
        error(
            format!("{key}.unverified_records_per_minute"),
            "must be at least 1: unverified clicks must leave a trace in the audit trail".into(),
        );
    }
    if slack.signing_secret.expose().len() < 16 {
        error(
            format!("{key}.signing_secret"),
            "too short for a Slack signing secret (its Basic Information page shows it)".into(),
        );
    }
    if slack.approvers.is_empty() {
        error(
            format!("{key}.approvers"),
            "name the Slack user ids (U0123…) who may decide: no one could approve".into(),
        );
    }
    for (i, approver) in slack.approvers.iter().enumerate() {
        if !is_slack_id(approver, &['U', 'W']) {
            error(
                format!("{key}.approvers[{i}]"),
                format!("`{approver}` is not a Slack user id (U0123…, from a profile's ⋮ → Copy member ID)"),
            );
        }
    }
    if !(1..=3_600).contains(&slack.tolerance_seconds) {
        error(format!("{key}.tolerance_seconds"), "must be 1 to 3600".into());
    }
    if !(1..=60).contains(&slack.timeout_seconds) {
        error(format!("{key}.timeout_seconds"), "must be 1 to 60".into());
    }
    if slack.retry_seconds.is_empty() || slack.retry_seconds.iter().any(|w| !(1..=86_400).contains(w)) {
        error(
            format!("{key}.retry_seconds"),
            "give one or more waits of 1 to 86400 seconds".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    /// Errors of `text`, where `SIGNING` and `HOOK` stand for files holding a signing secret and
    /// a webhook URL (secrets are references, never literals).
    fn errors(text: &str) -> Vec<(String, String)> {
        let dir = std::env::temp_dir().join(format!("gh-slack-config-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let signing = dir.join("signing");
        let hook = dir.join("hook");
        std::fs::write(&signing, "0123456789abcdef0123").unwrap();
        std::fs::write(&hook, "http://hooks.example.com/services/T/B/secret-part").unwrap();
        let text = text
            .replace("SIGNING", &format!("file:{}", signing.display()))
            .replace("HOOK", &format!("file:{}", hook.display()));
        let result = crate::config::Settings::from_toml(&text, std::iter::empty());
        let _ = std::fs::remove_dir_all(&dir);
        match result {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.into_iter().map(|e| (e.key, e.message)).collect(),
        }
    }

    #[test]
    fn slack_needs_somewhere_to_post_approvers_and_a_signing_secret() {
        let good = "[approvals.slack]\nbot_token = \"SIGNING\"\nchannel = \"C0123ABC\"\nsigning_secret = \"SIGNING\"\napprovers = [\"U0123ABC\"]\n";
        let keys: Vec<String> = errors(good).into_iter().map(|(k, _)| k).collect();
        // The "token" is not an xoxb- token.
        assert_eq!(keys, ["approvals.slack.bot_token"]);
        let none = "[approvals.slack]\nsigning_secret = \"SIGNING\"\napprovers = [\"alice\"]\nchannel = \"#general\"\n";
        let keys: Vec<String> = errors(none).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "approvals.slack.bot_token",
                "approvals.slack.channel",
                "approvals.slack.approvers[0]"
            ]
        );
        // A webhook URL is a credential: an error about it does not repeat it.
        let http = "[approvals.slack]\nwebhook_url = \"HOOK\"\nsigning_secret = \"SIGNING\"\napprovers = [\"U0123ABC\"]\n";
        let found = errors(http);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "approvals.slack.webhook_url");
        assert!(!found[0].1.contains("secret-part"), "{found:?}");
    }

    #[test]
    fn only_response_urls_under_hooks_url_are_followed() {
        let slack = super::SlackSettings::with_webhook(
            crate::config::Secret::new("https://hooks.slack.com/services/T/B/x"),
            crate::config::Secret::new("0123456789abcdef"),
            vec!["U1".into()],
        );
        // Its secrets never show.
        let shown = format!("{slack:?}");
        assert!(
            !shown.contains("0123456789abcdef") && !shown.contains("services/T/B/x"),
            "{shown}"
        );
        assert!(slack.is_response_url("https://hooks.slack.com/actions/T0/1/abc"));
        assert!(!slack.is_response_url("https://hooks.slack.com.evil.example/actions/x"));
        assert!(!slack.is_response_url("http://hooks.slack.com/actions/x"));
        assert!(!slack.is_response_url("https://169.254.169.254/latest"));
    }
}
