//! Policies are independent of each other: one that cannot plan for an event (refused for good)
//! does not keep the others from planning and running; the event still ends as failed, naming
//! the policy.

use std::sync::Arc;

use async_trait::async_trait;
use gatehouse::reactions::executor::Executor;
use gatehouse::reactions::perform::{ActionError, Perform, Performed};
use gatehouse::reactions::{Directories, Planner, Reactor};
use gatehouse::worker::Process;
use handlers::ports::{AccountStatus, ConfluenceDirectory, ErrorKind, Group, PortError, User};
use handlers::{Action, Envelope, EventType, Handler, Plan, Ports, Scheme};

use crate::helpers::{TempDir, test_settings};

/// A directory with nothing in it (the handlers below read nothing).
struct Empty;

#[async_trait]
impl ConfluenceDirectory for Empty {
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
        Ok(None)
    }
}

/// A policy whose planning is refused for good (a provisioning request for someone else's
/// account, say).
struct Refusing;

#[async_trait]
impl Handler for Refusing {
    fn name(&self) -> &str {
        "refusing"
    }
    fn handles(&self, _: &EventType) -> bool {
        true
    }
    async fn plan(&self, _: &Envelope, _: &Ports<'_>) -> Result<Plan, PortError> {
        Err(PortError::permanent("not the person requested"))
    }
}

/// A policy that plans one action.
struct Planning;

#[async_trait]
impl Handler for Planning {
    fn name(&self) -> &str {
        "planning"
    }
    fn handles(&self, _: &EventType) -> bool {
        true
    }
    async fn plan(&self, envelope: &Envelope, _: &Ports<'_>) -> Result<Plan, PortError> {
        let mut plan = Plan::new("planning", envelope.id);
        plan.push(
            Action::ConfluenceRemoveMember {
                group_id: "g-1".into(),
                group_name: "team-1".into(),
                account_id: "ann".into(),
            },
            "ann leaves team-1",
        );
        Ok(plan)
    }
}

/// Performs everything, counting.
#[derive(Default)]
struct Counting(std::sync::Mutex<u32>);

#[async_trait]
impl Perform for Counting {
    async fn perform(&self, _: &Action, _: &Envelope) -> Result<Performed, ActionError> {
        *self.0.lock().unwrap() += 1;
        Ok(Performed::default())
    }
}

#[tokio::test]
async fn a_policy_that_cannot_plan_does_not_keep_the_others_from_running() {
    let dir = TempDir::new();
    let settings = test_settings(&dir);
    let store = gatehouse::store::Store::connect(&settings.store).await.unwrap();
    let audit = gatehouse::audit::AuditLog::from_settings(store.clone(), &settings);
    let performer = Arc::new(Counting::default());
    let executor = Executor::new(store.clone(), audit, performer.clone(), &settings);
    let planner = Planner::new(
        vec![Arc::new(Refusing), Arc::new(Planning)],
        Some(Directories {
            confluence: Arc::new(Empty),
            scim: None,
        }),
    );
    let reactor = Reactor::new("default", planner, executor, store.clone());
    let mut envelope = Envelope::new(
        EventType::UserRemoved,
        "relay",
        Scheme::StandardWebhooks,
        "relay:independence",
        serde_json::value::RawValue::from_string("{}".into()).unwrap(),
    );
    envelope.subject.account_id = Some("ann".into());

    let error = reactor.process(&envelope, 1).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Permanent);
    assert!(
        error
            .message
            .contains("policy `refusing`: not the person requested"),
        "{}",
        error.message
    );
    assert_eq!(
        *performer.0.lock().unwrap(),
        1,
        "the other policy's plan was performed"
    );
    store.close().await;
}
