//! `orchestrator`: drives a migration between two clusters. Volumes are
//! copied by `mover` pods the orchestrator deploys (DESIGN.md stages 1, 5
//! and 7); see the README's "Orchestrator" section.

use clap::{Parser, Subcommand, ValueEnum};
use orchestrator::clusters::Cluster;
use orchestrator::engine::{self, StartError};
use orchestrator::migrate::{self, exit};
use orchestrator::migration::store::Store;
use orchestrator::migration::RunKind;
use orchestrator::plan::{self, PlanFlags};

/// Migrates applications' volumes between Kubernetes clusters with mover.
#[derive(Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the migration ran and something failed (see the report)
  2  invalid command line or plan, or another kind of run of the plan is
     in flight
  3  preflight found problems; nothing was changed

A run's state is kept in a Migration resource (mover.io/v1alpha1) in the
destination cluster's namespace mover-system: running the same command
again after an interruption continues where it stopped.";

#[derive(Subcommand)]
enum Command {
    /// Migrate the plan's namespaces: images, volumes and (final runs)
    /// every other resource through Velero, with the source stopped.
    Migrate {
        #[command(flatten)]
        plan: PlanFlags,
        /// Report format, printed on stdout at the end.
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Undo a migration: delete what it created on the destination,
    /// restart the source application, remove its transfer and Velero
    /// objects.
    Rollback {
        #[command(flatten)]
        plan: PlanFlags,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Show where a migration stands: a run's name, or a plan's name for
    /// its latest run (reads the destination cluster only).
    Status {
        #[arg(value_name = "NAME")]
        run: String,
        #[command(flatten)]
        plan: PlanFlags,
    },
    /// Check the plan against both clusters and print what would be
    /// created and copied, changing nothing.
    Plan {
        #[command(flatten)]
        plan: PlanFlags,
    },
    /// Remove every transfer object the migration left on both clusters.
    Cleanup {
        #[command(flatten)]
        plan: PlanFlags,
    },
    /// Run as a controller in the host cluster, reconciling the
    /// orchestrator's resources (MigrationCluster) in one namespace.
    Controller {
        /// The namespace of the resources.
        #[arg(long, default_value = orchestrator::migration::NAMESPACE)]
        namespace: String,
        /// The host cluster's kubeconfig (default: $KUBECONFIG,
        /// ~/.kube/config, else the pod's service account).
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
        /// The kubeconfig's context (default: its current one).
        #[arg(long)]
        context: Option<String>,
        /// Migrations copying at once; the others wait their turn.
        #[arg(long, default_value_t = 2)]
        max_migrations: usize,
        /// Where to serve /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// Where to serve the web console (host:port), or `off`.
        #[arg(long, default_value = orchestrator::console::DEFAULT_LISTEN)]
        console_listen: orchestrator::console::Listen,
    },
    /// Print the CustomResourceDefinitions of the controller's resources,
    /// as YAML.
    Crds,
    /// Start a migration on a host cluster's controller: apply the plan
    /// file as a MigrationPlan (its clusters named by MigrationCluster),
    /// create a Migration of it, and follow it as `watch` does.
    Submit {
        /// The plan file.
        #[arg(short = 'f', long = "file")]
        file: std::path::PathBuf,
        /// A stage run (the applications keep running).
        #[arg(long, conflicts_with = "rollback")]
        stage: bool,
        /// Roll the plan's migration back.
        #[arg(long)]
        rollback: bool,
        /// The source MigrationCluster [default: the plan's source.context].
        #[arg(long)]
        source_cluster: Option<String>,
        /// The destination MigrationCluster [default: the plan's
        /// destination.context].
        #[arg(long)]
        destination_cluster: Option<String>,
        /// Print the Migration's name and return; do not follow it.
        #[arg(long)]
        no_watch: bool,
        #[command(flatten)]
        host: HostFlags,
    },
    /// Follow a Migration on a host cluster until it ends (exit 0 when it
    /// succeeded, 1 when it failed).
    Watch {
        /// The Migration's name.
        name: String,
        #[command(flatten)]
        host: HostFlags,
    },
    /// Install the controller in a host cluster (its CRDs, namespace,
    /// ServiceAccount, roles, Deployment and metrics Service), or print
    /// what would be applied.
    Install {
        /// Print the manifests instead of applying them.
        #[arg(long)]
        print: bool,
        /// Print the web console's Route or Ingress (deploy/console-*.yaml)
        /// instead: they are applied by hand, as the cluster exposes
        /// services.
        #[arg(long, value_enum, conflicts_with = "print")]
        print_console: Option<ConsoleExposure>,
        /// The orchestrator image the controller runs.
        #[arg(long)]
        image: Option<String>,
        /// Controller replicas (one leads, the others stand by).
        #[arg(long, default_value_t = 2)]
        replicas: u32,
        /// Velero's namespace on the host cluster.
        #[arg(long, default_value = "velero")]
        velero_namespace: String,
        #[command(flatten)]
        host: HostFlags,
    },
}

/// The host cluster a controller runs in.
#[derive(clap::Args, Clone)]
struct HostFlags {
    /// The host cluster's kubeconfig (default: $KUBECONFIG,
    /// ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig's context (default: its current one).
    #[arg(long)]
    context: Option<String>,
}

impl HostFlags {
    fn reference(&self) -> plan::ClusterRef {
        plan::ClusterRef {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }
}

/// How the web console is exposed outside the cluster.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConsoleExposure {
    /// An OpenShift Route (deploy/console-route.yaml).
    Route,
    /// An Ingress (deploy/console-ingress.yaml).
    Ingress,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[tokio::main]
async fn main() {
    // kube's trace layer logs every failed attempt as an error, also the
    // ones the retry layer (`client::retry`) rides out; what fails for good
    // reaches the user through the call's own error.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client::client::builder=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    std::process::exit(run(Cli::parse()).await);
}

async fn run(cli: Cli) -> i32 {
    match &cli.command {
        Command::Status { run, plan: flags } => return status(run, flags).await,
        Command::Controller {
            namespace,
            kubeconfig,
            context,
            max_migrations,
            listen,
            console_listen,
        } => {
            let host = plan::ClusterRef {
                kubeconfig: kubeconfig.clone(),
                context: context.clone(),
            };
            let options = orchestrator::controller::Options {
                namespace: namespace.clone(),
                concurrency: *max_migrations,
                listen: *listen,
                console: None,
            };
            return controller(host, options, console_listen.0).await;
        }
        Command::Crds => return crds(),
        Command::Install {
            print_console: Some(exposure),
            ..
        } => {
            return print_yaml(match exposure {
                ConsoleExposure::Route => orchestrator::controller::install::console_route_yaml(),
                ConsoleExposure::Ingress => {
                    orchestrator::controller::install::console_ingress_yaml()
                }
            })
        }
        Command::Install {
            print,
            print_console: None,
            image,
            replicas,
            velero_namespace,
            host,
        } => {
            let mut install = orchestrator::controller::install::Install {
                replicas: *replicas,
                velero_namespace: velero_namespace.clone(),
                ..Default::default()
            };
            if let Some(image) = image {
                install.image = image.clone();
            }
            return self::install(&install, *print, host.reference()).await;
        }
        Command::Submit {
            file,
            stage,
            rollback,
            source_cluster,
            destination_cluster,
            no_watch,
            host,
        } => {
            let kind = match (stage, rollback) {
                (true, _) => RunKind::Stage,
                (_, true) => RunKind::Rollback,
                _ => RunKind::Final,
            };
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("orchestrator: {}: cannot read: {e}", file.display());
                    return exit::USAGE;
                }
            };
            let file_value = match serde_yaml::from_str(&text) {
                Ok(value) => value,
                Err(e) => {
                    eprintln!("orchestrator: {}: {e}", file.display());
                    return exit::USAGE;
                }
            };
            let submission = orchestrator::submit::Submission {
                file: file_value,
                origin: file.display().to_string(),
                kind,
                source_cluster: source_cluster.clone(),
                destination_cluster: destination_cluster.clone(),
            };
            return submit(submission, *no_watch, host.reference()).await;
        }
        Command::Watch { name, host } => return watch(name, host.reference()).await,
        _ => {}
    }
    let (Command::Migrate { plan: flags, .. }
    | Command::Rollback { plan: flags, .. }
    | Command::Plan { plan: flags }
    | Command::Cleanup { plan: flags }
    | Command::Status { plan: flags, .. }) = &cli.command
    else {
        unreachable!("the commands without a plan are handled above")
    };
    let plan = match plan::load(flags) {
        Ok(plan) => plan,
        Err(errors) => {
            eprint!("orchestrator: {errors}");
            return exit::USAGE;
        }
    };
    let (source, destination) = match migrate::connect(&plan).await {
        Ok(clusters) => clusters,
        Err(e) => {
            eprintln!("orchestrator: {e:#}");
            return exit::USAGE;
        }
    };
    match cli.command {
        Command::Plan { .. } => {
            match orchestrator::preflight::check(&plan, &source, &destination).await {
                Ok(inventory) => {
                    print!("{}", migrate::describe(&plan, &inventory));
                    exit::SUCCESS
                }
                Err(problems) => {
                    eprint!("orchestrator: {problems}");
                    exit::PREFLIGHT
                }
            }
        }
        Command::Cleanup { .. } => {
            let leftovers = orchestrator::cleanup::run(&plan, &source, &destination).await;
            for leftover in &leftovers {
                eprintln!("orchestrator: not removed: {leftover}");
            }
            if leftovers.is_empty() {
                exit::SUCCESS
            } else {
                exit::FAILED
            }
        }
        Command::Migrate { output, .. } => {
            let kind = if plan.stage {
                RunKind::Stage
            } else {
                RunKind::Final
            };
            drive(&plan, kind, &source, &destination, output).await
        }
        Command::Rollback { output, .. } => {
            drive(&plan, RunKind::Rollback, &source, &destination, output).await
        }
        Command::Status { .. }
        | Command::Controller { .. }
        | Command::Crds
        | Command::Install { .. }
        | Command::Submit { .. }
        | Command::Watch { .. } => {
            unreachable!("handled before the plan is loaded")
        }
    }
}

/// Runs (or resumes) a run of `kind` and prints its report.
async fn drive(
    plan: &plan::Plan,
    kind: RunKind,
    source: &Cluster,
    destination: &Cluster,
    output: Output,
) -> i32 {
    match engine::run(plan, kind, source, destination).await {
        Err(StartError::Preflight(problems)) => {
            eprint!("orchestrator: {problems}");
            exit::PREFLIGHT
        }
        Err(StartError::Conflict(message)) => {
            eprintln!("orchestrator: {message}");
            exit::USAGE
        }
        Err(StartError::Cluster(e)) => {
            eprintln!("orchestrator: {e:#}");
            exit::FAILED
        }
        Ok(report) => {
            match output {
                Output::Json => match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => eprintln!("orchestrator: cannot encode the report: {e}"),
                },
                Output::Table => print!("{}", report.table()),
            }
            if report.succeeded {
                exit::SUCCESS
            } else {
                exit::FAILED
            }
        }
    }
}

