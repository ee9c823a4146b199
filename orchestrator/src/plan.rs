//! The migration plan: what the user asked for, from a YAML file and/or
//! command-line flags, checked for consistency before any cluster is asked
//! anything.
//!
//! [`PlanFile`] is the YAML as written; [`Plan`] is the merged, validated
//! result the stages work from. Every problem found is reported at once,
//! each naming the file and field it comes from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The plan file, as written. Every field is optional so that flags can
/// supply or override it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanFile {
    /// Names this migration: labels on everything it creates, so that a
    /// second run resumes and `cleanup` finds its objects.
    pub name: Option<String>,
    #[serde(default)]
    pub source: ClusterRef,
    #[serde(default)]
    pub destination: ClusterRef,
    /// `ns` (same name on both sides) or `src:dst`.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// PVCs to copy as `namespace/name`; empty means every PVC of the
    /// namespaces.
    #[serde(default)]
    pub pvcs: Vec<String>,
    /// Source storage class to destination storage class.
    #[serde(default)]
    pub storage_class_mapping: BTreeMap<String, String>,
    /// Source access mode to destination access mode.
    #[serde(default)]
    pub access_mode_mapping: BTreeMap<String, String>,
    pub endpoint: Option<EndpointType>,
    /// With `endpoint: ingress`: receivers get the host
    /// `mover-receiver-<namespace>.<ingressDomain>`.
    pub ingress_domain: Option<String>,
    /// Seconds to wait for the endpoint (Route admitted, load balancer
    /// address) and for the receiver to start.
    pub endpoint_timeout: Option<u64>,
    /// Copy while the applications run; later runs copy again.
    pub stage: Option<bool>,
    pub mover_image: Option<String>,
    /// Attempts after the first for a sender that fails with an error
    /// retrying may fix.
    pub retries: Option<u32>,
    /// Senders running at once.
    pub concurrency: Option<usize>,
    /// An HTTP proxy senders reach the receivers' endpoint through (a
    /// CONNECT tunnel): `http://[user:password@]host:port`.
    pub proxy: Option<String>,
    /// The most each sender may send per second, e.g. `50M` (K, M, G are
    /// powers of 1024): keeps a migration from filling a shared link.
    pub bandwidth_limit: Option<String>,
    /// Connections each sender carries its volume's data over (1 to 8):
    /// more than one for long-distance links, where one TCP connection's
    /// window limits the rate. Default 1.
    pub streams: Option<u32>,
    /// Direct image migration: the two clusters' registries. Without this
    /// section only volumes move.
    pub images: Option<ImagesPlan>,
    /// Whether a final migration stops the source application (scales
    /// its workloads to zero) before the final volume copy. Default true.
    pub quiesce: Option<bool>,
    /// Move only volumes (and images): no Velero backup and restore of
    /// the namespaces' other resources. Default false.
    pub volumes_only: Option<bool>,
    /// Carry on when Velero ends a backup or restore PartiallyFailed
    /// (its errors are reported). Default false: the migration fails.
    pub allow_partial: Option<bool>,
    /// Seconds the restored application has to become ready on the
    /// destination. Default 600.
    pub verify_timeout: Option<u64>,
    /// Where Velero runs on both clusters (default: namespace `velero`,
    /// the default BackupStorageLocation).
    pub velero: Option<crate::velero::VeleroConfig>,
    /// Jobs run before and after the backup and the restore of a final
    /// migration, as MTC's MigHooks.
    #[serde(default)]
    pub hooks: Vec<crate::hooks::Hook>,
    /// Resources and priority of the sender and receiver pods.
    pub transfer_pods: Option<TransferPods>,
}

/// How the transfer pods (senders, receivers) are sized and scheduled.
/// Requests and limits are always set, because a namespace under a
/// ResourceQuota admits no pod without them.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferPods {
    /// Default: requests cpu 100m, memory 256Mi; limits cpu 2, memory 2Gi
    /// (a mover's memory stays flat whatever the volume's size).
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// A PriorityClass for the transfer pods, so that a busy cluster does
    /// not preempt them.
    pub priority_class_name: Option<String>,
}

