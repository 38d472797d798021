//! Reads for one event's planning, each made once however many policies ask: two policies on
//! `user.deactivated` see the same account status and groups, and Atlassian is asked once (a
//! SCIM lookup by account id lists the whole directory).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use async_trait::async_trait;
use handlers::Ports;
use handlers::ports::{
    AccountStatus, ConfluenceDirectory, Group, PortError, ScimDirectory, ScimGroup, ScimUser, User,
};

/// Answers already read, by argument. Failures are not kept: the next policy asks again.
struct Memo<T>(Mutex<HashMap<String, T>>);

impl<T: Clone> Memo<T> {
    fn new() -> Self {
        Memo(Mutex::new(HashMap::new()))
    }

    async fn get<F>(&self, key: &str, read: impl FnOnce() -> F) -> Result<T, PortError>
    where
        F: Future<Output = Result<T, PortError>>,
    {
        if let Some(hit) = self.lock().get(key) {
            return Ok(hit.clone());
        }
        let value = read().await?;
        self.lock().insert(key.to_owned(), value.clone());
        Ok(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, T>> {
        crate::locking::lock(&self.0)
    }
}

/// `ports`, remembering every answer for as long as it lives (one envelope).
pub(super) struct ReadOnce<'a> {
    ports: Ports<'a>,
    groups_of: Memo<Vec<Group>>,
    members_of: Memo<Vec<User>>,
    group_by_name: Memo<Option<Group>>,
    account_status: Memo<Option<AccountStatus>>,
    user_by_user_name: Memo<Option<ScimUser>>,
    user_by_external_id: Memo<Option<ScimUser>>,
    user_by_account_id: Memo<Option<ScimUser>>,
    group_by_display_name: Memo<Option<ScimGroup>>,
}

impl<'a> ReadOnce<'a> {
    pub(super) fn new(ports: Ports<'a>) -> Self {
        ReadOnce {
            ports,
            groups_of: Memo::new(),
            members_of: Memo::new(),
            group_by_name: Memo::new(),
            account_status: Memo::new(),
            user_by_user_name: Memo::new(),
            user_by_external_id: Memo::new(),
            user_by_account_id: Memo::new(),
            group_by_display_name: Memo::new(),
        }
    }

    /// Ports that read through this memory.
    pub(super) fn ports(&self) -> Ports<'_> {
        Ports {
            confluence: self,
            scim: self.ports.scim.map(|_| self as &dyn ScimDirectory),
        }
    }

    fn scim(&self) -> Result<&'a dyn ScimDirectory, PortError> {
        self.ports
            .scim
            .ok_or_else(|| PortError::permanent("no SCIM directory is configured"))
    }
}

#[async_trait]
impl ConfluenceDirectory for ReadOnce<'_> {
    async fn groups_of(&self, account_id: &str) -> Result<Vec<Group>, PortError> {
        let confluence = self.ports.confluence;
        self.groups_of
            .get(account_id, || confluence.groups_of(account_id))
            .await
    }

    async fn members_of(&self, group_id: &str) -> Result<Vec<User>, PortError> {
        let confluence = self.ports.confluence;
        self.members_of
            .get(group_id, || confluence.members_of(group_id))
            .await
    }

    async fn group_by_name(&self, name: &str) -> Result<Option<Group>, PortError> {
        let confluence = self.ports.confluence;
        self.group_by_name
            .get(name, || confluence.group_by_name(name))
            .await
    }

    async fn account_status(&self, account_id: &str) -> Result<Option<AccountStatus>, PortError> {
        let confluence = self.ports.confluence;
        self.account_status
            .get(account_id, || confluence.account_status(account_id))
            .await
    }
}

#[async_trait]
impl ScimDirectory for ReadOnce<'_> {
    async fn user_by_user_name(&self, user_name: &str) -> Result<Option<ScimUser>, PortError> {
        let scim = self.scim()?;
        self.user_by_user_name
            .get(user_name, || scim.user_by_user_name(user_name))
            .await
    }

    async fn user_by_external_id(&self, external_id: &str) -> Result<Option<ScimUser>, PortError> {
        let scim = self.scim()?;
        self.user_by_external_id
            .get(external_id, || scim.user_by_external_id(external_id))
            .await
    }

    async fn user_by_account_id(&self, account_id: &str) -> Result<Option<ScimUser>, PortError> {
        let scim = self.scim()?;
        self.user_by_account_id
            .get(account_id, || scim.user_by_account_id(account_id))
            .await
    }

    async fn group_by_display_name(&self, display_name: &str) -> Result<Option<ScimGroup>, PortError> {
        let scim = self.scim()?;
        self.group_by_display_name
            .get(display_name, || scim.group_by_display_name(display_name))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts status reads; the first one fails.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl ConfluenceDirectory for Counting {
        async fn groups_of(&self, _: &str) -> Result<Vec<Group>, PortError> {
            Ok(Vec::new())
        }
        async fn members_of(&self, _: &str) -> Result<Vec<User>, PortError> {
            Ok(Vec::new())
        }
        async fn group_by_name(&self, _: &str) -> Result<Option<Group>, PortError> {
            Ok(None)
        }
        async fn account_status(&self, _: &str) -> Result<Option<AccountStatus>, PortError> {
            match self.0.fetch_add(1, Ordering::SeqCst) {
                0 => Err(PortError::transient("blip")),
                _ => Ok(Some(AccountStatus::Inactive)),
            }
        }
    }

    #[tokio::test]
    async fn each_answer_is_read_once_and_failures_are_not_kept() {
        let directory = Counting::default();
        let reads = ReadOnce::new(Ports {
            confluence: &directory,
            scim: None,
        });
        let ports = reads.ports();
        assert!(ports.confluence.account_status("a").await.is_err());
        for _ in 0..3 {
            assert_eq!(
                ports.confluence.account_status("a").await.unwrap(),
                Some(AccountStatus::Inactive)
            );
        }
        assert_eq!(
            directory.0.load(Ordering::SeqCst),
            2,
            "one failure, then one read"
        );
        assert!(ports.scim.is_none());
    }
}
