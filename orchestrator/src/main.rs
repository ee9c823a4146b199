//! `orchestrator`: drives a migration between two clusters. Volumes are
//! copied by `mover` pods the orchestrator deploys (DESIGN.md stages 1, 5
//! and 7); see the README's "Orchestrator" section.

use clap::{Parser, Subcommand, ValueEnum};
use orchestrator::migrate::{self, exit};
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
  2  invalid command line or plan
  3  preflight found problems; nothing was changed";

#[derive(Subcommand)]
enum Command {
    /// Copy the plan's PVCs to the destination cluster.
    Migrate {
        #[command(flatten)]
        plan: PlanFlags,
        /// Report format, printed on stdout at the end.
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
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
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    std::process::exit(run(Cli::parse()).await);
}

async fn run(cli: Cli) -> i32 {
    let (Command::Migrate { plan: flags, .. }
    | Command::Plan { plan: flags }
    | Command::Cleanup { plan: flags }) = &cli.command;
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
            match migrate::migrate(&plan, &source, &destination).await {
                Err(problems) => {
                    eprint!("orchestrator: {problems}");
                    exit::PREFLIGHT
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
    }
}
