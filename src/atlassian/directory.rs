//! The handlers' read-only ports ([`ConfluenceDirectory`], [`ScimDirectory`]) over the real
//! clients, so handlers plan against live Atlassian data without knowing HTTP.
//!
//! Every listing is complete (the clients page to the end) and every failure keeps its
//! transient/permanent classification for the worker.

use async_trait::async_trait;
use handlers::ports::{
    AccountStatus, ConfluenceDirectory, Group, PortError, ScimDirectory, ScimGroup, ScimUser, User,
};

use super::confluence::ConfluenceClient;
use super::pagination::no_progress;
use super::scim::ScimClient;

#[async_trait]
impl ConfluenceDirectory for ConfluenceClient {
    async fn groups_of(&self, account_id: &str) -> Result<Vec<Group>, PortError> {
        Ok(self.member_groups(account_id, &no_progress).await?)
    }

    async fn members_of(&self, group_id: &str) -> Result<Vec<User>, PortError> {
        Ok(self.group_members(group_id, &no_progress).await?)
    }

    async fn group_by_name(&self, name: &str) -> Result<Option<Group>, PortError> {
        Ok(self.group_named(name).await?)
    }

    async fn account_status(&self, account_id: &str) -> Result<Option<AccountStatus>, PortError> {
        Ok(self.status_of(account_id).await?)
    }
}

#[async_trait]
impl ScimDirectory for ScimClient {
    async fn user_by_user_name(&self, user_name: &str) -> Result<Option<ScimUser>, PortError> {
        Ok(ScimClient::user_by_user_name(self, user_name).await?)
    }

    async fn user_by_external_id(&self, external_id: &str) -> Result<Option<ScimUser>, PortError> {
        Ok(ScimClient::user_by_external_id(self, external_id).await?)
    }

    /// SCIM cannot filter on the Atlassian account, so this lists the directory (complete, paged)
    /// and looks for the user the Atlassian extension links to the account.
    /// The directory cannot be filtered by account id, only listed whole, by offset: a user
    /// deleted while it is read shifts the later pages and hides another. A leaver not found is
    /// looked for in a second listing before the plan says there is nothing to deactivate.
    async fn user_by_account_id(&self, account_id: &str) -> Result<Option<ScimUser>, PortError> {
        for _ in 0..2 {
            let users = self.users(&no_progress).await?;
            if let Some(user) = users
                .into_iter()
                .find(|u| u.atlassian_account_id.as_deref() == Some(account_id))
            {
                return Ok(Some(user));
            }
        }
        Ok(None)
    }

    async fn group_by_display_name(&self, display_name: &str) -> Result<Option<ScimGroup>, PortError> {
        Ok(ScimClient::group_by_display_name(self, display_name).await?)
    }
}