impl TransferPods {
    /// The resources to give each transfer pod's container: the plan's,
    /// with the defaults for whatever it leaves out.
    pub fn resources(&self) -> k8s_openapi::api::core::v1::ResourceRequirements {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let fill = |given: Option<&BTreeMap<String, Quantity>>, cpu: &str, memory: &str| {
            let mut map = given.cloned().unwrap_or_default();
            map.entry("cpu".into())
                .or_insert_with(|| Quantity(cpu.into()));
            map.entry("memory".into())
                .or_insert_with(|| Quantity(memory.into()));
            Some(map)
        };
        let given = self.resources.clone().unwrap_or_default();
        k8s_openapi::api::core::v1::ResourceRequirements {
            requests: fill(given.requests.as_ref(), "100m", "256Mi"),
            limits: fill(given.limits.as_ref(), "2", "2Gi"),
            ..Default::default()
        }
    }
}

/// The registries of direct image migration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagesPlan {
    pub source: RegistrySpec,
    pub destination: RegistrySpec,
}

/// One cluster's internal registry, as the orchestrator reaches it and as
/// the cluster's ImageStreams name it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrySpec {
    /// The registry's exposed route: `https://host[:port]` (or `http://`
    /// for a registry without TLS).
    pub url: String,
    /// The `host[:port]` names image references in ImageStreams use for
    /// this registry (e.g. `image-registry.openshift-image-registry.svc:5000`).
    /// Source references with another host are external and left alone;
    /// destination ImageStreams point at the first name. Default: the
    /// host of `url`.
    #[serde(default)]
    pub internal_hosts: Vec<String>,
    /// Basic-auth user (with `passwordFile`).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A file holding a bearer token (an OpenShift service-account token).
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle to trust instead of the system's roots.
    pub ca_bundle: Option<PathBuf>,
    /// Skip TLS verification (only when asked for).
    #[serde(default)]
    pub insecure: bool,
}

/// How to reach one cluster: a kubeconfig file (default: `$KUBECONFIG` or
/// `~/.kube/config`) and a context in it (default: its current context).
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRef {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// How senders reach the destination's receiver.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EndpointType {
    /// An OpenShift Route with TLS passthrough on 443.
    #[default]
    Route,
    /// An Ingress with SSL passthrough (ingress-nginx).
    Ingress,
    /// A Service of type LoadBalancer.
    Loadbalancer,
    /// A Service of type NodePort on the nodes' addresses.
    Nodeport,
}

impl fmt::Display for EndpointType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointType::Route => "route",
            EndpointType::Ingress => "ingress",
            EndpointType::Loadbalancer => "loadbalancer",
            EndpointType::Nodeport => "nodeport",
        })
    }
}

