//! The `mcpfleet` command line. Thin by design: it parses arguments, calls the library
//! crates and prints what they return. Exit codes: 0 success, 1 the fleet file (or the
//! imported file) is invalid, 2 usage or I/O error.

mod commands;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "mcpfleet",
    version,
    about = "Deploy fleets of MCP servers from one declarative file"
)]
struct Cli {
    /// Output format for machines (`json`) or people (`text`).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a fleet file and report every problem with its location.
    Validate {
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Apply the `environments.<E>` overlay.
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
    },
    /// Show the deployment plan: dependency waves and the diff against what is deployed.
    Plan {
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
        /// `dot` and `mermaid` draw the dependency graph.
        #[arg(long, value_enum)]
        format: Option<PlanFormat>,
    },
    /// Turn an MCP client's configuration into a fleet file.
    Import {
        /// Which client wrote the file.
        #[arg(value_enum)]
        kind: commands::ImportKind,
        /// The client's configuration file (e.g. claude_desktop_config.json, .vscode/mcp.json).
        file: PathBuf,
        /// Where to write the fleet file; `-` for standard output.
        #[arg(short = 'o', long = "out", default_value = "mcpfleet.yaml")]
        out: PathBuf,
        /// Name of the fleet (default: the output file's directory name).
        #[arg(long)]
        name: Option<String>,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// Write a commented starter fleet file.
    Init {
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.output == Output::Json;
    let result = match cli.command {
        Command::Validate { file, environment } => commands::validate(&file, environment, json),
        Command::Plan {
            file,
            environment,
            format,
        } => {
            let format = match (format, json) {
                (Some(f), _) => f,
                (None, true) => PlanFormat::Json,
                (None, false) => PlanFormat::Text,
            };
            commands::plan(&file, environment, format)
        }
        Command::Import {
            kind,
            file,
            out,
            name,
            force,
        } => commands::import(kind, &file, &out, name, force, json),
        Command::Init { file, force } => commands::init(&file, force),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
