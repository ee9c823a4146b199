//! The `docker run` command line of one container of a pod: labels that
//! tie it to its cluster and pod, the pod's network (its own on the
//! cluster's Docker network, or the pod's first container's), user and
//! groups from the securityContext, env, mounts, command and args.

use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext};
use kube::ResourceExt as _;

use super::devices::Device;
use super::env::{expand, Environment};
use super::state::Waiting;
use super::volumes::Mount;
use super::{CONTAINER_NAME_LABEL, POD_UID_LABEL};
use crate::context::ClusterContext;
use crate::docker::{INSTANCE_LABEL, NETWORK_LABEL};

/// Label on a pod's containers: the name of the emulated cluster.
pub(super) const CLUSTER_LABEL: &str = "kube-emu.cluster";

/// Where a container's termination message goes when the spec names no
/// path.
const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// Everything one `docker run` needs besides the pod spec.
pub(super) struct Launch<'a> {
    pub ctx: &'a ClusterContext,
    pub pod: &'a Pod,
    pub container: &'a Container,
    /// How many containers this pod container has had before (names the
    /// Docker container uniquely).
    pub attempt: u32,
    pub image_user: &'a str,
    pub env: &'a [(String, String)],
    pub mounts: &'a [Mount],
    /// The devices of its `volumeDevices`.
    pub devices: &'a [Device],
    /// The Docker container holding the pod's network, for every container
    /// of the pod but the first.
    pub network_of: Option<&'a str>,
    /// The host file bound at the container's terminationMessagePath.
    pub termination_log: &'a Path,
}

impl Launch<'_> {
    /// The Docker container's name: the pod container's identity as the
    /// real dockershim spelled it, plus the cluster and emulator instance.
    pub(super) fn docker_name(&self) -> String {
        format!(
            "k8s_{}_{}_{}_{}_{}_{}-{}",
            self.container.name,
            self.pod.name_any(),
            self.pod.namespace().unwrap_or_default(),
            self.pod.uid().unwrap_or_default(),
            self.attempt,
            self.ctx.name,
            self.ctx.shared.instance
        )
    }

    /// The arguments of `docker run -d`.
    pub(super) fn docker_run_args(&self) -> Result<Vec<String>, Waiting> {
        let ctx = self.ctx;
        let pod = self.pod;
        let container = self.container;
        let mut args = vec!["--name".to_string(), self.docker_name()];
        let labels = [
            (INSTANCE_LABEL, ctx.shared.instance.clone()),
            (NETWORK_LABEL, ctx.network.clone()),
            (CLUSTER_LABEL, ctx.name.clone()),
            (POD_UID_LABEL, pod.uid().unwrap_or_default()),
            ("io.kubernetes.pod.name", pod.name_any()),
            (
                "io.kubernetes.pod.namespace",
                pod.namespace().unwrap_or_default(),
            ),
            (CONTAINER_NAME_LABEL, container.name.clone()),
        ];
        for (key, value) in labels {
            args.extend(["--label".to_string(), format!("{key}={value}")]);
        }

        match self.network_of {
            Some(first) => args.extend(["--network".to_string(), format!("container:{first}")]),
            None => {
                args.extend(["--network".to_string(), ctx.network.clone()]);
                args.extend(["--hostname".to_string(), hostname(pod)]);
                // Cluster DNS: the hosts both clusters' routers serve.
                let dns = ctx
                    .shared
                    .dns
                    .lock()
                    .map_err(|_| Waiting::creating("the DNS table is poisoned".to_string()))?;
                for (host, ip) in dns.iter() {
                    args.extend(["--add-host".to_string(), format!("{host}:{ip}")]);
                }
            }
        }

        args.extend(security_args(pod, container, self.image_user));

        for (name, value) in self.env {
            args.extend(["--env".to_string(), format!("{name}={value}")]);
        }
        if let Some(dir) = container
            .working_dir
            .as_deref()
            .filter(|dir| !dir.is_empty())
        {
            args.extend(["--workdir".to_string(), dir.to_string()]);
        }
        for mount in self.mounts {
            args.extend([
                "--mount".to_string(),
                bind_mount(&mount.source, &mount.target, mount.read_only),
            ]);
        }
        for device in self.devices {
            let access = if device.read_only { "r" } else { "rw" };
            args.extend([
                "--device".to_string(),
                format!("{}:{}:{access}", device.source.display(), device.target),
            ]);
        }
        let message_path = container
            .termination_message_path
            .as_deref()
            .filter(|path| !path.is_empty())
            .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH);
        args.extend([
            "--mount".to_string(),
            bind_mount(self.termination_log, message_path, false),
        ]);

        // Kubernetes' command replaces the image's entrypoint and args its
        // cmd; both expand $(VAR) references to the container's env.
        let env = Environment::from(self.env);
        let command: Vec<String> = container
            .command
            .iter()
            .flatten()
            .map(|part| expand(part, &env))
            .collect();
        let command_args = container.args.iter().flatten().map(|arg| expand(arg, &env));
        if let Some(entrypoint) = command.first() {
            args.extend(["--entrypoint".to_string(), entrypoint.clone()]);
        }
        args.push(container.image.clone().unwrap_or_default());
        args.extend(command.into_iter().skip(1));
        args.extend(command_args);
        Ok(args)
    }
}