/// What the command line adds to, or overrides in, the plan file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct PlanFlags {
    /// Plan file (YAML); flags override its fields.
    #[arg(long, short = 'f')]
    pub plan: Option<PathBuf>,
    /// Migration name [default: "migration"].
    #[arg(long)]
    pub name: Option<String>,
    /// Kubeconfig for the source cluster.
    #[arg(long)]
    pub source_kubeconfig: Option<PathBuf>,
    /// Context of the source cluster.
    #[arg(long)]
    pub source_context: Option<String>,
    /// Kubeconfig for the destination cluster.
    #[arg(long)]
    pub destination_kubeconfig: Option<PathBuf>,
    /// Context of the destination cluster.
    #[arg(long)]
    pub destination_context: Option<String>,
    /// Namespace to migrate, `ns` or `src:dst` (repeatable; replaces the
    /// plan's list).
    #[arg(long = "namespace", short = 'n', value_name = "NS[:DEST]")]
    pub namespaces: Vec<String>,
    /// PVC to copy, `namespace/name` (repeatable; default: all).
    #[arg(long = "pvc", value_name = "NS/NAME")]
    pub pvcs: Vec<String>,
    /// Storage class mapping `source=destination` (repeatable).
    #[arg(long = "storage-class", value_name = "SRC=DST")]
    pub storage_classes: Vec<String>,
    /// Access mode mapping `source=destination` (repeatable).
    #[arg(long = "access-mode", value_name = "SRC=DST")]
    pub access_modes: Vec<String>,
    /// How senders reach the receiver.
    #[arg(long, value_enum)]
    pub endpoint: Option<EndpointType>,
    /// DNS domain for Ingress hosts (with --endpoint ingress).
    #[arg(long)]
    pub ingress_domain: Option<String>,
    /// Seconds to wait for the endpoint and the receiver [default: 120].
    #[arg(long)]
    pub endpoint_timeout: Option<u64>,
    /// Stage migration: copy while the applications run; may be repeated.
    #[arg(long)]
    pub stage: bool,
    /// The mover container image.
    #[arg(long)]
    pub mover_image: Option<String>,
    /// Retries of a failed sender [default: 3].
    #[arg(long)]
    pub retries: Option<u32>,
    /// Senders at once [default: 4].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// HTTP proxy the senders reach the receivers through:
    /// http://[USER:PASSWORD@]HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Most bytes per second each sender sends, e.g. 50M.
    #[arg(long, value_name = "RATE")]
    pub bandwidth_limit: Option<String>,
    /// Connections each sender carries its volume's data over, 1 to 8
    /// [default: 1].
    #[arg(long, value_name = "N")]
    pub streams: Option<u32>,
    /// Do not migrate images even though the plan names registries.
    #[arg(long)]
    pub skip_images: bool,
    /// Final migration without stopping the source application (its PVCs'
    /// copies are then recorded as stage copies).
    #[arg(long)]
    pub no_quiesce: bool,
    /// Move only volumes and images, not the namespaces' other resources.
    #[arg(long)]
    pub volumes_only: bool,
    /// Carry on when Velero ends a backup or restore PartiallyFailed.
    #[arg(long)]
    pub allow_partial: bool,
    /// Seconds the restored application has to become ready [default: 600].
    #[arg(long)]
    pub verify_timeout: Option<u64>,
}

/// The default image when neither the plan nor a flag names one.
pub const DEFAULT_MOVER_IMAGE: &str = concat!("mover:", env!("CARGO_PKG_VERSION"));

/// A validated plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub source: ClusterRef,
    pub destination: ClusterRef,
    pub namespaces: Vec<NamespaceMapping>,
    pub pvcs: PvcSelection,
    pub storage_class_mapping: BTreeMap<String, String>,
    pub access_mode_mapping: BTreeMap<String, String>,
    pub endpoint: EndpointType,
    pub ingress_domain: Option<String>,
    pub endpoint_timeout: std::time::Duration,
    pub stage: bool,
    pub mover_image: String,
    pub retries: u32,
    pub concurrency: usize,
    /// The senders' proxy (recorded without its credentials).
    pub proxy: Option<mover::proxy::Proxy>,
    /// Bytes per second each sender may send.
    pub bandwidth_limit: Option<u64>,
    /// Connections each sender's data goes over (`mover send --streams`).
    pub streams: u32,
    pub images: Option<ImagesPlan>,
    /// A final run stops the source application first.
    pub quiesce: bool,
    /// Velero moves the namespaces' other resources.
    pub resources: bool,
    pub allow_partial: bool,
    pub verify_timeout: std::time::Duration,
    pub velero: crate::velero::VeleroConfig,
    pub hooks: Vec<crate::hooks::Hook>,
    pub transfer_pods: TransferPods,
}

/// A source namespace and the destination namespace it becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceMapping {
    pub source: String,
    pub destination: String,
}

/// Which PVCs to copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PvcSelection {
    /// Every PVC of the plan's namespaces.
    All,
    /// These `(namespace, name)` pairs, in source namespaces.
    Named(Vec<(String, String)>),
}

impl Plan {
    /// The destination namespace for a source namespace of the plan.
    pub fn destination_namespace(&self, source: &str) -> Option<&str> {
        self.namespaces
            .iter()
            .find(|m| m.source == source)
            .map(|m| m.destination.as_str())
    }

