//! Names, labels and annotations of the objects a migration creates.
//!
//! Transfer objects (receiver and sender pods, their Secrets, the Service
//! and the endpoint) all carry [`TRANSFER_LABEL`], which is how cleanup
//! finds them. What stays after a migration (destination namespaces and
//! PVCs) carries [`MIGRATED_BY_LABEL`] instead, so no cleanup selector can
//! ever match it.

use sha2::{Digest, Sha256};

/// On every transfer object; the value is the migration's name.
pub const TRANSFER_LABEL: &str = "mover.io/transfer";
/// `receiver` or `sender`.
pub const ROLE_LABEL: &str = "mover.io/role";
/// On sender objects: the (label-safe) name of the PVC they copy.
pub const PVC_LABEL: &str = "mover.io/pvc";
/// On destination namespaces and PVCs: the migration that made them.
pub const MIGRATED_BY_LABEL: &str = "mover.io/migrated-by";
/// On destination PVCs: where the data came from, `namespace/name`.
pub const SOURCE_ANNOTATION: &str = "mover.io/source";
/// On destination PVCs: when the last copy finished (RFC 3339).
pub const SYNCED_AT_ANNOTATION: &str = "mover.io/synced-at";
/// On destination PVCs: `stage` or `final`, the kind of the last finished
/// copy. A final copy marks the PVC done: later runs skip it unless they
/// are stage runs.
pub const SYNC_KIND_ANNOTATION: &str = "mover.io/sync-kind";

/// On quiesced source workloads: the values they had before the migration
/// stopped them, as JSON text (`null` for a field that was unset), so that
/// unquiesce (after a rollback, a crash or in a later run) restores exactly
/// what the user had. Written in the same patch that stops the workload and
/// never overwritten while present: a second quiesce keeps the original, so
/// the saved replica count can never become the quiesced 0. Kept on the
/// object itself, as MTC's `migration.openshift.io/preQuiesce*` are, because
/// it must survive the loss of everything else the migration wrote.
pub const PRE_QUIESCE_REPLICAS_ANNOTATION: &str = "mover.io/pre-quiesce-replicas";
/// CronJobs: `spec.suspend` before the quiesce.
pub const PRE_QUIESCE_SUSPEND_ANNOTATION: &str = "mover.io/pre-quiesce-suspend";
/// Jobs: `spec.parallelism` before the quiesce.
pub const PRE_QUIESCE_PARALLELISM_ANNOTATION: &str = "mover.io/pre-quiesce-parallelism";
/// DaemonSets: `spec.template.spec.nodeSelector` before the quiesce.
pub const PRE_QUIESCE_NODE_SELECTOR_ANNOTATION: &str = "mover.io/pre-quiesce-node-selector";
/// The nodeSelector key that parks a quiesced DaemonSet on no node (with
/// value [`QUIESCE_NODE_SELECTOR_VALUE`]). `mover.io/` is this project's
/// prefix and nothing we make labels nodes, so no node carries it: the
/// DaemonSet controller then wants a pod on no node and removes them all.
pub const QUIESCE_NODE_SELECTOR_KEY: &str = "mover.io/quiesced";
pub const QUIESCE_NODE_SELECTOR_VALUE: &str = "true";

/// On hook Jobs (beside [`TRANSFER_LABEL`], so that cleanup removes them):
/// the (label-safe) name of the hook.
pub const HOOK_LABEL: &str = "mover.io/hook";
/// The [`ROLE_LABEL`] value of hook Jobs.
pub const ROLE_HOOK: &str = "hook";

/// The receiver pod, its Secret, Service and endpoint, in each destination
/// namespace.
pub const RECEIVER: &str = "mover-receiver";
/// The port the receiver listens on inside its pod.
pub const RECEIVER_PORT: i32 = 8443;
/// Where the receiver mounts PVC `name`: `/volumes/<name>`.
pub const RECEIVER_VOLUMES_DIR: &str = "/volumes";
/// On a destination StorageClass: `"false"` says its provisioner makes no
/// `volumeMode: Block` volumes (for drivers preflight does not know as
/// file-only), so preflight refuses to map a Block PVC to it.
pub const BLOCK_VOLUMES_ANNOTATION: &str = "mover.io/block-volumes";
/// The user the mover image runs as (distroless's `nonroot`).
pub const MOVER_IMAGE_UID: i64 = 65532;
/// Where the receiver maps Block PVC `name`: `/dev/volumes/<name>`.
pub const RECEIVER_DEVICES_DIR: &str = "/dev/volumes";
/// Where a sender mounts the PVC it copies.
pub const SENDER_SOURCE_DIR: &str = "/source";
/// Where a sender maps the Block PVC it copies.
pub const SENDER_SOURCE_DEVICE: &str = "/dev/source";
/// Where both roles mount their TLS Secret.
pub const TLS_DIR: &str = "/tls";

pub const ROLE_RECEIVER: &str = "receiver";
pub const ROLE_SENDER: &str = "sender";

/// The sender pod (and Secret) for a PVC.
pub fn sender(pvc: &str) -> String {
    format!("mover-sender-{}", label_safe(pvc))
}

