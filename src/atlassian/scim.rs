//! The SCIM 2.0 client for Atlassian's user provisioning directory.
//!
//! - Finding uses the only filters Atlassian supports: one `eq` on `userName` or `externalId`
//!   (users) or `displayName` (groups), with the value quoted and escaped.
//! - Creating is idempotent in effect: a 409 means the user exists, so it is looked up by
//!   `userName` and returned (`created: false`), never reported as a failure. A 409 that is not
//!   that user (the `externalId` belongs to someone else) stays a permanent error.
//! - Deactivating (`PATCH active=false`) is **organization-wide**: the account loses every
//!   Atlassian product. The client does what it is told; policy decides whether to ask.
//! - Errors carry SCIM's `scimType`; `status` arrives as a string and is not relied on (the HTTP
//!   status is).
//! - Group membership does not grant product access; that needs a group-to-product mapping in
//!   Atlassian Administration, which no API here can see.

use handlers::identifier::IdKind;
use handlers::ports::{ScimGroup, ScimUser};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;

use super::error::ApiError;
use super::http::{ApiCaller, Call, CallBody, Endpoint, Receipt, Verb, checked_id, url_with};
use super::pagination::{IndexListing, PageProgress, no_progress};

const LIST_USERS: Endpoint = Endpoint::new(Verb::Get, "GET /Users", true);
/// A timed-out create may have happened: not retried blindly (a retry by the worker finds the
/// user through the 409).
const CREATE_USER: Endpoint = Endpoint::new(Verb::Post, "POST /Users", false);
const GET_USER: Endpoint = Endpoint::new(Verb::Get, "GET /Users/{id}", true);
/// Replacing `active` is idempotent.
const PATCH_USER: Endpoint = Endpoint::new(Verb::Patch, "PATCH /Users/{id}", true);
const LIST_GROUPS: Endpoint = Endpoint::new(Verb::Get, "GET /Groups", true);
/// Adding a member twice or removing an absent one changes nothing.
const PATCH_GROUP: Endpoint = Endpoint::new(Verb::Patch, "PATCH /Groups/{id}", true);

/// This client's endpoints (held to `config::ATLASSIAN_ENDPOINT_LABELS` by a test).
#[cfg(test)]
pub(super) const ENDPOINTS: [Endpoint; 6] = [
    LIST_USERS,
    CREATE_USER,
    GET_USER,
    PATCH_USER,
    LIST_GROUPS,
    PATCH_GROUP,
];

/// SCIM allows at most 100 per page.
const PAGE_SIZE: u32 = 100;
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// A user to provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScimUser {
    /// Usually the email; unique in the directory, compared without case.
    pub user_name: String,
    /// The IdP's id for the person.
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub email: Option<String>,
    pub active: bool,
}

/// The result of [`ScimClient::create_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimCreated {
    pub user: ScimUser,
    /// False when the user existed already (Atlassian answered 409).
    pub created: bool,
    pub request_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Extension {
    #[serde(default, rename = "atlassianAccountId")]
    atlassian_account_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiScimUser {
    id: String,
    user_name: String,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default, rename = "urn:scim:schemas:extension:atlassian-external:1.0")]
    extension: Option<Extension>,
}