    /// The destination storage class for a source PVC's class.
    pub fn map_storage_class(&self, class: Option<&str>) -> Option<String> {
        class.map(|c| {
            self.storage_class_mapping
                .get(c)
                .cloned()
                .unwrap_or_else(|| c.to_string())
        })
    }

    /// The destination access modes for a source PVC's modes, without
    /// duplicates.
    pub fn map_access_modes(&self, modes: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for mode in modes {
            let mapped = self
                .access_mode_mapping
                .get(mode)
                .cloned()
                .unwrap_or_else(|| mode.clone());
            if !out.contains(&mapped) {
                out.push(mapped);
            }
        }
        out
    }
}

/// All the problems found in a plan, one per line.
#[derive(Debug)]
pub struct PlanErrors(pub Vec<String>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the plan has {} problem(s):", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanErrors {}

const ACCESS_MODES: [&str; 4] = [
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

/// Reads the plan file (if any), applies the flags, and validates.
pub fn load(flags: &PlanFlags) -> Result<Plan, PlanErrors> {
    let (file, origin) = match &flags.plan {
        Some(path) => (read_file(path)?, path.display().to_string()),
        None => (PlanFile::default(), "command line".to_string()),
    };
    resolve(file, flags, &origin)
}

fn read_file(path: &Path) -> Result<PlanFile, PlanErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PlanErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
    serde_yaml::from_str(&text).map_err(|e| PlanErrors(vec![format!("{}: {e}", path.display())]))
}

/// Merges flags over the file and validates every field, collecting all
/// problems rather than stopping at the first.
pub fn resolve(file: PlanFile, flags: &PlanFlags, origin: &str) -> Result<Plan, PlanErrors> {
    let mut problems = Vec::new();
    let name = flags
        .name
        .clone()
        .or(file.name)
        .unwrap_or_else(|| "migration".to_string());
    if let Err(e) = check_label_value(&name) {
        problems.push(format!("{origin}: name: {e}"));
    }

    let namespace_specs = if flags.namespaces.is_empty() {
        file.namespaces
    } else {
        flags.namespaces.clone()
    };
    let mut namespaces: Vec<NamespaceMapping> = Vec::new();
    for (i, spec) in namespace_specs.iter().enumerate() {
        let (source, destination) = spec.split_once(':').unwrap_or((spec, spec));
        let mut ok = true;
        let sides: &[&str] = if source == destination {
            &[source]
        } else {
            &[source, destination]
        };
        for ns in sides {
            if let Err(e) = check_dns_label(ns) {
                problems.push(format!("{origin}: namespaces[{i}] {spec:?}: {e}"));
                ok = false;
            }
        }
        if namespaces.iter().any(|m| m.source == source) {
            problems.push(format!(
                "{origin}: namespaces[{i}]: source namespace {source:?} is listed twice"
            ));
        } else if namespaces.iter().any(|m| m.destination == destination) {
            problems.push(format!(
                "{origin}: namespaces[{i}]: two namespaces map to {destination:?}"
            ));
        } else if ok {
            namespaces.push(NamespaceMapping {
                source: source.to_string(),
                destination: destination.to_string(),
            });
        }
    }
    if namespace_specs.is_empty() {
        problems.push(format!(
            "{origin}: namespaces: at least one namespace is needed (`namespaces:` or --namespace)"
        ));
    }

    let pvc_specs = if flags.pvcs.is_empty() {
        file.pvcs
    } else {
        flags.pvcs.clone()
    };
    let mut named = Vec::new();
    for (i, spec) in pvc_specs.iter().enumerate() {
        match spec.split_once('/') {
            Some((ns, pvc)) if check_dns_subdomain(pvc).is_ok() => {
                if !namespaces.iter().any(|m| m.source == ns) {
                    problems.push(format!(
                        "{origin}: pvcs[{i}] {spec:?}: namespace {ns:?} is not in the plan's namespaces"
                    ));
                }
                named.push((ns.to_string(), pvc.to_string()));
            }
            _ => problems.push(format!(
                "{origin}: pvcs[{i}] {spec:?}: expected NAMESPACE/NAME with a valid PVC name"
            )),
        }
    }

    let mut storage_class_mapping = file.storage_class_mapping;
    storage_class_mapping.extend(parse_pairs(
        &flags.storage_classes,
        "--storage-class",
        true,
        &mut problems,
    ));
    for (from, to) in &storage_class_mapping {
        // An empty source class is meaningful: static PVs.
        let source = (!from.is_empty()).then_some(from);
        for class in source.into_iter().chain([to]) {
            if let Err(e) = check_dns_subdomain(class) {
                problems.push(format!("{origin}: storageClassMapping {from}={to}: {e}"));
            }
        }
    }
    let mut access_mode_mapping = file.access_mode_mapping;
    access_mode_mapping.extend(parse_pairs(
        &flags.access_modes,
        "--access-mode",
        false,
        &mut problems,
    ));
    for (from, to) in &access_mode_mapping {
        for mode in [from, to] {
            if !ACCESS_MODES.contains(&mode.as_str()) {
                problems.push(format!(
                    "{origin}: accessModeMapping {from}={to}: unknown access mode {mode:?} \
                     (one of {})",
                    ACCESS_MODES.join(", ")
                ));
            }
        }
    }

    let streams = flags.streams.or(file.streams).unwrap_or(1);
    if !(1..=mover::wire::stripes::MAX_STREAMS).contains(&streams) {
        problems.push(format!(
            "{origin}: streams: {streams}: must be 1 to {}",
            mover::wire::stripes::MAX_STREAMS
        ));
    }
    let concurrency = flags.concurrency.or(file.concurrency).unwrap_or(4);
    if concurrency == 0 {
        problems.push(format!("{origin}: concurrency: must be at least 1"));
    }
    let mover_image = flags
        .mover_image
        .clone()
        .or(file.mover_image)
        .unwrap_or_else(|| DEFAULT_MOVER_IMAGE.to_string());
    if mover_image.trim().is_empty() || mover_image.contains(char::is_whitespace) {
        problems.push(format!(
            "{origin}: moverImage {mover_image:?}: not an image reference"
        ));
    }

    let proxy = flags.proxy.clone().or(file.proxy).and_then(|url| {
        url.parse::<mover::proxy::Proxy>()
            .map_err(|e| problems.push(format!("{origin}: {e}")))
            .ok()
    });

    let bandwidth_limit = flags
        .bandwidth_limit
        .clone()
        .or(file.bandwidth_limit)
        .and_then(|rate| {
            mover::net::parse_rate(&rate)
                .map_err(|e| problems.push(format!("{origin}: bandwidthLimit: {e}")))
                .ok()
        });

    let endpoint = flags.endpoint.or(file.endpoint).unwrap_or_default();
    let ingress_domain = flags.ingress_domain.clone().or(file.ingress_domain);
    match (&ingress_domain, endpoint) {
        (None, EndpointType::Ingress) => problems.push(format!(
            "{origin}: endpoint ingress needs ingressDomain (--ingress-domain) for the receivers' hosts"
        )),
        (Some(domain), _) => {
            if let Err(e) = check_dns_subdomain(domain) {
                problems.push(format!("{origin}: ingressDomain: {e}"));
            }
        }
        (None, _) => {}
    }

    let images = file.images.filter(|_| !flags.skip_images);
    if let Some(images) = &images {
        for (side, spec) in [
            ("source", &images.source),
            ("destination", &images.destination),
        ] {
            if let Err(e) = spec.check() {
                problems.push(format!("{origin}: images.{side}: {e}"));
            }
        }
    }

    let velero = file.velero.unwrap_or_default();
    problems.extend(velero.check().into_iter().map(|p| format!("{origin}: {p}")));
    if let Err(hook_problems) = crate::hooks::validate(&file.hooks, origin) {
        problems.extend(hook_problems);
    }

    if !problems.is_empty() {
        return Err(PlanErrors(problems));
    }
    Ok(Plan {
        name,
        source: merge_cluster(file.source, &flags.source_kubeconfig, &flags.source_context),
        destination: merge_cluster(
            file.destination,
            &flags.destination_kubeconfig,
            &flags.destination_context,
        ),
        namespaces,
        pvcs: if named.is_empty() {
            PvcSelection::All
        } else {
            PvcSelection::Named(named)
        },
        storage_class_mapping,
        access_mode_mapping,
        endpoint,
        ingress_domain,
        endpoint_timeout: std::time::Duration::from_secs(
            flags
                .endpoint_timeout
                .or(file.endpoint_timeout)
                .unwrap_or(120),
        ),
        stage: flags.stage || file.stage.unwrap_or(false),
        quiesce: !flags.no_quiesce && file.quiesce.unwrap_or(true),
        resources: !(flags.volumes_only || file.volumes_only.unwrap_or(false)),
        allow_partial: flags.allow_partial || file.allow_partial.unwrap_or(false),
        verify_timeout: std::time::Duration::from_secs(
            flags.verify_timeout.or(file.verify_timeout).unwrap_or(600),
        ),
        velero,
        hooks: file.hooks,
        transfer_pods: file.transfer_pods.unwrap_or_default(),
        mover_image,
        retries: flags.retries.or(file.retries).unwrap_or(3),
        concurrency,
        proxy,
        bandwidth_limit,
        streams,
        images,
    })
}

impl RegistrySpec {
    /// The `host[:port]` of `url`.
    pub fn url_host(&self) -> Option<&str> {
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))?;
        let host = rest.split('/').next()?;
        (!host.is_empty()).then_some(host)
    }

    /// The names ImageStreams use for this registry.
    pub fn internal_hosts(&self) -> Vec<String> {
        if self.internal_hosts.is_empty() {
            self.url_host().map(String::from).into_iter().collect()
        } else {
            self.internal_hosts.clone()
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.url_host().is_none() {
            return Err(format!(
                "url {:?}: expected https://host[:port] or http://host[:port]",
                self.url
            ));
        }
        if self.username.is_some() != self.password_file.is_some() {
            return Err("username and passwordFile go together".into());
        }
        if self.username.is_some() && self.token_file.is_some() {
            return Err("give either username/passwordFile or tokenFile, not both".into());
        }
        if self.insecure && self.ca_bundle.is_some() {
            return Err("insecure and caBundle contradict each other".into());
        }
        Ok(())
    }
}

