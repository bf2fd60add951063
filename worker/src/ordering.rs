//! The order in which one operation's objects are written: what others depend on first.
//!
//! Applying, creating and replacing go Namespaces, CustomResourceDefinitions,
//! ServiceAccounts and RBAC, ConfigMaps and Secrets (and storage), Services, then workloads,
//! then everything else (custom resources, Ingresses, autoscalers, which refer to the
//! objects before them). Deleting goes in reverse, so a namespace or a definition is not
//! removed while what lives in it is still being deleted one by one. Objects of the same
//! rank keep the order they were submitted in. Results are reported in this applied order.

use longshore_contract::spec::{Action, Order};

/// Where a kind goes when applying; lower first.
pub fn rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "PriorityClass" | "StorageClass" => 2,
        "ServiceAccount" => 3,
        "ClusterRole" | "Role" => 4,
        "ClusterRoleBinding" | "RoleBinding" => 5,
        "ConfigMap" | "Secret" | "PersistentVolume" | "PersistentVolumeClaim" => 6,
        "LimitRange" | "ResourceQuota" | "NetworkPolicy" => 7,
        "Service" => 8,
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Pod"
        | "Job"
        | "CronJob"
        | "ReplicationController" => 9,
        _ => 10,
    }
}

/// Sorts `items` (each with its kind) into the order `action` writes them in (its
/// [`Order`] in the table of what actions accept).
pub fn sort<T>(action: Action, items: &mut [T], kind: impl Fn(&T) -> &str) {
    match action.accepts().order {
        Order::Dependencies => items.sort_by_key(|item| rank(kind(item))),
        // Reverse rank, the submitted order kept within a rank.
        Order::Reverse => items.sort_by_key(|item| std::cmp::Reverse(rank(kind(item)))),
        Order::AsGiven => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBMITTED: [&str; 8] = [
        "Deployment",
        "Service",
        "ConfigMap",
        "Widget",
        "RoleBinding",
        "CustomResourceDefinition",
        "Secret",
        "Namespace",
    ];

    #[test]
    fn apply_puts_what_others_need_first_and_keeps_the_order_within_a_rank() {
        let mut kinds = SUBMITTED;
        sort(Action::Apply, &mut kinds, |k| k);
        assert_eq!(
            kinds,
            [
                "Namespace",
                "CustomResourceDefinition",
                "RoleBinding",
                "ConfigMap",
                "Secret",
                "Service",
                "Deployment",
                "Widget"
            ]
        );
    }

    #[test]
    fn delete_goes_in_reverse_and_targets_of_other_actions_keep_their_order() {
        let mut kinds = SUBMITTED;
        sort(Action::Delete, &mut kinds, |k| k);
        assert_eq!(kinds.first(), Some(&"Widget"));
        assert_eq!(
            &kinds[kinds.len() - 2..],
            ["CustomResourceDefinition", "Namespace"]
        );
        let mut kinds = SUBMITTED;
        sort(Action::Patch, &mut kinds, |k| k);
        assert_eq!(kinds, SUBMITTED);
    }
}