/// `orchestrator status NAME`.
async fn status(name: &str, flags: &PlanFlags) -> i32 {
    let reference = match plan::destination_ref(flags) {
        Ok(reference) => reference,
        Err(errors) => {
            eprint!("orchestrator: {errors}");
            return exit::USAGE;
        }
    };
    let destination = match Cluster::connect("destination", &reference).await {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("orchestrator: {e:#}");
            return exit::USAGE;
        }
    };
    let store = Store::open(&destination);
    let found = match store.get(name).await {
        Ok(Some(run)) => Ok(Some(run)),
        Ok(None) => store
            .list(Some(name))
            .await
            .map(|runs| runs.into_iter().last()),
        Err(e) => Err(e),
    };
    match found {
        Ok(Some(run)) => {
            print!("{}", migrate::describe_run(&run));
            exit::SUCCESS
        }
        Ok(None) => {
            eprintln!(
                "orchestrator: no migration run or plan named {name:?} in {}",
                destination.describe()
            );
            exit::FAILED
        }
        Err(e) => {
            eprintln!("orchestrator: {e:#}");
            exit::FAILED
        }
    }
}

/// Runs the controller against the host cluster until stopped, with the
/// console on `console_listen` unless it is off.
async fn controller(
    reference: plan::ClusterRef,
    mut options: orchestrator::controller::Options,
    console_listen: Option<std::net::SocketAddr>,
) -> i32 {
    let host = match connect_host(&reference).await {
        Ok(host) => host,
        Err(code) => return code,
    };
    if let Some(listen) = console_listen {
        match Cluster::config("host", &reference).await {
            Ok((host_config, _)) => {
                options.console = Some(orchestrator::console::Options {
                    listen,
                    host_config,
                })
            }
            Err(e) => {
                eprintln!("orchestrator: {e:#}");
                return exit::USAGE;
            }
        }
    }
    match orchestrator::controller::run(host.client, options).await {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("orchestrator: {} cluster: {e:#}", host.context);
            exit::FAILED
        }
    }
}