/// The destination cluster the flags (and the plan file, if named) point
/// at, for commands that need only it (`status`), without validating the
/// rest of the plan.
pub fn destination_ref(flags: &PlanFlags) -> Result<ClusterRef, PlanErrors> {
    let file = match &flags.plan {
        Some(path) => read_file(path)?,
        None => PlanFile::default(),
    };
    Ok(merge_cluster(
        file.destination,
        &flags.destination_kubeconfig,
        &flags.destination_context,
    ))
}

fn merge_cluster(
    file: ClusterRef,
    kubeconfig: &Option<PathBuf>,
    context: &Option<String>,
) -> ClusterRef {
    ClusterRef {
        kubeconfig: kubeconfig.clone().or(file.kubeconfig),
        context: context.clone().or(file.context),
    }
}

/// `SOURCE=DESTINATION` pairs. An empty SOURCE is accepted where it means
/// something: `storageClassName: ""`, the PVCs bound to static PVs.
fn parse_pairs(
    specs: &[String],
    flag: &str,
    empty_source: bool,
    problems: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for spec in specs {
        match spec.split_once('=') {
            Some((from, to)) if (empty_source || !from.is_empty()) && !to.is_empty() => {
                out.insert(from.to_string(), to.to_string());
            }
            _ => problems.push(format!("{flag} {spec:?}: expected SOURCE=DESTINATION")),
        }
    }
    out
}

