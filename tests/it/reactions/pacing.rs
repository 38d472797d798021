//! The pace of reactions across processes: every worker takes its share of the tenant's budget.

use super::{LONG, World, policies};
use crate::queue::eventually;

/// Two worker processes calling one tenant each take half of its budget (counted through
/// leases in the store they share).
#[tokio::test]
async fn worker_processes_share_the_tenant_budget() {
    let world = World::start(ann(), policies(LEAVER), |s| {
        s.atlassian.as_mut().unwrap().rate_limit.tenant_per_second = Some(20.0);
    })
    .await;
    let second =
        crate::helpers::TestApp::start_roles(world.app.settings.clone(), None, gatehouse::app::Roles::WORKER)
            .await;
    let share = |app: &crate::helpers::TestApp| {
        app.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("gatehouse_atlassian_budget_share{tenant=\"default\"} "))
            .map(|v| v.trim().to_owned())
    };
    eventually(LONG, "each process takes half", || async {
        share(&world.app).as_deref() == Some("0.5") && share(&second).as_deref() == Some("0.5")
    })
    .await;
    second.shutdown().await;
    world.stop().await;
}

const LEAVER: &str = r#"
[[policies]]
name = "leaver"
on = "user.deactivated"
actions = ["confluence.remove_from_all_groups"]
"#;

fn ann() -> gatehouse_sim::Seed {
    gatehouse_sim::Seed {
        users: vec![gatehouse_sim::SeedUser::new("ann", "Ann")],
        ..gatehouse_sim::Seed::default()
    }
}