/// The Job of hook `hook` of `migration` in `phase` (`prebackup`, ...):
/// `<migration>-<phase>-<hook>` made a DNS label (the Job controller puts
/// the Job's name in its pods' `job-name` label, so 63 is the real limit),
/// so that distinct hooks keep distinct Jobs and a resumed run finds the
/// Job it created.
pub fn hook_job(migration: &str, phase: &str, hook: &str) -> String {
    dns_label(&format!("{migration}-{phase}-{hook}"), "hook")
}

/// The first label of the host a namespace's receiver is reached at:
/// `mover-receiver-<namespace>`, as a router would generate it, unless a
/// long namespace name makes that more than the 63 characters a DNS label
/// may have.
pub fn receiver_host_label(namespace: &str) -> String {
    dns_label(&format!("{RECEIVER}-{namespace}"), RECEIVER)
}

/// Whether the router's generated host for a namespace's receiver Route
/// would be invalid, so that the orchestrator must name the host itself.
pub fn router_cannot_name_receiver(namespace: &str) -> bool {
    receiver_host_label(namespace) != format!("{RECEIVER}-{namespace}")
}

/// `full` if it is a valid DNS-1123 label; otherwise a readable prefix of
/// it and a hash of the whole (or `fallback` and the hash, when nothing of
/// it is readable), at most 63 characters.
fn dns_label(full: &str, fallback: &str) -> String {
    if full.len() <= 63 && crate::plan::check_dns_label(full).is_ok() {
        return full.to_string();
    }
    let digest = Sha256::digest(full.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let prefix: String = full
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63 - hash.len() - 1)
        .collect();
    let prefix = prefix.trim_matches('-');
    if prefix.is_empty() {
        format!("{fallback}-{hash}")
    } else {
        format!("{prefix}-{hash}")
    }
}

/// `value` if it is a valid label value; otherwise a readable prefix and a
/// hash of the whole, so that distinct PVC names stay distinct labels.
pub fn label_safe(value: &str) -> String {
    if crate::plan::check_label_value(value).is_ok() {
        return value.to_string();
    }
    let digest = Sha256::digest(value.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let prefix: String = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(50)
        .collect();
    let prefix = prefix.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// On the Velero objects a migration creates (Backups, Restores, the
/// resource modifier ConfigMap): the migration's name. Kept apart from
/// [`MIGRATED_BY_LABEL`], which marks what stays after a migration, and
/// from [`TRANSFER_LABEL`], which the backup's label selector keeps out.
pub const VELERO_MIGRATION_LABEL: &str = "mover.io/migration";

/// The name of a Velero object a migration makes for `purpose`
/// (`initial`, `restore`, ...): `<migration>-<purpose>`, made a valid
/// DNS-1123 subdomain (Velero object names are): lower case, `_` as `-`,
/// and a hash of the original when anything had to change, so two
/// migrations never share a name.
pub fn velero_name(migration: &str, purpose: &str) -> String {
    let wanted = format!("{migration}-{purpose}");
    let cleaned: String = wanted
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if cleaned == wanted && wanted.len() <= 200 {
        return wanted;
    }
    let digest = Sha256::digest(wanted.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let prefix: String = cleaned.chars().take(180).collect();
    format!("{prefix}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_safe_keeps_valid_values_and_hashes_long_ones() {
        assert_eq!(label_safe("data-0"), "data-0");
        let long = format!("{}.x", "a".repeat(70));
        let safe = label_safe(&long);
        assert!(crate::plan::check_label_value(&safe).is_ok(), "{safe}");
        assert_ne!(safe, label_safe(&format!("{}.y", "a".repeat(70))));
        assert_eq!(sender("data-0"), "mover-sender-data-0");
    }

    #[test]
    fn receiver_hosts_stay_dns_labels_for_long_namespaces() {
        assert_eq!(receiver_host_label("shop"), "mover-receiver-shop");
        let long = "n".repeat(63);
        let label = receiver_host_label(&long);
        assert!(label.len() <= 63, "{label}");
        assert!(crate::plan::check_dns_label(&label).is_ok(), "{label}");
        assert_ne!(label, receiver_host_label(&"n".repeat(62)));
    }

    #[test]
    fn hook_job_names_are_labels_and_distinct() {
        assert_eq!(hook_job("m1", "prebackup", "dump"), "m1-prebackup-dump");
        let long = "h".repeat(60);
        let a = hook_job("m1", "prerestore", &long);
        let b = hook_job("m1", "postrestore", &long);
        for name in [&a, &b] {
            assert!(name.len() <= 63, "{name}");
            crate::plan::check_dns_label(name).unwrap();
        }
        assert_ne!(a, b);
        assert_eq!(a, hook_job("m1", "prerestore", &long));
    }

    #[test]
    fn velero_names_are_dns_subdomains_and_distinct() {
        assert_eq!(velero_name("shop", "initial"), "shop-initial");
        let upper = velero_name("Shop_A", "initial");
        assert!(crate::plan::check_dns_subdomain(&upper).is_ok(), "{upper}");
        assert!(upper.starts_with("shop-a-initial-"), "{upper}");
        assert_ne!(upper, velero_name("shop-a", "initial"));
        assert_ne!(upper, velero_name("Shop-A", "initial"));
    }
}