/// A DNS-1123 label: what namespace names must be.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name (1-63 characters from a-z 0-9 -, starting and ending \
             with a letter or digit)"
        ))
    }
}

/// A DNS-1123 subdomain: what PVC and storage class names must be.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| check_dns_label(label).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name (DNS subdomain: dot-separated labels of a-z 0-9 -)"
        ))
    }
}

/// A label value: at most 63 characters of `[A-Za-z0-9_.-]`, starting and
/// ending alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not usable as a label value (1-63 characters from A-Z a-z 0-9 - _ ., \
             starting and ending with a letter or digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> PlanFile {
        serde_yaml::from_str(text).expect("valid test YAML")
    }

    #[test]
    fn file_and_flags_merge_with_flags_winning() {
        let file = yaml(
            "name: m1\nnamespaces: [app, 'db:db-new']\npvcs: [db/data]\n\
             storageClassMapping: {gp2: standard}\nendpoint: nodeport\nretries: 5\n\
             source: {context: src}\n",
        );
        let flags = PlanFlags {
            destination_context: Some("dst".into()),
            storage_classes: vec!["fast=ssd".into(), "=standard".into()],
            concurrency: Some(2),
            stage: true,
            ..PlanFlags::default()
        };
        let plan = resolve(file, &flags, "plan.yaml").unwrap();
        assert_eq!(plan.name, "m1");
        assert_eq!(plan.destination_namespace("db"), Some("db-new"));
        assert_eq!(plan.destination_namespace("app"), Some("app"));
        assert_eq!(
            plan.pvcs,
            PvcSelection::Named(vec![("db".into(), "data".into())])
        );
        assert_eq!(
            plan.map_storage_class(Some("gp2")).as_deref(),
            Some("standard")
        );
        assert_eq!(plan.map_storage_class(Some("fast")).as_deref(), Some("ssd"));
        // storageClassName "" (static PVs) maps like any class.
        assert_eq!(
            plan.map_storage_class(Some("")).as_deref(),
            Some("standard")
        );
        assert_eq!(
            plan.map_storage_class(Some("other")).as_deref(),
            Some("other")
        );
        assert_eq!(plan.endpoint, EndpointType::Nodeport);
        assert_eq!(plan.source.context.as_deref(), Some("src"));
        assert_eq!(plan.destination.context.as_deref(), Some("dst"));
        assert_eq!((plan.retries, plan.concurrency, plan.stage), (5, 2, true));
        assert_eq!(plan.mover_image, DEFAULT_MOVER_IMAGE);
    }

    #[test]
    fn every_problem_is_listed_with_its_field() {
        let file = yaml(
            "name: 'bad name'\nnamespaces: [App, 'a:b', 'a:c']\npvcs: [other/x, nope]\n\
             accessModeMapping: {ReadWriteOnce: Sometimes}\nconcurrency: 0\nbandwidthLimit: fast\n\
             streams: 9\n",
        );
        let errors = resolve(file, &PlanFlags::default(), "p.yaml").unwrap_err();
        let text = errors.to_string();
        for expected in [
            "p.yaml: name:",
            "namespaces[0] \"App\"",
            "namespaces[2]: source namespace \"a\" is listed twice",
            "pvcs[0] \"other/x\": namespace \"other\" is not in the plan",
            "pvcs[1] \"nope\": expected NAMESPACE/NAME",
            "unknown access mode \"Sometimes\"",
            "concurrency: must be at least 1",
            "bandwidthLimit: \"fast\": expected bytes per second such as 50M",
            "streams: 9: must be 1 to 8",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(errors.0.len(), 9, "{text}");
    }

    #[test]
    fn unknown_fields_and_missing_namespaces_are_refused() {
        let err = serde_yaml::from_str::<PlanFile>("namespace: [a]\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `namespace`"),
            "{err}"
        );
        let errors = resolve(PlanFile::default(), &PlanFlags::default(), "command line")
            .unwrap_err()
            .to_string();
        assert!(errors.contains("at least one namespace"), "{errors}");
    }

    #[test]
    fn images_section_is_checked_and_can_be_skipped() {
        let text = "namespaces: [a]\nimages:\n  source: {url: 'https://reg.src:5000', \
                    internalHosts: ['image-registry.svc:5000']}\n  destination: {url: 'ftp://x', \
                    username: u}\n";
        let errors = resolve(yaml(text), &PlanFlags::default(), "p")
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("images.destination: url \"ftp://x\""),
            "{errors}"
        );
        let flags = PlanFlags {
            skip_images: true,
            ..PlanFlags::default()
        };
        assert!(resolve(yaml(text), &flags, "p").unwrap().images.is_none());
        let ok = "namespaces: [a]\nimages:\n  source: {url: 'https://reg.src:5000', \
                  internalHosts: ['image-registry.svc:5000']}\n  destination: {url: 'http://127.0.0.1:5001'}\n";
        let images = resolve(yaml(ok), &PlanFlags::default(), "p")
            .unwrap()
            .images
            .unwrap();
        assert_eq!(
            images.source.internal_hosts(),
            vec!["image-registry.svc:5000".to_string()]
        );
        assert_eq!(
            images.destination.internal_hosts(),
            vec!["127.0.0.1:5001".to_string()]
        );
    }

    #[test]
    fn access_modes_map_without_duplicates() {
        let file = yaml("namespaces: [a]\naccessModeMapping: {ReadWriteMany: ReadWriteOnce}\n");
        let plan = resolve(file, &PlanFlags::default(), "p").unwrap();
        assert_eq!(
            plan.map_access_modes(&["ReadWriteMany".into(), "ReadWriteOnce".into()]),
            vec!["ReadWriteOnce".to_string()]
        );
    }

    #[test]
    fn load_names_the_file_it_cannot_read_or_parse() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        let flags = PlanFlags {
            plan: Some(missing.clone()),
            ..PlanFlags::default()
        };
        let text = load(&flags).unwrap_err().to_string();
        assert!(text.contains(&missing.display().to_string()), "{text}");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "namespaces: {oops\n").unwrap();
        let flags = PlanFlags {
            plan: Some(bad.clone()),
            ..PlanFlags::default()
        };
        let text = load(&flags).unwrap_err().to_string();
        assert!(text.contains("bad.yaml"), "{text}");
    }

    #[test]
    fn proxy_is_checked_recorded_without_credentials_and_given_to_senders() {
        let file = yaml("namespaces: [app]\nproxy: http://bob:s%40cret@squid.corp:3128\n");
        let plan = resolve(file, &PlanFlags::default(), "plan.yaml").unwrap();
        let recorded = serde_json::to_value(&plan).unwrap();
        assert_eq!(recorded["proxy"], "http://squid.corp:3128");
        let target = crate::manifests::Target {
            connect: "route.example:443".into(),
            server_name: "route.example".into(),
        };
        let pod = crate::manifests::sender_pod(
            "app",
            "data",
            crate::manifests::VolumeMode::Filesystem,
            &plan,
            &crate::manifests::Placement::default(),
            &target,
        );
        // The URL, credentials and all, reaches the sender from its Secret,
        // never through its arguments.
        let container = &pod.spec.unwrap().containers[0];
        let args = container.args.clone().unwrap();
        assert!(
            !args.iter().any(|a| a.contains("squid") || a == "--proxy"),
            "{args:?}"
        );
        let env = container.env.clone().unwrap();
        let from = env[0]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (env[0].name.as_str(), from.name.as_str()),
            ("MOVER_PROXY", "mover-sender-data")
        );
        let secret = crate::manifests::sender_secret(
            "app",
            "data",
            &plan,
            "ca",
            &mover::certs::Pem {
                cert: "cert".into(),
                key: "key".into(),
            },
        );
        assert_eq!(
            secret.string_data.unwrap()[&from.key],
            "http://bob:s%40cret@squid.corp:3128"
        );

        let file = yaml("namespaces: [app]\nproxy: https://squid.corp:3128\n");
        let problems = resolve(file, &PlanFlags::default(), "plan.yaml")
            .unwrap_err()
            .0;
        assert_eq!(
            problems,
            [
                "plan.yaml: proxy \"https://squid.corp:3128\": only http:// proxies are supported \
              (the tunnel carries TLS already), not https://"
            ]
        );
    }
}
