//! Migration hooks, as MTC's MigHooks: a user's container (image, command,
//! service account) run as a Job in a named namespace of the source or
//! destination cluster before or after the backup or the restore, with its
//! log in the report and its failure stopping the migration.
//!
//! [`Hook`] is the plan's YAML; [`validate`] reports every problem of a
//! plan's hooks at once; [`job`] builds the Job as a plain value;
//! [`ensure`] makes one pass: creates the Job if it is missing and says
//! where it stands ([`HookState`]), reading the log of its pod once it has
//! finished. The engine calls `ensure` again until the state is final, and
//! keeps the deadline; the Job's own `activeDeadlineSeconds` bounds it on
//! the cluster side too, so a hook cannot run on after the orchestrator
//! dies.
//!
//! The Job carries the migration's [`TRANSFER_LABEL`], so cleanup removes
//! it with the other transfer objects, and its name is derived from the
//! migration, phase and hook, so a resumed run finds the Job (and the
//! outcome) of the run that was killed instead of running the hook twice.
//! A Job that exists is used as it is, even if the hook's definition
//! changed since: re-running a hook is the user's decision (delete the Job).
//!
//! Security: the pod is built to pass the `restricted` Pod Security
//! Standard, which most application namespaces enforce (and OpenShift's
//! restricted SCC): non-root, no privilege escalation, all capabilities
//! dropped, the RuntimeDefault seccomp profile. Non-root needs an image
//! whose user is not root or a user id: OpenShift assigns one from the
//! namespace's range; elsewhere set `runAsUser`, or the kubelet refuses an
//! image that runs as root ("container has runAsNonRoot and image will run
//! as root", which [`ensure`] reports). `runAsUser: 0` is the explicit
//! opt-out for hooks that need root, and then only runs where the
//! namespace admits privileged pods.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, LogParams, PostParams};
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::clusters::Cluster;
use crate::dvm::sender::{container_problem, termination};
use crate::kubeops::status_code;
use crate::names::{self, HOOK_LABEL, ROLE_HOOK, ROLE_LABEL, TRANSFER_LABEL};
use crate::plan::{check_dns_label, check_dns_subdomain};

/// The hook's container, whose log is read.
pub const CONTAINER: &str = "hook";
/// `activeDeadlineSeconds` when the plan gives none: MTC's default.
pub const DEFAULT_DEADLINE_SECONDS: i64 = 1800;
/// At most this much of a hook's log goes into the report (its end: a
/// failing hook says why last).
pub const LOG_LIMIT_BYTES: usize = 64 * 1024;
/// The log lines asked of the API server (then capped to
/// [`LOG_LIMIT_BYTES`]).
const LOG_TAIL_LINES: i64 = 1000;

/// The cluster a hook runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    /// As [`Cluster::side`] spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

/// When a hook runs, spelled as MTC's MigPlan spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
pub enum Phase {
    PreBackup,
    PostBackup,
    PreRestore,
    PostRestore,
}

impl Phase {
    /// The lowercase form used in Job names.
    pub fn slug(self) -> &'static str {
        match self {
            Phase::PreBackup => "prebackup",
            Phase::PostBackup => "postbackup",
            Phase::PreRestore => "prerestore",
            Phase::PostRestore => "postrestore",
        }
    }
}

/// One hook of the plan, as written in its `hooks:` list.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    /// Names the hook in the report and in its Job's name.
    pub name: String,
    pub cluster: Side,
    /// Where the Job runs (it must exist on that cluster).
    pub namespace: String,
    pub image: String,
    /// The container's command (its entrypoint is replaced).
    pub command: Vec<String>,
    /// The ServiceAccount the pod runs as; the namespace's `default`
    /// without one.
    #[serde(default)]
    pub service_account: Option<String>,
    pub phase: Phase,
    /// Seconds the Job may run before Kubernetes stops it and fails it;
    /// [`DEFAULT_DEADLINE_SECONDS`] without one.
    #[serde(default)]
    pub active_deadline_seconds: Option<i64>,
    /// Retries of a failed pod; 0 (no retry) without one, because a hook
    /// that quiesces or dumps something may not be safe to run twice.
    #[serde(default)]
    pub backoff_limit: Option<i32>,
    /// The user id to run as (see the module doc); the image's (or on
    /// OpenShift the namespace's) without one.
    #[serde(default)]
    pub run_as_user: Option<i64>,
}

