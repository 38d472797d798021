//! The pace of reactions across processes: every worker takes its share of the tenant's budget.

use super::{LONG, World, policies};
use crate::queue::eventually;

/// Two worker processes calling one tenant each take half of 95 % of its budget (counted
/// through leases in the store they share; several leave 5 % as slack together).
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
    let half = |app: &crate::helpers::TestApp| {
        share(app)
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| (v - 0.475).abs() < 1e-9)
    };
    eventually(LONG, "each process takes half of 95 %", || async {
        half(&world.app) && half(&second)
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
