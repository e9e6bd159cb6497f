//! Deleting an Application: with the resources finalizer its objects are deleted first; without
//! it they stay.

use crate::common;

use capstan_api::application::SyncPolicyAutomated;
use capstan_controller::ops;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_deletes_objects_and_plain_delete_keeps_them() {
    let env = Env::start().await;
    env.commit(
        &[
            ("gone/cm.yaml", Some(&cm_yaml("gone", "1"))),
            ("kept/cm.yaml", Some(&cm_yaml("kept", "1"))),
        ],
        "first",
    );
    let automated = || {
        Some(SyncPolicyAutomated {
            prune: false,
            self_heal: false,
            allow_empty: false,
        })
    };
    env.create_app("gone", env.spec("gone", automated())).await;
    env.create_app("kept", env.spec("kept", automated())).await;
    for name in ["gone", "kept"] {
        env.until(name, "Synced", |a| sync_status(a) == "Synced")
            .await;
    }

    ops::delete(&env.apps, "gone", true).await.unwrap();
    ops::delete(&env.apps, "kept", false).await.unwrap();
    env.until_cm("gone", "the cascade to delete the object", |c| c.is_none())
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.apps.get_opt("gone").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the finalizer was never removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(env.apps.get_opt("kept").await.unwrap().is_none());
    assert!(
        env.cm("kept").await.is_some(),
        "a plain delete removed the objects"
    );
}
