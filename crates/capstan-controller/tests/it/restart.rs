//! A controller stopped in the middle of a multi-wave sync resumes it when started again: the
//! sync finishes and history has exactly one entry for it.

use crate::common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_interrupted_by_a_restart_finishes_with_one_history_entry() {
    let mut env = Env::start().await;
    env.start_a_sync_stuck_in_wave_zero("resumable").await;
    env.stop_controller();
    assert!(
        env.cm("after").await.is_none(),
        "wave 1 applied before wave 0 was healthy"
    );

    // The load balancer arrives while no controller runs.
    env.open_wave_zero().await;
    env.start_controller();
    env.until_the_resumed_sync_succeeded("resumable").await;
    env.until("resumable", "Synced and Healthy", |a| {
        sync_status(a) == "Synced" && health(a) == "Healthy"
    })
    .await;
}
