//! The `mcpfleet` command line. Thin by design: it parses arguments, calls the library
//! crates and prints what they return. Exit codes: 0 success, 1 the fleet file (or the
//! imported file, a deployment, a check) failed, 2 usage or I/O error, 3 no control plane
//! is running.

mod call;
mod clients;
mod commands;
mod fleet;
mod logging;
mod preflight;
mod record;
mod render;
mod traces;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator. The gateway allocates some 47 times per relayed
/// call, most of it in hyper, axum and http; mimalloc takes about 3 µs of CPU off each
/// (docs/benchmarks.md). Built without transparent huge pages: with them, a control plane
/// that had just deployed 1,000 servers held 40 MB more than with glibc; without them it
/// holds 6–12 MB more, and less than glibc once the deployment's threads are gone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// How the control plane writes its log (`up`): `text` for people or `json`, one object
    /// per line, for log collectors. Default: the fleet file's `logging.format`, else text.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl From<LogFormat> for fleet_spec::model::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
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
        #[command(flatten)]
        file: FleetFile,
        /// Apply the `environments.<E>` overlay.
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
    },
    /// Show the deployment plan: dependency waves and the diff against what is deployed.
    Plan {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Apply the `environments.<E>` overlay.
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
        #[arg(value_name = "FILE")]
        client_file: PathBuf,
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
        #[command(flatten)]
        fleet: FleetArgs,
        /// Apply the `environments.<E>` overlay.
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
        /// Run the control plane in the background and return once the fleet is deployed.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Serve on every address of the machine — in a pod, the pod's network (the
        /// rendered control plane Deployment passes it): the gateway at the port of
        /// `gateway.listen`, which then needs tokens and TLS (or `terminated_by: proxy`),
        /// and `/metrics` and `/healthz` at the admin port (`admin.listen`'s, else 7471).
        #[arg(long)]
        pod_network: bool,
        #[arg(long = "detached-child", hide = true)]
        detached_child: bool,
    },
    /// Run a gateway replica: serve the fleet's `/mcp/{server}` endpoints beside the control
    /// plane, routing by the routes, tokens and limits the leading control plane publishes
    /// to the state store (`state.postgres` is required). No server runs in it. Runs in the
    /// foreground until Ctrl-C or SIGTERM.
    Gateway {
        #[command(flatten)]
        file: FleetFile,
        /// Apply the `environments.<E>` overlay.
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
        /// Where to listen (default: `gateway.listen`); on the control plane's machine, an
        /// address of its own (port 0 picks a free one).
        #[arg(long, value_name = "ADDR", conflicts_with = "pod_network")]
        listen: Option<std::net::SocketAddr>,
        /// Serve on every address of the machine — in a pod, the pod's network (the
        /// rendered gateway Deployment passes it): at the port of `gateway.listen`, which
        /// then needs tokens and TLS (or `terminated_by: proxy`), accepting the rendered
        /// Services' and Ingress's names as `Host`; `/metrics` and `/healthz` at the admin
        /// port (`admin.listen`'s, else 7471).
        #[arg(long)]
        pod_network: bool,
        /// Serve the replica's Prometheus metrics (`/metrics`, and `/healthz`) here.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Deploy a changed fleet file through the running control plane: show what changes,
    /// then create, update (by each server's rollout strategy) and delete servers.
    /// Unchanged servers are not touched.
    Deploy {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Apply the `environments.<E>` overlay.
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
        /// Why, kept with the new revision (`mcpfleet history`).
        #[arg(long)]
        reason: Option<String>,
        /// Keep watching the file and deploy every saved change (Ctrl-C stops).
        #[arg(long)]
        watch: bool,
    },
    /// Go back to a stored revision: the whole fleet to the fleet revision deployed before
    /// (or `--to N`), or one server to its previous revision (or server revision `--to N`).
    /// A revision still running (a blue-green rollback window) comes back by a route swap.
    Rollback {
        /// One server; without it, the whole fleet.
        #[arg(value_parser = server_name)]
        server: Option<String>,
        /// The revision to go back to.
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        /// Why, kept with the new revision.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        fleet: FleetArgs,
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
    /// Restart a server's instances one at a time, each replacement ready before the
    /// instance it replaces stops (the revision stays the same); refused during a deployment.
    Restart {
        /// The server to restart.
        #[arg(value_parser = server_name)]
        server: String,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// List every instance: revision, pid, state, restarts, port, last check.
    Ps {
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Show every server's state, endpoint and last check.
    Status {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Also one row per instance: revision, pid, state, restarts, port, last check.
        #[arg(short = 'w', long)]
        wide: bool,
    },
    /// Print the fleet's metrics in the Prometheus text format (gateway and engine).
    Metrics {
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Print a server's log (stderr; also stdout for http servers).
    #[command(mut_arg("file", follow_owns_short_f))]
    Logs {
        /// The server whose log to print.
        #[arg(value_parser = logs_server_name)]
        server: String,
        /// Keep printing new lines as they are written.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Print what happened: deployments, starts, checks, exits, restarts — every event the
    /// state store recorded, earlier runs of the control plane included.
    #[command(mut_arg("file", follow_owns_short_f))]
    Events {
        /// Keep printing events as they happen.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only events after this id (`--output json` shows each event's id).
        #[arg(long, value_name = "ID", default_value_t = 0)]
        after: u64,
        #[command(flatten)]
        fleet: FleetArgs,
        /// Apply the `environments.<E>` overlay (its `state:` names the store of a stopped
        /// fleet).
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
    },
    /// List every deployment (newest last) with its fleet revision, or with SERVER that
    /// server's revisions.
    History {
        /// One server's revisions instead.
        #[arg(value_parser = server_name)]
        server: Option<String>,
        #[command(flatten)]
        fleet: FleetArgs,
        /// Apply the `environments.<E>` overlay (its `state:` names the store of a stopped
        /// fleet).
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
    },
    /// List every tool call through the gateway: who, which tool, how it ended, how long it
    /// took (never the arguments).
    Audit {
        /// Only records after this id.
        #[arg(long, value_name = "ID", default_value_t = 0)]
        after: u64,
        #[command(flatten)]
        fleet: FleetArgs,
        /// Apply the `environments.<E>` overlay (its `state:` names the store of a stopped
        /// fleet).
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
    },
    /// Write the whole state store (revisions, deployments, events, audit) to one JSON file
    /// (owner-only), through the control plane if one runs, else from the store directly.
    ExportState {
        /// Where to write it (replaced if it exists).
        #[arg(value_name = "FILE")]
        to: PathBuf,
        /// Then keep only the N newest exports in FILE's directory (FILE among them):
        /// older files there that read as state exports are removed, nothing else.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
        #[command(flatten)]
        fleet: FleetArgs,
        /// Apply the `environments.<E>` overlay (its `state:` names the store).
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
    },
    /// Load an `export-state` file into a state directory whose store is empty or absent,
    /// while no control plane runs there. Nothing is written if it fails.
    ImportState {
        /// The file `export-state` wrote.
        #[arg(value_name = "FILE")]
        from: PathBuf,
        #[command(flatten)]
        file: FleetFile,
        /// Where to import (default: the fleet file's, else the exported fleet's).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Apply the `environments.<E>` overlay (its `state:` names the store).
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
    },
    /// Run every health check of the running fleet once and report; exit 1 if any fails.
    Check {
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Stop every server (dependents first) and the control plane.
    Down {
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Gateway and admin tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write what runs the fleet on another platform.
    #[command(subcommand)]
    Render(RenderCommand),
    /// Ask the fleet's Kubernetes cluster, read-only, whether the fleet can be deployed
    /// there: API version, namespace, permissions, Secrets, quota.
    Preflight {
        #[command(flatten)]
        file: FleetFile,
        /// Apply the `environments.<E>` overlay.
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
        /// The kubeconfig file (default: `$KUBECONFIG`, else `~/.kube/config`).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context (default: the fleet file's `kubernetes.context`, else the
        /// kubeconfig's current one).
        #[arg(long, value_name = "NAME")]
        context: Option<String>,
    },
    /// Print an MCP client's configuration for the servers the gateway serves.
    ClientConfig {
        /// Which client's configuration file to print.
        #[arg(value_enum)]
        kind: commands::ImportKind,
        #[command(flatten)]
        fleet: FleetArgs,
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
        #[command(flatten)]
        file: FleetFile,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// The fleet file of a command that needs nothing else to find its fleet. Every command
/// names its fleet file the same way, `-f FILE`, never positionally (issue 14).
#[derive(Debug, clap::Args)]
pub(crate) struct FleetFile {
    /// The fleet file.
    #[arg(
        short = 'f',
        long,
        value_name = "FILE",
        default_value = "mcpfleet.yaml"
    )]
    pub file: PathBuf,
}

/// Which fleet a command acts on: its file, and where its state lives.
#[derive(Debug, clap::Args)]
pub(crate) struct FleetArgs {
    /// The fleet file (its `name:` chooses the default state directory).
    #[arg(
        short = 'f',
        long,
        value_name = "FILE",
        default_value = "mcpfleet.yaml"
    )]
    pub file: PathBuf,
    /// Where the fleet's state lives (default: $XDG_STATE_HOME/mcpfleet/<fleet>, else
    /// ~/.local/state/mcpfleet/<fleet>).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// In `logs` and `events` `-f` is `--follow`, as in kubectl and docker compose: the fleet
/// file is `--file` only there.
fn follow_owns_short_f(file: clap::Arg) -> clap::Arg {
    file.short(None)
        .help("The fleet file (`--file` only: here `-f` is `--follow`).")
}

/// A SERVER argument. Server names have no `.`, so an existing `*.yaml` / `*.yml` given
/// here is the fleet file where it went before `-f` (`mcpfleet history fleet.yaml`): say
/// so rather than look for a server of that name.
///
/// # Errors
/// When `name` is such a file.
pub(crate) fn server_name(name: &str) -> anyhow::Result<String> {
    not_a_fleet_file(name, "-f")
}

/// [`server_name`] for `logs`, where `-f` is `--follow`.
fn logs_server_name(name: &str) -> anyhow::Result<String> {
    not_a_fleet_file(name, "--file")
}

fn not_a_fleet_file(name: &str, file_option: &str) -> anyhow::Result<String> {
    if is_yaml(name) && std::path::Path::new(name).is_file() {
        anyhow::bail!("`{name}` is a file: name the fleet with {file_option} {name}");
    }
    Ok(name.to_owned())
}

/// Named like a fleet file: `*.yaml` or `*.yml`.
fn is_yaml(arg: &str) -> bool {
    std::path::Path::new(arg)
        .extension()
        .is_some_and(|e| e == "yaml" || e == "yml")
}

/// A fleet file left where it went before `-f` (`mcpfleet status fleet.yaml`, `mcpfleet
/// logs fleet.yaml api`) makes clap report an unexpected argument, maybe another one; its
/// error then also says how to name the fleet now. `args` is the command line.
fn with_file_hint(mut error: clap::Error, args: &[String]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::UnknownArgument {
        return error;
    }
    // The unexpected argument, else an existing file given as a positional (not the value
    // of an option that takes a file).
    let unexpected = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) if is_yaml(arg) => Some(arg.clone()),
        _ => None,
    };
    let misplaced = unexpected.or_else(|| {
        let positional = |(i, arg): &(usize, &String)| {
            !arg.starts_with('-') && !matches!(args[i - 1].as_str(), "-f" | "--file" | "--out")
        };
        args.iter()
            .enumerate()
            .skip(1)
            .filter(positional)
            .map(|(_, arg)| arg)
            .find(|arg| is_yaml(arg) && std::path::Path::new(arg).is_file())
            .cloned()
    });
    let Some(file) = misplaced else {
        return error;
    };
    let file_option = if args.iter().any(|a| a == "logs" || a == "events") {
        "--file"
    } else {
        "-f"
    };
    let mut tips = match error.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(tips)) => tips.clone(),
        _ => Vec::new(),
    };
    tips.insert(
        0,
        format!("name the fleet file with {file_option} {file}").into(),
    );
    error.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    error
}

/// The arguments of `promote`, `abort`, `pause` and `resume`.
#[derive(Debug, clap::Args)]
struct Steer {
    /// The server whose rollout to steer.
    #[arg(value_parser = server_name)]
    server: String,
    #[command(flatten)]
    fleet: FleetArgs,
}

impl Steer {
    async fn steer(self, action: &str) -> anyhow::Result<ExitCode> {
        fleet::steer(&self.fleet.file, self.fleet.state_dir, &self.server, action).await
    }
}

/// `mcpfleet events | head` ends quietly when `head` has read enough, as other command-line
/// tools do, instead of panicking on the broken pipe: Rust ignores SIGPIPE, so `println!`
/// panics, and setting SIGPIPE back takes `unsafe`, which the workspace forbids. Exit 141
/// is what a shell reports for a process SIGPIPE ended. Not for `up`: a control plane's
/// output must not decide its life.
fn die_quietly_on_a_closed_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        if message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
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

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a random 256-bit gateway (or admin) token: shown once, stored by its SHA-256.
    Create {
        /// A name for the token (shown in audit logs, metrics and events, never the token).
        name: String,
        /// Servers the token may reach (default: all).
        #[arg(long, value_delimiter = ',')]
        servers: Vec<String>,
        /// An admin token (for `admin.tokens`): it reaches no server but may promote,
        /// abort, pause, resume and roll back over the admin TCP listener.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        file: FleetFile,
    },
}

#[derive(Debug, Subcommand)]
enum RenderCommand {
    /// Print the Kubernetes manifests that run the fleet, as one YAML stream, or write
    /// them into a directory, one file per object.
    Kubernetes {
        #[command(flatten)]
        file: FleetFile,
        /// Apply the `environments.<E>` overlay.
        #[arg(long = "env", value_name = "E")]
        environment: Option<String>,
        /// Write one file per object into DIR (created if needed), replacing the files an
        /// earlier render wrote there.
        #[arg(long = "out", value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Before any reqwest client exists: reqwest has no provider of its own in this build.
    fleet_tls::install_default_provider();
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| with_file_hint(e, &args).exit());
    let json = cli.output == Output::Json;
    if !matches!(cli.command, Command::Up { .. } | Command::Gateway { .. }) {
        die_quietly_on_a_closed_pipe();
    }
    let result = match cli.command {
        Command::Validate { file, environment } => {
            commands::validate(&file.file, environment, json)
        }
        Command::Plan {
            fleet,
            environment,
            format,
        } => {
            let format = match (format, json) {
                (Some(f), _) => f,
                (None, true) => PlanFormat::Json,
                (None, false) => PlanFormat::Text,
            };
            block_on(commands::plan(
                &fleet.file,
                environment,
                fleet.state_dir,
                format,
            ))
        }
        Command::Import {
            kind,
            client_file,
            out,
            name,
            force,
        } => commands::import(kind, &client_file, &out, name, force, json),
        Command::Init { file, force } => commands::init(&file.file, force),
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
            admin,
            file,
        }) => clients::token_create(&name, &servers, admin, &file.file, json),
        Command::Render(RenderCommand::Kubernetes {
            file,
            environment,
            out,
        }) => render::kubernetes(&file.file, environment, out.as_deref(), json),
        Command::Preflight {
            file,
            environment,
            kubeconfig,
            context,
        } => block_on(preflight::preflight(
            &file.file,
            environment,
            kubeconfig,
            context,
            json,
        )),
        Command::ClientConfig { kind, fleet } => {
            block_on(clients::client_config(kind, &fleet.file, fleet.state_dir))
        }
        Command::Up {
            fleet,
            environment,
            detach,
            pod_network,
            detached_child,
        } => {
            let args = fleet::UpArgs {
                file: fleet.file,
                environment,
                detach,
                pod_network,
                detached_child,
                state_dir: fleet.state_dir,
                json,
                log_format: cli.log_format.map(Into::into),
            };
            block_on(fleet::up(args))
        }
        Command::Gateway {
            file,
            environment,
            listen,
            pod_network,
            metrics_listen,
        } => block_on(fleet::gateway(fleet::GatewayArgs {
            file: file.file,
            environment,
            listen,
            pod_network,
            metrics: metrics_listen,
            log_format: cli.log_format.map(Into::into),
        })),
        Command::Deploy {
            fleet,
            environment,
            reason,
            watch,
        } => {
            let args = fleet::DeployArgs {
                file: fleet.file,
                environment,
                state_dir: fleet.state_dir,
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
            fleet,
        } => block_on(fleet::rollback(
            &fleet.file,
            fleet.state_dir,
            fleet_api::types::RollbackRequest {
                server,
                to,
                reason,
                author: fleet::author(),
            },
            json,
        )),
        Command::Promote(a) => block_on(a.steer("promote")),
        Command::Abort(a) => block_on(a.steer("abort")),
        Command::Pause(a) => block_on(a.steer("pause")),
        Command::Resume(a) => block_on(a.steer("resume")),
        Command::Status { fleet, wide } => {
            let view = if wide {
                fleet::StatusView::Wide
            } else {
                fleet::StatusView::Servers
            };
            block_on(fleet::status(&fleet.file, fleet.state_dir, view, json))
        }
        Command::Restart { server, fleet } => {
            block_on(fleet::restart(&fleet.file, fleet.state_dir, &server, json))
        }
        Command::Ps { fleet } => block_on(fleet::status(
            &fleet.file,
            fleet.state_dir,
            fleet::StatusView::Instances,
            json,
        )),
        Command::Metrics { fleet } => block_on(fleet::metrics(&fleet.file, fleet.state_dir)),
        Command::Logs {
            server,
            follow,
            lines,
            fleet,
        } => block_on(fleet::logs(
            &fleet.file,
            fleet.state_dir,
            &server,
            lines,
            follow,
        )),
        Command::Check { fleet } => block_on(fleet::check(&fleet.file, fleet.state_dir, json)),
        Command::Events {
            follow,
            after,
            fleet,
            environment,
        } => block_on(fleet::events(
            &fleet.file,
            fleet.state_dir,
            environment,
            after,
            follow,
            json,
        )),
        Command::History {
            server,
            fleet,
            environment,
        } => block_on(record::history(
            &fleet.file,
            fleet.state_dir,
            environment,
            server.as_deref(),
            json,
        )),
        Command::Audit {
            after,
            fleet,
            environment,
        } => block_on(record::audit(
            &fleet.file,
            fleet.state_dir,
            environment,
            after,
            json,
        )),
        Command::ExportState {
            to,
            keep,
            fleet,
            environment,
        } => block_on(record::export_state(
            &to,
            keep,
            &fleet.file,
            fleet.state_dir,
            environment,
            json,
        )),
        Command::ImportState {
            from,
            file,
            state_dir,
            environment,
        } => block_on(record::import_state(
            &from,
            &file.file,
            state_dir,
            environment,
            json,
        )),
        Command::Down { fleet } => block_on(fleet::down(&fleet.file, fleet.state_dir, json)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if logging::writes_json() {
                // The log's last line: a detached control plane's `up -d` reads it there.
                tracing::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use std::path::Path;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command that reads a fleet file, with its other required arguments.
    const READ_A_FLEET_FILE: [&[&str]; 29] = [
        &["validate"],
        &["gateway"],
        &["plan"],
        &["up"],
        &["deploy"],
        &["rollback"],
        &["promote", "api"],
        &["abort", "api"],
        &["pause", "api"],
        &["resume", "api"],
        &["restart", "api"],
        &["ps"],
        &["status"],
        &["metrics"],
        &["logs", "api"],
        &["events"],
        &["history"],
        &["audit"],
        &["export-state", "out.json"],
        &["import-state", "in.json"],
        &["check"],
        &["down"],
        &["token", "create", "ci"],
        &["render", "kubernetes"],
        &["preflight"],
        &["client-config", "vscode"],
        &["call", "api", "echo"],
        &["init"],
        &["history", "api"],
    ];

    /// The fleet file `argv` names, as clap parsed it.
    fn parsed_file(argv: &[&str]) -> PathBuf {
        let matches = Cli::command()
            .try_get_matches_from(argv)
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let mut command = matches.subcommand().expect("a subcommand").1;
        while let Some((_, sub)) = command.subcommand() {
            command = sub;
        }
        command.get_one::<PathBuf>("file").expect("a file").clone()
    }

    /// Issue 14: `history`/`rollback` took `--file`, the other commands the fleet file
    /// positionally, so `history fleet.yaml` and `logs fleet.yaml api` misread it.
    #[test]
    fn every_command_names_its_fleet_file_with_f_and_defaults_to_mcpfleet_yaml() {
        for command in READ_A_FLEET_FILE {
            // `-f` is `--follow` there, as in kubectl and docker compose.
            let option = match command[0] {
                "logs" | "events" => "--file",
                _ => "-f",
            };
            let argv = [&["mcpfleet"], command, &[option, "x.yaml"]].concat();
            assert_eq!(parsed_file(&argv), Path::new("x.yaml"), "{argv:?}");
            let argv = [&["mcpfleet"], command, &["--file=x.yaml"]].concat();
            assert_eq!(parsed_file(&argv), Path::new("x.yaml"), "{argv:?}");
            let argv = [&["mcpfleet"], command].concat();
            assert_eq!(parsed_file(&argv), Path::new("mcpfleet.yaml"), "{argv:?}");
            // Refused, or (`history x.yaml`) a SERVER: never the fleet file.
            let argv = [&["mcpfleet"], command, &["x.yaml"]].concat();
            if Cli::try_parse_from(&argv).is_ok() {
                assert_eq!(parsed_file(&argv), Path::new("mcpfleet.yaml"), "{argv:?}");
            }
        }
        for argv in [
            &["mcpfleet", "logs", "api", "-f"][..],
            &["mcpfleet", "events", "-f"],
        ] {
            let command = Cli::try_parse_from(argv).map(|cli| cli.command);
            let Ok(Command::Logs { follow, .. } | Command::Events { follow, .. }) = command else {
                panic!("{argv:?}: {command:?}");
            };
            assert!(follow, "{argv:?}: -f is --follow");
        }
        let listed: std::collections::BTreeSet<&str> =
            READ_A_FLEET_FILE.iter().map(|c| c[0]).collect();
        let reads_none = ["import", "version", "completions"];
        for command in Cli::command().get_subcommands() {
            let name = command.get_name();
            assert!(
                listed.contains(name) || reads_none.contains(&name),
                "`{name}` is not in the table: does it read a fleet file?"
            );
        }
    }

    /// Each `## \`mcpfleet …\`` heading of docs/cli.md: the commands it documents and the
    /// options its synopsis shows.
    fn documented_synopses() -> Vec<(Vec<String>, Vec<String>)> {
        let doc = include_str!("../../../docs/cli.md");
        let mut out = Vec::new();
        for line in doc.lines() {
            let Some(synopsis) = line.strip_prefix("## `mcpfleet ") else {
                continue;
            };
            let words: Vec<&str> = synopsis.trim_end_matches('`').split_whitespace().collect();
            // Leading command words, with `a | b` alternatives; then a nested subcommand.
            let root = Cli::command();
            let mut commands: Vec<String> = Vec::new();
            let mut i = 0;
            while let Some(word) = words.get(i).filter(|w| root.find_subcommand(w).is_some()) {
                commands.push((*word).to_string());
                i += 1;
                if words.get(i) != Some(&"|") {
                    break;
                }
                i += 1;
            }
            if let ([parent], Some(word)) = (commands.as_slice(), words.get(i)) {
                let nested = root
                    .find_subcommand(parent)
                    .and_then(|p| p.find_subcommand(word));
                if nested.is_some() {
                    commands = vec![format!("{parent} {word}")];
                }
            }
            let options = words
                .iter()
                .map(|w| w.trim_matches(|c| matches!(c, '[' | ']' | '…' | '(' | ')')))
                .filter(|w| w.starts_with('-'))
                .map(|w| w.split('=').next().unwrap().to_string())
                .collect();
            out.push((commands, options));
        }
        out
    }

    /// Issue 14, item 9: docs/cli.md said what the program did not do. Every command and
    /// option it shows exists, every command is in it, and every option of a command is
    /// in that command's synopsis.
    #[test]
    fn docs_cli_md_shows_every_command_and_option_and_nothing_else() {
        let root = Cli::command();
        let mut documented = std::collections::BTreeSet::new();
        for (commands, options) in documented_synopses() {
            assert!(!commands.is_empty(), "a cli.md heading names no command");
            for path in commands {
                let mut command = &root;
                for word in path.split(' ') {
                    command = command.find_subcommand(word).unwrap_or_else(|| {
                        panic!("cli.md documents `{path}`, which does not exist")
                    });
                }
                let args: Vec<&clap::Arg> = command.get_arguments().collect();
                for option in &options {
                    let exists = args.iter().any(|a| {
                        option.strip_prefix("--").map_or_else(
                            || {
                                option.strip_prefix('-').and_then(|s| s.chars().next())
                                    == a.get_short()
                            },
                            |long| a.get_long() == Some(long),
                        )
                    });
                    assert!(
                        exists,
                        "cli.md shows `{option}` for `{path}`, which has no such option"
                    );
                }
                for arg in args
                    .iter()
                    .filter(|a| !a.is_hide_set() && !a.is_positional())
                {
                    let Some(long) = arg.get_long() else { continue };
                    if matches!(long, "help" | "output") {
                        continue; // every command's, said once at the top of cli.md
                    }
                    let shown = options.iter().any(|o| {
                        o == &format!("--{long}")
                            || arg.get_short().is_some_and(|s| o == &format!("-{s}"))
                    });
                    assert!(
                        shown,
                        "cli.md's synopsis of `{path}` does not show --{long}"
                    );
                }
                documented.insert(path);
            }
        }
        for command in root.get_subcommands().filter(|c| c.get_name() != "help") {
            let subcommands: Vec<&clap::Command> = command
                .get_subcommands()
                .filter(|c| c.get_name() != "help")
                .collect();
            let paths: Vec<String> = if subcommands.is_empty() {
                vec![command.get_name().to_string()]
            } else {
                subcommands
                    .iter()
                    .map(|s| format!("{} {}", command.get_name(), s.get_name()))
                    .collect()
            };
            for path in paths {
                assert!(
                    documented.contains(&path),
                    "`mcpfleet {path}` is not in docs/cli.md"
                );
            }
        }
    }

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