/// Every problem of `hooks`, each naming its field as
/// `{origin}: hooks[i].field`, or nothing.
pub fn validate(hooks: &[Hook], origin: &str) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, hook) in hooks.iter().enumerate() {
        let mut problem = |field: &str, text: String| {
            problems.push(format!("{origin}: hooks[{i}].{field}: {text}"));
        };
        if let Err(e) = check_dns_label(&hook.name) {
            problem("name", e);
        }
        if !seen.insert((hook.phase, hook.name.as_str())) {
            problem(
                "name",
                format!(
                    "{:?} names two {:?} hooks; names must be unique within a phase",
                    hook.name, hook.phase
                ),
            );
        }
        if let Err(e) = check_dns_label(&hook.namespace) {
            problem("namespace", e);
        }
        if hook.image.trim().is_empty() || hook.image.chars().any(char::is_whitespace) {
            problem(
                "image",
                format!("{:?} is not an image reference", hook.image),
            );
        }
        if hook.command.first().is_none_or(|c| c.is_empty()) {
            problem(
                "command",
                "must name the program to run (a non-empty first element)".into(),
            );
        }
        if let Some(Err(e)) = hook.service_account.as_deref().map(check_dns_subdomain) {
            problem("serviceAccount", e);
        }
        if hook.active_deadline_seconds.is_some_and(|s| s <= 0) {
            problem(
                "activeDeadlineSeconds",
                "must be a positive number of seconds".into(),
            );
        }
        if hook.backoff_limit.is_some_and(|b| b < 0) {
            problem("backoffLimit", "must not be negative".into());
        }
        if hook.run_as_user.is_some_and(|u| u < 0) {
            problem("runAsUser", "must not be negative".into());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The Job's name for `hook` of `migration`.
pub fn job_name(migration: &str, hook: &Hook) -> String {
    names::hook_job(migration, hook.phase.slug(), &hook.name)
}

/// The labels of the Job and of its pod.
fn labels(migration: &str, hook: &Hook) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TRANSFER_LABEL.to_string(), migration.to_string()),
        (ROLE_LABEL.to_string(), ROLE_HOOK.to_string()),
        (HOOK_LABEL.to_string(), names::label_safe(&hook.name)),
    ])
}

/// The hook's Job (see the module doc for its security context).
pub fn job(migration: &str, hook: &Hook) -> Job {
    let labels = labels(migration, hook);
    let non_root = hook.run_as_user != Some(0);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(migration, hook)),
            namespace: Some(hook.namespace.clone()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(hook.backoff_limit.unwrap_or(0)),
            active_deadline_seconds: Some(
                hook.active_deadline_seconds
                    .unwrap_or(DEFAULT_DEADLINE_SECONDS),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: hook.service_account.clone(),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(non_root),
                        run_as_user: hook.run_as_user,
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![Container {
                        name: CONTAINER.into(),
                        image: Some(hook.image.clone()),
                        command: Some(hook.command.clone()),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            run_as_non_root: Some(non_root),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                add: None,
                            }),
                            ..SecurityContext::default()
                        }),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// Where a hook stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookState {
    /// Not finished. `waiting` says why its container cannot start, if
    /// that is so (ImagePullBackOff, a refused security context): the Job
    /// fails only at its deadline, and the user should know before.
    Running {
        waiting: Option<String>,
    },
    Succeeded {
        log: String,
    },
    /// The migration must stop; `reason` says why in the Job's and the
    /// container's words.
    Failed {
        reason: String,
        log: String,
    },
}

/// The pure decision, before the log is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Running { waiting: Option<String> },
    Succeeded,
    Failed { reason: String },
}

fn condition_true<'a>(
    job: &'a Job,
    kind: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == kind && c.status == "True")
}

/// Where `job` stands, from its conditions (the Job controller's verdict,
/// including its deadline and backoff limit), with its newest pod's exit
/// code and message in a failure's reason.
pub fn outcome(job: &Job, pod: Option<&Pod>) -> Outcome {
    if condition_true(job, "Complete").is_some() {
        return Outcome::Succeeded;
    }
    if let Some(failed) = condition_true(job, "Failed") {
        let mut reason = match failed.reason.as_deref() {
            Some("DeadlineExceeded") => format!(
                "ran longer than its activeDeadlineSeconds ({}s) and was stopped",
                job.spec
                    .as_ref()
                    .and_then(|s| s.active_deadline_seconds)
                    .unwrap_or_default()
            ),
            Some("BackoffLimitExceeded") => "its pod failed".to_string(),
            Some(other) => other.to_string(),
            None => "the Job failed".to_string(),
        };
        if let Some(message) = failed.message.as_deref().filter(|m| !m.is_empty()) {
            reason.push_str(&format!(" ({message})"));
        }
        if let Some((code, message)) = pod.and_then(termination) {
            reason.push_str(&format!("; container {CONTAINER} exited with code {code}"));
            if !message.is_empty() {
                reason.push_str(&format!(": {message}"));
            }
        } else if let Some(problem) = pod.and_then(container_problem) {
            reason.push_str(&format!("; container {CONTAINER}: {problem}"));
        }
        return Outcome::Failed { reason };
    }
    Outcome::Running {
        waiting: pod.and_then(container_problem),
    }
}