/// Submits a migration to the host's controller, and follows it unless
/// told not to.
async fn submit(
    submission: orchestrator::submit::Submission,
    no_watch: bool,
    host: plan::ClusterRef,
) -> i32 {
    let host = match connect_host(&host).await {
        Ok(host) => host,
        Err(code) => return code,
    };
    match orchestrator::submit::submit(&host.client, submission).await {
        Ok(name) if no_watch => {
            println!("{name}");
            exit::SUCCESS
        }
        Ok(name) => {
            eprintln!("submitted Migration {name}");
            follow(&host, &name).await
        }
        Err(e) => {
            eprintln!("orchestrator: {e:#}");
            exit::FAILED
        }
    }
}

/// Follows Migration `name` on the host until it ends.
async fn watch(name: &str, host: plan::ClusterRef) -> i32 {
    match connect_host(&host).await {
        Ok(host) => follow(&host, name).await,
        Err(code) => code,
    }
}

/// The host cluster of `controller`, `install`, `submit` and `watch`, or
/// the exit code after saying why it cannot be reached.
async fn connect_host(host: &plan::ClusterRef) -> Result<Cluster, i32> {
    Cluster::connect("host", host).await.map_err(|e| {
        eprintln!("orchestrator: {e:#}");
        exit::USAGE
    })
}

