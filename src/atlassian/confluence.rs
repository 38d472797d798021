//! The Confluence Cloud REST client: v1 users and groups (by group id; the deprecated name-based
//! endpoints are never used), v2 `users-bulk` for account status.
//!
//! Group names are case-sensitive: [`ConfluenceClient::group_named`] matches exactly and
//! [`ConfluenceClient::groups_named_like`] finds near misses in case for people who typed one.
//! Emails are often hidden (null, or an empty string): never key on them.

use handlers::ports::{AccountStatus, Group, User};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use url::Url;

use super::error::ApiError;
use handlers::identifier::IdKind;

use super::http::{ApiCaller, Call, CallBody, Endpoint, Receipt, Verb, checked_id, url_with};
use super::pagination::{CursorListing, OffsetListing, PageProgress, no_progress};

const USER: Endpoint = Endpoint::new(Verb::Get, "GET /rest/api/user", true);
const MEMBER_OF: Endpoint = Endpoint::new(Verb::Get, "GET /rest/api/user/memberof", true);
const GROUPS: Endpoint = Endpoint::new(Verb::Get, "GET /rest/api/group", true);
const GROUP_PICKER: Endpoint = Endpoint::new(Verb::Get, "GET /rest/api/group/picker", true);
const MEMBERS: Endpoint = Endpoint::new(Verb::Get, "GET /rest/api/group/{groupId}/membersByGroupId", true);
/// Adding a member who is one already changes nothing: safe to retry.
const ADD_MEMBER: Endpoint = Endpoint::new(Verb::Post, "POST /rest/api/group/userByGroupId", true);
const REMOVE_MEMBER: Endpoint = Endpoint::new(Verb::Delete, "DELETE /rest/api/group/userByGroupId", true);
/// A read, though a POST.
const USERS_BULK: Endpoint = Endpoint::new(Verb::Post, "POST /api/v2/users-bulk", true).reading();

/// This client's endpoints (held to `config::ATLASSIAN_ENDPOINT_LABELS` by a test).
#[cfg(test)]
pub(super) const ENDPOINTS: [Endpoint; 8] = [
    USER,
    MEMBER_OF,
    GROUPS,
    GROUP_PICKER,
    MEMBERS,
    ADD_MEMBER,
    REMOVE_MEMBER,
    USERS_BULK,
];

/// v1 pages: Atlassian allows up to 200 members per page (others less); the server lowers it as
/// it likes, which the pager handles.
const V1_PAGE_SIZE: u32 = 200;
/// v2 pages: at most 250.
const V2_PAGE_SIZE: u32 = 250;
/// `users-bulk` takes at most 100 ids per request.
const BULK_IDS: usize = 100;

/// A user with the status Confluence v2 reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStatus {
    pub user: User,
    pub status: AccountStatus,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiUser {
    account_id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    public_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    account_type: Option<String>,
    #[serde(default)]
    pub(crate) account_status: Option<String>,
}

impl From<ApiUser> for User {
    fn from(user: ApiUser) -> Self {
        User {
            account_id: user.account_id,
            display_name: user.display_name.or(user.public_name),
            // Hidden emails come as null or as "".
            email: user.email.filter(|e| !e.trim().is_empty()),
            account_type: user.account_type,
        }
    }
}