/// User, groups and privileges: the container's securityContext over the
/// pod's.
fn security_args(pod: &Pod, container: &Container, image_user: &str) -> Vec<String> {
    let pod_context = pod_security(pod);
    let context = container.security_context.clone().unwrap_or_default();
    let mut args = Vec::new();
    let user = context.run_as_user.or(pod_context.run_as_user);
    let group = context.run_as_group.or(pod_context.run_as_group);
    let image_user = image_user
        .split(':')
        .next()
        .filter(|user| !user.is_empty())
        .unwrap_or("0");
    match (user, group) {
        (Some(user), Some(group)) => args.extend(["--user".to_string(), format!("{user}:{group}")]),
        (Some(user), None) => args.extend(["--user".to_string(), user.to_string()]),
        (None, Some(group)) => args.extend(["--user".to_string(), format!("{image_user}:{group}")]),
        (None, None) => {}
    }
    for group in pod_context
        .fs_group
        .iter()
        .chain(pod_context.supplemental_groups.iter().flatten())
    {
        args.extend(["--group-add".to_string(), group.to_string()]);
    }
    if context.read_only_root_filesystem == Some(true) {
        args.push("--read-only".to_string());
    }
    if context.privileged == Some(true) {
        args.push("--privileged".to_string());
    }
    if context.allow_privilege_escalation == Some(false) {
        args.extend([
            "--security-opt".to_string(),
            "no-new-privileges".to_string(),
        ]);
    }
    let capabilities = context.capabilities.unwrap_or_default();
    for (flag, list) in [
        ("--cap-add", capabilities.add),
        ("--cap-drop", capabilities.drop),
    ] {
        for capability in list.into_iter().flatten() {
            args.extend([flag.to_string(), capability]);
        }
    }
    args
}

/// Refuses to run a container as root when its securityContext (or the
/// pod's) says `runAsNonRoot`, with the real kubelet's messages.
pub(super) fn check_non_root(
    pod: &Pod,
    container: &Container,
    image_user: &str,
) -> Result<(), Waiting> {
    let pod_context = pod_security(pod);
    let context = container.security_context.clone().unwrap_or_default();
    if context.run_as_non_root.or(pod_context.run_as_non_root) != Some(true) {
        return Ok(());
    }
    let whose = format!(
        "(pod: \"{}\", container: {})",
        pod.name_any(),
        container.name
    );
    let user = match context.run_as_user.or(pod_context.run_as_user) {
        Some(user) => user,
        None => {
            let image_user = image_user.split(':').next().unwrap_or_default();
            if image_user.is_empty() {
                0
            } else {
                image_user.parse().map_err(|_| {
                    Waiting::config(format!(
                        "container has runAsNonRoot and image has non-numeric user ({image_user}), \
                         cannot verify user is non-root {whose}"
                    ))
                })?
            }
        }
    };
    if user == 0 {
        return Err(Waiting::config(format!(
            "container has runAsNonRoot and image will run as root {whose}"
        )));
    }
    Ok(())
}

fn pod_security(pod: &Pod) -> PodSecurityContext {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.security_context.clone())
        .unwrap_or_default()
}

/// The pod's hostname: `spec.hostname` or the pod's name, cut to the 63
/// characters a host name may have, as the real kubelet does.
fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.hostname.clone())
        .unwrap_or_else(|| pod.name_any());
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// A `--mount` value binding `source` at `target`; fields are quoted as
/// CSV so paths with commas survive.
fn bind_mount(source: &Path, target: &str, read_only: bool) -> String {
    let quote = |field: String| {
        if field.contains([',', '"']) {
            format!("\"{}\"", field.replace('"', "\"\""))
        } else {
            field
        }
    };
    let mut fields = vec![
        "type=bind".to_string(),
        quote(format!("source={}", source.display())),
        quote(format!("target={target}")),
    ];
    if read_only {
        fields.push("readonly".to_string());
    }
    fields.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_fields_with_commas_are_quoted() {
        assert_eq!(
            bind_mount(Path::new("/a,b"), "/data", true),
            "type=bind,\"source=/a,b\",target=/data,readonly"
        );
    }

    #[test]
    fn the_security_context_gives_user_and_groups() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p" },
            "spec": {
                "securityContext": { "runAsUser": 1000, "fsGroup": 2000, "supplementalGroups": [3000] },
                "containers": [{ "name": "c", "securityContext": { "runAsGroup": 10, "readOnlyRootFilesystem": true } }]
            }
        }))
        .expect("a valid pod");
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        assert_eq!(
            security_args(&pod, container, ""),
            [
                "--user",
                "1000:10",
                "--group-add",
                "2000",
                "--group-add",
                "3000",
                "--read-only"
            ]
        );
    }
}