impl From<ApiScimUser> for ScimUser {
    fn from(user: ApiScimUser) -> Self {
        ScimUser {
            id: user.id,
            user_name: user.user_name,
            external_id: user.external_id,
            // SCIM users are active unless the directory says otherwise.
            active: user.active.unwrap_or(true),
            atlassian_account_id: user.extension.and_then(|e| e.atlassian_account_id),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiScimGroup {
    id: String,
    display_name: String,
}

impl From<ApiScimGroup> for ScimGroup {
    fn from(group: ApiScimGroup) -> Self {
        ScimGroup {
            id: group.id,
            display_name: group.display_name,
        }
    }
}

/// `attribute eq "value"`, the value escaped for SCIM's filter grammar.
pub fn eq_filter(attribute: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{attribute} eq \"{escaped}\"")
}

fn patch(operations: Value) -> CallBody {
    CallBody::Scim(json!({ "schemas": [PATCH_OP], "Operations": operations }))
}

/// SCIM calls; cheap to clone.
#[derive(Debug, Clone)]
pub struct ScimClient {
    caller: ApiCaller,
    /// `…/scim/directory/{directoryId}`.
    base: Url,
}

impl ScimClient {
    pub fn new(caller: ApiCaller, base: Url) -> Self {
        ScimClient { caller, base }
    }

    /// Every resource of `resource` (`Users`, `Groups`) matching `filter`, every page.
    async fn list<A, T>(
        &self,
        endpoint: Endpoint,
        resource: &str,
        filter: Option<String>,
        progress: PageProgress<'_>,
    ) -> Result<Vec<T>, ApiError>
    where
        A: DeserializeOwned,
        T: From<A>,
    {
        let mut call = Call::new(endpoint, url_with(&self.base, &[resource]));
        if let Some(filter) = filter {
            call = call.query("filter", filter);
        }
        let found: Vec<A> = IndexListing::new(call, PAGE_SIZE)?
            .collect(&self.caller, progress)
            .await?;
        Ok(found.into_iter().map(T::from).collect())
    }

    async fn find_users(
        &self,
        filter: Option<String>,
        progress: PageProgress<'_>,
    ) -> Result<Vec<ScimUser>, ApiError> {
        self.list::<ApiScimUser, _>(LIST_USERS, "Users", filter, progress)
            .await
    }

    /// The user with this `userName` (compared without case, as SCIM does).
    pub async fn user_by_user_name(&self, user_name: &str) -> Result<Option<ScimUser>, ApiError> {
        Ok(self
            .find_users(Some(eq_filter("userName", user_name)), &no_progress)
            .await?
            .into_iter()
            .find(|u| u.user_name.eq_ignore_ascii_case(user_name)))
    }

    /// The user with this `externalId` (exact).
    pub async fn user_by_external_id(&self, external_id: &str) -> Result<Option<ScimUser>, ApiError> {
        Ok(self
            .find_users(Some(eq_filter("externalId", external_id)), &no_progress)
            .await?
            .into_iter()
            .find(|u| u.external_id.as_deref() == Some(external_id)))
    }

    /// Every user of the directory.
    pub async fn users(&self, progress: PageProgress<'_>) -> Result<Vec<ScimUser>, ApiError> {
        self.find_users(None, progress).await
    }

    /// The user with this SCIM id, `None` when there is none.
    pub async fn user(&self, id: &str) -> Result<Option<ScimUser>, ApiError> {
        let id = checked_id(GET_USER, IdKind::ScimUser, id)?;
        let call = Call::new(GET_USER, url_with(&self.base, &["Users", id]));
        match self.caller.send(&call).await {
            Ok(reply) => Ok(Some(reply.json::<ApiScimUser>(GET_USER.label)?.into())),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Provisions a user; an existing one (409) is found and returned with `created: false`.
    pub async fn create_user(&self, new: &NewScimUser) -> Result<ScimCreated, ApiError> {
        let mut body = json!({
            "schemas": [USER_SCHEMA],
            "userName": new.user_name,
            "active": new.active,
        });
        if let Some(external_id) = &new.external_id {
            body["externalId"] = json!(external_id);
        }
        if let Some(display_name) = &new.display_name {
            body["displayName"] = json!(display_name);
        }
        if new.given_name.is_some() || new.family_name.is_some() {
            body["name"] = json!({"givenName": new.given_name, "familyName": new.family_name});
        }
        if let Some(email) = &new.email {
            body["emails"] = json!([{"value": email, "type": "work", "primary": true}]);
        }
        let call = Call::new(CREATE_USER, url_with(&self.base, &["Users"])).body(CallBody::Scim(body));
        match self.caller.send(&call).await {
            Ok(reply) => Ok(ScimCreated {
                user: reply.json::<ApiScimUser>(CREATE_USER.label)?.into(),
                created: true,
                request_id: reply.request_id,
            }),
            Err(conflict) if conflict.status() == Some(409) => {
                // The same person exists when the userName matches and the IdP ids do not
                // disagree. Anything else (say, the externalId belongs to someone else) is a
                // conflict in the data, which no retry fixes: the 409 stands, permanent.
                let existing = self.user_by_user_name(&new.user_name).await?.filter(|user| {
                    match (&new.external_id, &user.external_id) {
                        (Some(wanted), Some(found)) => wanted == found,
                        _ => true,
                    }
                });
                match existing {
                    Some(user) => Ok(ScimCreated {
                        user,
                        created: false,
                        request_id: conflict.request_id().map(str::to_owned),
                    }),
                    None => Err(conflict),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Activates or deactivates the user. Deactivation is organization-wide.
    pub async fn set_active(&self, id: &str, active: bool) -> Result<Receipt, ApiError> {
        let id = checked_id(PATCH_USER, IdKind::ScimUser, id)?;
        let call = Call::new(PATCH_USER, url_with(&self.base, &["Users", id])).body(patch(
            json!([{"op": "replace", "path": "active", "value": active}]),
        ));
        Ok(Receipt::from(&self.caller.send(&call).await?))
    }

    async fn find_groups(
        &self,
        filter: Option<String>,
        progress: PageProgress<'_>,
    ) -> Result<Vec<ScimGroup>, ApiError> {
        self.list::<ApiScimGroup, _>(LIST_GROUPS, "Groups", filter, progress)
            .await
    }

    /// The group named exactly `display_name`. The directory's `eq` filter ignores case, so it
    /// may answer `Contractors` for `contractors`: a policy's `allowed_groups` names groups
    /// exactly, and another's members must not be added to a group it does not name.
    pub async fn group_by_display_name(&self, display_name: &str) -> Result<Option<ScimGroup>, ApiError> {
        Ok(self
            .find_groups(Some(eq_filter("displayName", display_name)), &no_progress)
            .await?
            .into_iter()
            .find(|group| group.display_name == display_name))
    }

    /// Every group of the directory.
    pub async fn groups(&self, progress: PageProgress<'_>) -> Result<Vec<ScimGroup>, ApiError> {
        self.find_groups(None, progress).await
    }

    /// Adds a user (by SCIM id) to a group. Membership alone grants no product access.
    pub async fn add_group_member(&self, group_id: &str, user_id: &str) -> Result<Receipt, ApiError> {
        let group_id = checked_id(PATCH_GROUP, IdKind::ScimGroup, group_id)?;
        let user_id = checked_id(PATCH_GROUP, IdKind::ScimUser, user_id)?;
        let call = Call::new(PATCH_GROUP, url_with(&self.base, &["Groups", group_id])).body(patch(
            json!([{"op": "add", "path": "members", "value": [{"value": user_id}]}]),
        ));
        Ok(Receipt::from(&self.caller.send(&call).await?))
    }

    /// Removes a user (by SCIM id) from a group.
    pub async fn remove_group_member(&self, group_id: &str, user_id: &str) -> Result<Receipt, ApiError> {
        let group_id = checked_id(PATCH_GROUP, IdKind::ScimGroup, group_id)?;
        let user_id = checked_id(PATCH_GROUP, IdKind::ScimUser, user_id)?;
        let path = format!("members[{}]", eq_filter("value", user_id));
        let call = Call::new(PATCH_GROUP, url_with(&self.base, &["Groups", group_id]))
            .body(patch(json!([{"op": "remove", "path": path}])));
        Ok(Receipt::from(&self.caller.send(&call).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATLASSIAN_EXTENSION: &str = "urn:scim:schemas:extension:atlassian-external:1.0";

    #[test]
    fn filters_are_quoted_and_escaped() {
        assert_eq!(eq_filter("userName", "a@b.c"), r#"userName eq "a@b.c""#);
        assert_eq!(
            eq_filter("displayName", r#"say "hi" \o/"#),
            r#"displayName eq "say \"hi\" \\o/""#
        );
    }

    #[test]
    fn users_read_the_atlassian_extension() {
        let user: ApiScimUser = serde_json::from_str(&format!(
            r#"{{"id":"s1","userName":"a@b.c","active":false,"{ATLASSIAN_EXTENSION}":{{"atlassianAccountId":"acc-1"}}}}"#
        ))
        .unwrap();
        let user = ScimUser::from(user);
        assert!(!user.active);
        assert_eq!(user.atlassian_account_id.as_deref(), Some("acc-1"));
    }
}
