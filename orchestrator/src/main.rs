//! `orchestrator`: drives a migration between two clusters (volumes through
//! `mover`, internal images registry to registry, other resources through
//! Velero). Only the command-line shell exists so far; the stages arrive
//! with their issues (see shared/DESIGN.md, "orchestrator").

use clap::Parser;

/// Drives Kubernetes migrations: volumes via mover, images registry to
/// registry, resources via Velero. No stage is implemented yet.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    Cli::parse();
    eprintln!("orchestrator: no migration stage is implemented yet; see `mover` for volume syncs");
    std::process::exit(2);
}