async fn follow(host: &Cluster, name: &str) -> i32 {
    match orchestrator::submit::watch(&host.client, name).await {
        Ok(status) if status.phase == orchestrator::migration::Phase::Succeeded => exit::SUCCESS,
        Ok(_) => exit::FAILED,
        Err(e) => {
            eprintln!("orchestrator: {} cluster: {e:#}", host.context);
            exit::FAILED
        }
    }
}

/// Applies (or prints) the controller's installation.
async fn install(
    install: &orchestrator::controller::install::Install,
    print: bool,
    host: plan::ClusterRef,
) -> i32 {
    if print {
        return print_yaml(install.yaml());
    }
    let host = match connect_host(&host).await {
        Ok(host) => host,
        Err(code) => return code,
    };
    match orchestrator::controller::install::apply(&host.client, install).await {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("orchestrator: {} cluster: {e:#}", host.context);
            exit::FAILED
        }
    }
}

/// Prints the controller's CRDs, one YAML document each.
fn crds() -> i32 {
    print_yaml(orchestrator::controller::crds_yaml())
}

/// Prints generated manifests.
fn print_yaml(yaml: Result<String, serde_yaml::Error>) -> i32 {
    match yaml {
        Ok(yaml) => {
            print!("{yaml}");
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("orchestrator: {e}");
            exit::FAILED
        }
    }
}