/// The last [`LOG_LIMIT_BYTES`] of `log`, cut at a character boundary.
pub fn cap_log(log: &str) -> String {
    if log.len() <= LOG_LIMIT_BYTES {
        return log.to_string();
    }
    let mut start = log.len() - LOG_LIMIT_BYTES;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    format!(
        "[first {start} bytes of the log left out]\n{}",
        &log[start..]
    )
}

/// The newest of the Job's pods (the controller's, by owner uid).
fn newest_pod<'a>(job: &Job, pods: &'a [Pod]) -> Option<&'a Pod> {
    let uid = job.metadata.uid.as_deref()?;
    pods.iter()
        .filter(|pod| {
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid)
        })
        .max_by(|a, b| {
            let created = |p: &Pod| p.metadata.creation_timestamp.clone().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
}

/// The hook container's log, capped; a log that cannot be read (the pod
/// is gone, the node unreachable) says so instead of failing the step.
async fn read_log(api: &Api<Pod>, pod: Option<&Pod>) -> String {
    let Some(name) = pod.and_then(|p| p.metadata.name.as_deref()) else {
        return "(no pod of the Job was found to read a log from)".into();
    };
    let params = LogParams {
        container: Some(CONTAINER.into()),
        tail_lines: Some(LOG_TAIL_LINES),
        limit_bytes: Some(LOG_LIMIT_BYTES as i64 * 2),
        ..LogParams::default()
    };
    match api.logs(name, &params).await {
        Ok(log) => cap_log(&log),
        Err(e) => format!("(the log of pod {name} could not be read: {e})"),
    }
}

/// One pass over `hook` of `migration` on `cluster` (see the module doc):
/// creates its Job if missing and returns its state.
pub async fn ensure(cluster: &Cluster, migration: &str, hook: &Hook) -> anyhow::Result<HookState> {
    anyhow::ensure!(
        cluster.side == hook.cluster.as_str(),
        "hook {}: runs on the {} cluster, not on {}",
        hook.name,
        hook.cluster.as_str(),
        cluster.describe()
    );
    let wanted = job(migration, hook);
    let name = job_name(migration, hook);
    let context = || {
        format!(
            "{}: hook {} (Job {}/{name})",
            cluster.describe(),
            hook.name,
            hook.namespace
        )
    };
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), &hook.namespace);
    let existing = jobs.get_opt(&name).await.with_context(context)?;
    let job = match existing {
        Some(job) => job,
        None => match jobs.create(&PostParams::default(), &wanted).await {
            Ok(job) => job,
            Err(e) if status_code(&e) == Some(409) => {
                jobs.get(&name).await.with_context(context)?
            }
            Err(e) => return Err(e).with_context(context),
        },
    };
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &hook.namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("{TRANSFER_LABEL}={migration}")))
        .await
        .with_context(context)?;
    let pod = newest_pod(&job, &listed.items);
    Ok(match outcome(&job, pod) {
        Outcome::Running { waiting } => HookState::Running { waiting },
        Outcome::Succeeded => HookState::Succeeded {
            log: read_log(&pods, pod).await,
        },
        Outcome::Failed { reason } => HookState::Failed {
            reason,
            log: read_log(&pods, pod).await,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hook() -> Hook {
        serde_yaml::from_str(
            "name: dump\ncluster: source\nnamespace: shop\nimage: busybox\n\
             command: [sh, -c, 'echo hi']\nphase: PreBackup\n",
        )
        .unwrap()
    }

    #[test]
    fn hooks_parse_from_the_plan_and_refuse_unknown_fields() {
        let hook = hook();
        assert_eq!(hook.cluster, Side::Source);
        assert_eq!(hook.phase, Phase::PreBackup);
        assert_eq!(hook.service_account, None);
        let error = serde_yaml::from_str::<Hook>(
            "name: a\ncluster: source\nnamespace: n\nimage: i\ncommand: [x]\nphase: PreBackup\n\
             serviceaccount: x\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("serviceaccount"), "{error}");
        assert!(serde_yaml::from_str::<Hook>(
            "name: a\ncluster: elsewhere\nnamespace: n\nimage: i\ncommand: [x]\nphase: PreBackup\n"
        )
        .is_err());
    }

    #[test]
    fn every_problem_is_listed_with_its_field() {
        let good = hook();
        let bad = Hook {
            name: "Dump!".into(),
            namespace: "".into(),
            image: "bad image".into(),
            command: vec![],
            service_account: Some("Not_Valid".into()),
            active_deadline_seconds: Some(0),
            backoff_limit: Some(-1),
            run_as_user: Some(-5),
            ..good.clone()
        };
        let problems = validate(&[good.clone(), bad, good], "plan.yaml").unwrap_err();
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(": ").nth(1).unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "hooks[1].name",
                "hooks[1].namespace",
                "hooks[1].image",
                "hooks[1].command",
                "hooks[1].serviceAccount",
                "hooks[1].activeDeadlineSeconds",
                "hooks[1].backoffLimit",
                "hooks[1].runAsUser",
                "hooks[2].name",
            ],
            "{problems:#?}"
        );
        assert!(problems[8].contains("unique within a phase"));
        assert!(validate(&[hook()], "plan.yaml").is_ok());
    }

    #[test]
    fn the_job_is_restricted_labelled_and_runs_once() {
        let built = job("m1", &hook());
        assert_eq!(built.metadata.name.as_deref(), Some("m1-prebackup-dump"));
        let labels = built.metadata.labels.clone().unwrap();
        assert_eq!(labels[TRANSFER_LABEL], "m1");
        assert_eq!(labels[HOOK_LABEL], "dump");
        let spec = built.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(DEFAULT_DEADLINE_SECONDS));
        assert_eq!(spec.template.metadata.unwrap().labels.unwrap(), labels);
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let security = pod.security_context.unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let container = &pod.containers[0];
        assert_eq!(container.command.clone().unwrap(), ["sh", "-c", "echo hi"]);
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.capabilities.unwrap().drop.unwrap(), ["ALL"]);

        let root = job(
            "m1",
            &Hook {
                run_as_user: Some(0),
                ..hook()
            },
        );
        let pod = root.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(false));
    }

    fn job_with(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "m1-prebackup-dump", "uid": "job-uid"},
            "spec": {"activeDeadlineSeconds": 60, "template": {}},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    fn pod_with(state: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "m1-prebackup-dump-x",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                    "name": "m1-prebackup-dump", "uid": "job-uid", "controller": true}]},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "hook", "ready": false,
                "restartCount": 0, "image": "busybox", "imageID": "", "state": state}]},
        }))
        .unwrap()
    }

    #[test]
    fn outcomes_come_from_the_job_conditions_and_name_the_failure() {
        let running = job_with(json!([]));
        assert_eq!(outcome(&running, None), Outcome::Running { waiting: None });
        let pulling = pod_with(json!({"waiting": {"reason": "ImagePullBackOff",
            "message": "manifest unknown"}}));
        assert_eq!(
            outcome(&running, Some(&pulling)),
            Outcome::Running {
                waiting: Some("ImagePullBackOff: manifest unknown".into())
            }
        );
        let done = job_with(json!([{"type": "Complete", "status": "True"}]));
        assert_eq!(outcome(&done, None), Outcome::Succeeded);

        let exited = pod_with(json!({"terminated": {"exitCode": 3, "reason": "Error",
            "message": "dump failed"}}));
        let failed = job_with(json!([{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]));
        assert_eq!(
            outcome(&failed, Some(&exited)),
            Outcome::Failed {
                reason: "its pod failed (Job has reached the specified backoff limit); \
                         container hook exited with code 3: dump failed"
                    .into()
            }
        );
        let deadline = job_with(json!([{"type": "Failed", "status": "True",
            "reason": "DeadlineExceeded"}]));
        assert_eq!(
            outcome(&deadline, None),
            Outcome::Failed {
                reason: "ran longer than its activeDeadlineSeconds (60s) and was stopped".into()
            }
        );
        assert_eq!(
            newest_pod(&failed, std::slice::from_ref(&exited)),
            Some(&exited)
        );
    }

    #[test]
    fn logs_are_capped_at_their_end() {
        assert_eq!(cap_log("short"), "short");
        let long = format!("{}é{}", "a".repeat(LOG_LIMIT_BYTES), "the end");
        let capped = cap_log(&long);
        assert!(capped.ends_with("the end"));
        assert!(capped.starts_with("[first "));
        assert!(capped.len() <= LOG_LIMIT_BYTES + 64);
    }
}
