//! The `mcpfleet` command line. Thin by design: it parses arguments, calls the library
//! crates and prints what they return. Exit codes: 0 success, 1 the fleet file (or the
//! imported file, a deployment, a check) failed, 2 usage or I/O error, 3 no control plane
//! is running.

mod call;
mod clients;
mod commands;
mod fleet;
mod record;

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
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
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
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Apply the `environments.<E>` overlay.
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
        /// `dot` and `mermaid` draw the dependency graph.
        #[arg(long, value_enum)]
        format: Option<PlanFormat>,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>); what
        /// is deployed is read from it.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Turn an MCP client's configuration into a fleet file.
    Import {
        /// Which client wrote the file.
        #[arg(value_enum)]
        kind: commands::ImportKind,
        /// The client's configuration file (e.g. claude_desktop_config.json, .vscode/mcp.json).
        file: PathBuf,
        /// Where to write the fleet file; `-` for standard output.
        #[arg(long = "out", default_value = "mcpfleet.yaml")]
        out: PathBuf,
        /// Name of the fleet (default: the output file's directory name).
        #[arg(long)]
        name: Option<String>,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// Start the fleet's control plane and deploy the fleet, wave by wave, each server
    /// gated on its health checks. Runs in the foreground until Ctrl-C (or `-d`).
    Up {
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Apply the `environments.<E>` overlay.
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
        /// Run the control plane in the background and return once the fleet is deployed.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        #[arg(long = "detached-child", hide = true)]
        detached_child: bool,
    },
    /// Deploy a changed fleet file through the running control plane: show what changes,
    /// then create, update (by each server's rollout strategy) and delete servers.
    /// Unchanged servers are not touched.
    Deploy {
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Apply the `environments.<E>` overlay.
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
        /// Why, kept with the new revision (`mcpfleet history`).
        #[arg(long)]
        reason: Option<String>,
        /// Keep watching the file and deploy every saved change (Ctrl-C stops).
        #[arg(long)]
        watch: bool,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Go back to a stored revision: the whole fleet to the fleet revision deployed before
    /// (or `--to N`), or one server to its previous revision (or server revision `--to N`).
    /// A revision still running (a blue-green rollback window) comes back by a route swap.
    Rollback {
        /// One server; without it, the whole fleet.
        server: Option<String>,
        /// The revision to go back to.
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        /// Why, kept with the new revision.
        #[arg(long)]
        reason: Option<String>,
        /// The fleet file.
        #[arg(long, default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// End the current step of a server's canary now (at the last step: give the new
    /// revision every new session).
    Promote(Steer),
    /// Abort a server's canary: the stable revision gets every session back.
    Abort(Steer),
    /// Hold a server's canary at its current step (analysis goes on).
    Pause(Steer),
    /// Let a paused canary go on.
    Resume(Steer),
    /// Show every server's state, endpoint and last check.
    Status {
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Also one row per instance: revision, pid, state, restarts, port, last check.
        #[arg(short = 'w', long)]
        wide: bool,
    },
    /// Print the fleet's metrics in the Prometheus text format (gateway and engine).
    Metrics {
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Print a server's log (stderr; also stdout for http servers).
    Logs {
        /// The server whose log to print.
        server: String,
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Keep printing new lines as they are written.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Print what happened: deployments, starts, checks, exits, restarts — every event the
    /// state store recorded, earlier runs of the control plane included.
    Events {
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Keep printing events as they happen.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only events after this id (`--output json` shows each event's id).
        #[arg(long, value_name = "ID", default_value_t = 0)]
        after: u64,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// List every deployment (newest last) with its fleet revision, or with SERVER that
    /// server's revisions.
    History {
        /// One server's revisions instead.
        server: Option<String>,
        /// The fleet file.
        #[arg(long, default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// List every tool call through the gateway: who, which tool, how it ended, how long it
    /// took (never the arguments).
    Audit {
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Only records after this id.
        #[arg(long, value_name = "ID", default_value_t = 0)]
        after: u64,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Write the whole state store (revisions, deployments, events, audit) to one JSON file
    /// (owner-only), through the control plane if one runs, else from the store directly.
    ExportState {
        /// Where to write it (replaced if it exists).
        #[arg(value_name = "FILE")]
        to: PathBuf,
        /// The fleet file.
        #[arg(long, default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Load an `export-state` file into a state directory whose store is empty or absent,
    /// while no control plane runs there. Nothing is written if it fails.
    ImportState {
        /// The file `export-state` wrote.
        #[arg(value_name = "FILE")]
        from: PathBuf,
        /// The fleet file.
        #[arg(long, default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Where to import (default: the fleet file's, else the exported fleet's).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Run every health check of the running fleet once and report; exit 1 if any fails.
    Check {
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Stop every server (dependents first) and the control plane.
    Down {
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Gateway tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print an MCP client's configuration for the servers the gateway serves.
    ClientConfig {
        /// Which client's configuration file to print.
        #[arg(value_enum)]
        kind: commands::ImportKind,
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Call a tool through the running fleet's gateway and print its result; exit 1 when
    /// the tool reports an error.
    Call(call::CallArgs),
    /// Print mcpfleet's version.
    Version,
    /// Print a shell completion script: `mcpfleet completions bash > /etc/bash_completion.d/mcpfleet`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a commented starter fleet file.
    Init {
        /// The fleet file.
        #[arg(default_value = "mcpfleet.yaml")]
        file: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// The arguments of `promote`, `abort`, `pause` and `resume`.
#[derive(Debug, clap::Args)]
struct Steer {
    /// The server whose rollout to steer.
    server: String,
    /// The fleet file.
    #[arg(default_value = "mcpfleet.yaml")]
    file: PathBuf,
    /// Where the fleet's state lives (default: ~/.local/state/mcpfleet/<fleet>).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// Runs an async command on a multi-threaded runtime (only the commands that need one).
fn block_on(
    f: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// The control plane logs through tracing: warnings in the foreground (progress lines say
/// the rest), everything to the log file when detached. `MCPFLEET_LOG` overrides.
fn init_logging(detached: bool) {
    // The MCP SDK and HTTP client log request URLs, which may carry a secret (a remote
    // server's token in a query): they stay silent; mcpfleet reports failures itself.
    let default = if detached {
        "info,rmcp=off,reqwest=off,hyper=off,hyper_util=off"
    } else {
        "warn,rmcp=off,reqwest=off,hyper=off,hyper_util=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCPFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!detached)
        .try_init();
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a random 256-bit gateway token: shown once, stored by its SHA-256.
    Create {
        /// A name for the token (shown in audit logs and metrics, never the token).
        name: String,
        /// Servers the token may reach (default: all).
        #[arg(long, value_delimiter = ',')]
        servers: Vec<String>,
        /// The fleet file the token is for (to check the server names).
        #[arg(long, default_value = "mcpfleet.yaml")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    // Before any reqwest client exists: reqwest has no provider of its own in this build.
    fleet_tls::install_default_provider();
    let cli = Cli::parse();
    let json = cli.output == Output::Json;
    let result = match cli.command {
        Command::Validate { file, environment } => commands::validate(&file, environment, json),
        Command::Plan {
            file,
            environment,
            format,
            state_dir,
        } => {
            let format = match (format, json) {
                (Some(f), _) => f,
                (None, true) => PlanFormat::Json,
                (None, false) => PlanFormat::Text,
            };
            block_on(commands::plan(&file, environment, state_dir, format))
        }
        Command::Import {
            kind,
            file,
            out,
            name,
            force,
        } => commands::import(kind, &file, &out, name, force, json),
        Command::Init { file, force } => commands::init(&file, force),
        Command::Version => commands::version(json),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "mcpfleet",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Call(args) => block_on(call::call(args, json)),
        Command::Token(TokenCommand::Create {
            name,
            servers,
            file,
        }) => clients::token_create(&name, &servers, &file, json),
        Command::ClientConfig {
            kind,
            file,
            state_dir,
        } => block_on(clients::client_config(kind, &file, state_dir)),
        Command::Up {
            file,
            environment,
            detach,
            state_dir,
            detached_child,
        } => {
            init_logging(detached_child);
            let args = fleet::UpArgs {
                file,
                environment,
                detach,
                detached_child,
                state_dir,
                json,
            };
            block_on(fleet::up(args))
        }
        Command::Deploy {
            file,
            environment,
            reason,
            watch,
            state_dir,
        } => {
            let args = fleet::DeployArgs {
                file,
                environment,
                state_dir,
                reason,
                json,
            };
            if watch {
                block_on(fleet::deploy_watch(args))
            } else {
                block_on(fleet::deploy(&args))
            }
        }
        Command::Rollback {
            server,
            to,
            reason,
            file,
            state_dir,
        } => block_on(fleet::rollback(
            &file,
            state_dir,
            fleet_api::types::RollbackRequest {
                server,
                to,
                reason,
                author: fleet::author(),
            },
            json,
        )),
        Command::Promote(a) => block_on(fleet::steer(&a.file, a.state_dir, &a.server, "promote")),
        Command::Abort(a) => block_on(fleet::steer(&a.file, a.state_dir, &a.server, "abort")),
        Command::Pause(a) => block_on(fleet::steer(&a.file, a.state_dir, &a.server, "pause")),
        Command::Resume(a) => block_on(fleet::steer(&a.file, a.state_dir, &a.server, "resume")),
        Command::Status {
            file,
            state_dir,
            wide,
        } => block_on(fleet::status(&file, state_dir, wide, json)),
        Command::Metrics { file, state_dir } => block_on(fleet::metrics(&file, state_dir)),
        Command::Logs {
            server,
            file,
            follow,
            lines,
            state_dir,
        } => block_on(fleet::logs(&file, state_dir, &server, lines, follow)),
        Command::Check { file, state_dir } => block_on(fleet::check(&file, state_dir, json)),
        Command::Events {
            file,
            follow,
            after,
            state_dir,
        } => block_on(fleet::events(&file, state_dir, after, follow, json)),
        Command::History {
            server,
            file,
            state_dir,
        } => block_on(record::history(&file, state_dir, server.as_deref(), json)),
        Command::Audit {
            file,
            after,
            state_dir,
        } => block_on(record::audit(&file, state_dir, after, json)),
        Command::ExportState {
            to,
            file,
            state_dir,
        } => block_on(record::export_state(&to, &file, state_dir, json)),
        Command::ImportState {
            from,
            file,
            state_dir,
        } => block_on(record::import_state(&from, &file, state_dir, json)),
        Command::Down { file, state_dir } => block_on(fleet::down(&file, state_dir, json)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Issue 14: `--state-dir`, `--env` and most FILE arguments had no help text.
    #[test]
    fn every_option_and_argument_has_help_text() {
        fn undocumented(command: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
                if arg.get_help().is_none() {
                    out.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                undocumented(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "mcpfleet", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }
}