pub(crate) fn parse_status(status: Option<&str>) -> AccountStatus {
    match status {
        Some("active") => AccountStatus::Active,
        Some("inactive") => AccountStatus::Inactive,
        Some("closed") => AccountStatus::Closed,
        _ => AccountStatus::Unknown,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApiGroup {
    id: String,
    name: String,
}

impl From<ApiGroup> for Group {
    fn from(group: ApiGroup) -> Self {
        Group {
            id: group.id,
            name: group.name,
        }
    }
}

/// Confluence calls; cheap to clone.
#[derive(Debug, Clone)]
pub struct ConfluenceClient {
    caller: ApiCaller,
    /// `…/wiki` (site or gateway).
    base: Url,
}

impl ConfluenceClient {
    pub fn new(caller: ApiCaller, base: Url) -> Self {
        ConfluenceClient { caller, base }
    }

    fn v1(&self, segments: &[&str]) -> Url {
        let mut all = vec!["rest", "api"];
        all.extend_from_slice(segments);
        url_with(&self.base, &all)
    }

    /// The account, `None` when Confluence does not know it.
    pub async fn user(&self, account_id: &str) -> Result<Option<User>, ApiError> {
        let account_id = checked_id(USER, IdKind::Account, account_id)?;
        let call = Call::new(USER, self.v1(&["user"])).query("accountId", account_id);
        match self.caller.send(&call).await {
            Ok(reply) => Ok(Some(User::from(reply.json::<ApiUser>(USER.label)?))),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Every Confluence group the account belongs to.
    pub async fn member_groups(
        &self,
        account_id: &str,
        progress: PageProgress<'_>,
    ) -> Result<Vec<Group>, ApiError> {
        let account_id = checked_id(MEMBER_OF, IdKind::Account, account_id)?;
        let call = Call::new(MEMBER_OF, self.v1(&["user", "memberof"])).query("accountId", account_id);
        self.v1_list::<ApiGroup, _>(call, progress).await
    }

    /// Every group of the site.
    pub async fn groups(&self, progress: PageProgress<'_>) -> Result<Vec<Group>, ApiError> {
        let call = Call::new(GROUPS, self.v1(&["group"]));
        self.v1_list::<ApiGroup, _>(call, progress).await
    }

    /// Every member of the group with this id.
    pub async fn group_members(
        &self,
        group_id: &str,
        progress: PageProgress<'_>,
    ) -> Result<Vec<User>, ApiError> {
        let group_id = checked_id(MEMBERS, IdKind::Group, group_id)?;
        let call = Call::new(MEMBERS, self.v1(&["group", group_id, "membersByGroupId"]));
        self.v1_list::<ApiUser, _>(call, progress).await
    }

    /// Groups whose name contains `query`, ignoring case (Confluence's group picker).
    async fn search_groups(&self, query: &str) -> Result<Vec<Group>, ApiError> {
        let call = Call::new(GROUP_PICKER, self.v1(&["group", "picker"])).query("query", query);
        self.v1_list::<ApiGroup, _>(call, &no_progress).await
    }

    /// Every item of a v1 listing, converted.
    async fn v1_list<A, T>(&self, call: Call, progress: PageProgress<'_>) -> Result<Vec<T>, ApiError>
    where
        A: DeserializeOwned,
        T: From<A>,
    {
        let found: Vec<A> = OffsetListing::new(call, V1_PAGE_SIZE)?
            .collect(&self.caller, progress)
            .await?;
        Ok(found.into_iter().map(T::from).collect())
    }

    /// The group named exactly `name` (case-sensitive), if any.
    pub async fn group_named(&self, name: &str) -> Result<Option<Group>, ApiError> {
        if name.is_empty() {
            return Ok(None);
        }
        Ok(self
            .search_groups(name)
            .await?
            .into_iter()
            .find(|g| g.name == name))
    }

    /// Groups whose name equals `name` but for case: what someone probably meant.
    pub async fn groups_named_like(&self, name: &str) -> Result<Vec<Group>, ApiError> {
        if name.is_empty() {
            return Ok(Vec::new());
        }
        let lower = name.to_lowercase();
        Ok(self
            .search_groups(name)
            .await?
            .into_iter()
            .filter(|g| g.name != name && g.name.to_lowercase() == lower)
            .collect())
    }

    /// Adds the account to the group (no change when it is a member already).
    pub async fn add_member(&self, group_id: &str, account_id: &str) -> Result<Receipt, ApiError> {
        let group_id = checked_id(ADD_MEMBER, IdKind::Group, group_id)?;
        let account_id = checked_id(ADD_MEMBER, IdKind::Account, account_id)?;
        let call = Call::new(ADD_MEMBER, self.v1(&["group", "userByGroupId"]))
            .query("groupId", group_id)
            .body(CallBody::Json(json!({ "accountId": account_id })));
        Ok(Receipt::from(&self.caller.send(&call).await?))
    }

    /// Removes the account from the group. Success (204) also when it was not a member.
    pub async fn remove_member(&self, group_id: &str, account_id: &str) -> Result<Receipt, ApiError> {
        let group_id = checked_id(REMOVE_MEMBER, IdKind::Group, group_id)?;
        let account_id = checked_id(REMOVE_MEMBER, IdKind::Account, account_id)?;
        let call = Call::new(REMOVE_MEMBER, self.v1(&["group", "userByGroupId"]))
            .query("groupId", group_id)
            .query("accountId", account_id);
        Ok(Receipt::from(&self.caller.send(&call).await?))
    }

    /// Users and their status (v2), 100 ids per request, every page of each. Unknown ids are
    /// left out.
    pub async fn users_bulk(&self, account_ids: &[String]) -> Result<Vec<UserStatus>, ApiError> {
        for id in account_ids {
            checked_id(USERS_BULK, IdKind::Account, id)?;
        }
        let url = url_with(&self.base, &["api", "v2", "users-bulk"]);
        let mut found = Vec::new();
        for chunk in account_ids.chunks(BULK_IDS) {
            let call =
                Call::new(USERS_BULK, url.clone()).body(CallBody::Json(json!({ "accountIds": chunk })));
            let users: Vec<ApiUser> = CursorListing::new(call, V2_PAGE_SIZE)?
                .collect(&self.caller, &no_progress)
                .await?;
            found.extend(users.into_iter().map(|user| {
                let status = parse_status(user.account_status.as_deref());
                UserStatus {
                    user: User::from(user),
                    status,
                }
            }));
        }
        Ok(found)
    }

    /// The account's status, `None` when Confluence does not know the account.
    pub async fn status_of(&self, account_id: &str) -> Result<Option<AccountStatus>, ApiError> {
        Ok(self
            .users_bulk(&[account_id.to_owned()])
            .await?
            .into_iter()
            .find(|u| u.user.account_id == account_id)
            .map(|u| u.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_labels_start_with_their_method() {
        for endpoint in ENDPOINTS {
            let method = format!("{:?} ", endpoint.verb).to_uppercase();
            assert!(endpoint.label.starts_with(&method), "{}", endpoint.label);
        }
    }

    #[test]
    fn hidden_emails_and_statuses() {
        let user: ApiUser = serde_json::from_str(
            r#"{"accountId":"a","email":"","publicName":"A","accountStatus":"inactive"}"#,
        )
        .unwrap();
        assert_eq!(
            parse_status(user.account_status.as_deref()),
            AccountStatus::Inactive
        );
        let user = User::from(user);
        assert_eq!(user.email, None);
        assert_eq!(user.display_name.as_deref(), Some("A"));
        let absent: ApiUser = serde_json::from_str(r#"{"accountId":"b"}"#).unwrap();
        assert_eq!(User::from(absent).email, None);
        assert_eq!(parse_status(Some("unlicensed")), AccountStatus::Unknown);
    }
}
