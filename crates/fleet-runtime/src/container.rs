//! The container runtime: instances as containers of a Docker-compatible engine (Docker,
//! or Podman's compatible service), driven through its HTTP API with `bollard`.
//!
//! - **Finding the engine**: `DOCKER_HOST` when set, else Docker's socket, then Podman's
//!   (see [`EngineEndpoint::candidates`]); [`ContainerRuntime::connect`] pings it and,
//!   when nothing answers, says which sockets it tried and how to start an engine.
//! - **One container per instance**, named `mcpfleet-<fleet>-<instance id>` and labelled
//!   `io.mcpfleet.fleet`, `.server`, `.revision`, `.instance`: the labels are this runtime's
//!   records (what pidfiles are to the process runtime), so [`discover`](Runtime::discover)
//!   and [`reap_leftovers`](Runtime::reap_leftovers) find what a killed control plane left.
//!   A container holding the name without this fleet's label is never touched.
//! - **Hardened**: no new privileges, every capability dropped, the engine's default
//!   seccomp profile, a read-only root filesystem unless the spec says otherwise (a tmpfs
//!   `/tmp` stays writable), [`ContainerSettings::ulimits`], a non-root user unless the
//!   spec names one (the image's, or `65534:65534` when the image's is root or unset),
//!   published ports on 127.0.0.1 only at a host port the engine picks.
//! - **Streams**: the runtime attaches before it starts the container. A stdio instance's
//!   stdout is the [`StdioAttachment`](crate::StdioAttachment)'s reader, its writer is the
//!   container's stdin, and dropping the writer closes that stdin; everything else
//!   (stderr, and stdout when it is not the protocol) goes to the same log files as the
//!   process runtime's ([`log_path`]), so `mcpfleet logs` reads both alike.
//! - **Supervision** as for processes (see [`process`](crate::process)): the engine's
//!   `wait` says when a run ends, the same restart policy and backoff decide, and a restart
//!   starts the same container again. An OOM kill shows in the `Exited` event and in
//!   [`ExitInfo::out_of_memory`](crate::ExitInfo::out_of_memory) — reported by the engine,
//!   or likely (a SIGKILL mcpfleet did not send under a memory limit); a run that fails right after
//!   its start carries its last lines of output in the event.
//! - **Stop**: (stdio: the runtime closes the container's stdin itself — the caller may
//!   still hold the attachment — and waits half the grace period for an exit on EOF) → the
//!   engine's stop (SIGTERM, SIGKILL after the grace period) → remove the container.
//!
//! Dropping the last [`ContainerRuntime`] handle stops and removes its containers in the
//! background (if the tokio runtime lives on); stop them explicitly to wait for it.
//!
//! - **Adoption**: an http or logged container runs on when the control plane dies;
//!   [`adopt`](Runtime::adopt) takes it over (a new attach for its output, a new `wait`)
//!   without restarting it. A stdio container loses its stdin with the attach connection
//!   and its server exits, so it is never adoptable (label `io.mcpfleet.io`).

mod attach;
mod create;
mod engine;
mod secrets;
mod supervisor;

pub use engine::EngineEndpoint;

use crate::Runtime;
use crate::error::{ConnectError, RuntimeError, StartError};
use crate::instance::{
    ContainerLaunch, ContainerNetwork, Discovered, Instance, InstanceHandle, InstanceId,
    InstanceIo, InstanceSpec, InstanceState, InstanceStatus, Launch, PullPolicy, ReapOutcome,
    Reaped,
};
use crate::process::logs::{LogWriter, discard_instance_logs, open_instance_log};
use crate::process::{LogRotation, follow_log, log_path};
use crate::supervised::{Reservation, Supervised};
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, ImageInspect};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    StopContainerOptions,
};
use create::{
    CreateContext, LABEL_FLEET, LABEL_INSTANCE, LABEL_IO, LABEL_REVISION, LABEL_SERVER, io_label,
};
use engine::{Engine, describe, is_not_found};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use secrets::SecretFiles;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use supervisor::{Run, RunContext, Supervisor, adopt_run, remove_container, short, start_run};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One resource limit applied to every container (`HostConfig.Ulimits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// `nofile`, `nproc`, …
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// How the runtime runs every container, whatever the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    /// Limits set on every container. The default, `nofile` 1024:1024 and `nproc`
    /// 1000:1000, is what rootful Podman needs on hosts whose own limits it cannot pass on
    /// (without them the OCI runtime refuses to start the container); it is also a sane
    /// cap for an MCP server.
    pub ulimits: Vec<Ulimit>,
    /// Size cap and retention of the instances' log files.
    pub log_rotation: LogRotation,
    /// Where containers' secret files are written: a tmpfs, so a value never reaches a
    /// disk. Default `/dev/shm`.
    pub secrets_dir: PathBuf,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        let limit = |name: &str, value| Ulimit {
            name: name.to_owned(),
            soft: value,
            hard: value,
        };
        ContainerSettings {
            ulimits: vec![limit("nofile", 1024), limit("nproc", 1000)],
            log_rotation: LogRotation::default(),
            secrets_dir: PathBuf::from("/dev/shm"),
        }
    }
}

/// Runs instances as containers. Cheap to clone; clones share the instances.
#[derive(Debug, Clone)]
pub struct ContainerRuntime {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    engine: Engine,
    fleet: String,
    state_dir: PathBuf,
    settings: ContainerSettings,
    /// The configured user of each image this runtime knows by a pinned reference (a repo
    /// digest or an id), which is all a create needs from the image and cannot change for
    /// those bytes: an image pinned for a deployment is not inspected again for each of its
    /// containers. Whether it is still there, the create itself says.
    image_users: Mutex<HashMap<String, Option<String>>>,
    /// The only strong reference: dropping the runtime stops (and removes) its containers.
    supervised: Arc<Supervised>,
}

/// What pins `image` given the engine's inspection of it: a repo digest of its own
/// repository, else any repo digest (the digest names the same bytes under every name),
/// else the image id.
fn pinned_reference(image: &str, found: &ImageInspect) -> Option<String> {
    let digests = found.repo_digests.as_deref().unwrap_or_default();
    let repository = repository_of(image);
    digests
        .iter()
        .find(|d| {
            d.split_once('@')
                .is_some_and(|(name, _)| name == repository)
        })
        .or_else(|| digests.first())
        .cloned()
        .or_else(|| found.id.clone())
}

/// `image` without its tag or digest: `localhost/x:1` → `localhost/x`, while a registry's
/// port (`host:5000/x`) stays.
fn repository_of(image: &str) -> &str {
    let name = image.split_once('@').map_or(image, |(name, _)| name);
    match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => name,
    }
}

/// Whether `image` names fixed bytes: a repo digest (`name@sha256:…`) or an image id
/// (`sha256:…`), as [`ContainerRuntime::resolve_image`] pins them.
fn is_pinned(image: &str) -> bool {
    image.contains('@') || image.starts_with("sha256:")
}

/// Who holds a container name.
#[derive(Debug)]
enum NameHolder {
    Nobody,
    /// A container of this fleet, by id.
    Leftover(String),
    /// A container without this fleet's label: never touched.
    Foreign,
}

/// A fleet name fit for container names (`[A-Za-z0-9][A-Za-z0-9_.-]*`).
fn valid_fleet_name(fleet: &str) -> bool {
    fleet.starts_with(|c: char| c.is_ascii_alphanumeric())
        && fleet
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl ContainerRuntime {
    /// Connects to the engine found from the environment
    /// ([`EngineEndpoint::from_env`]) with the default [`ContainerSettings`], for the
    /// containers of fleet `fleet`, keeping logs in `state_dir/logs`.
    ///
    /// # Errors
    ///
    /// [`ConnectError`] when `DOCKER_HOST` is not an address, no engine answers, or the
    /// fleet name cannot be part of a container name.
    pub async fn connect(fleet: &str, state_dir: PathBuf) -> Result<Self, ConnectError> {
        Self::connect_with(
            fleet,
            state_dir,
            EngineEndpoint::from_env()?,
            ContainerSettings::default(),
        )
        .await
    }

    /// Like [`connect`](Self::connect), trying `candidates` in order, with `settings`.
    ///
    /// # Errors
    ///
    /// As for [`connect`](Self::connect).
    pub async fn connect_with(
        fleet: &str,
        state_dir: PathBuf,
        candidates: Vec<EngineEndpoint>,
        settings: ContainerSettings,
    ) -> Result<Self, ConnectError> {
        if !valid_fleet_name(fleet) {
            return Err(ConnectError::InvalidFleet {
                fleet: fleet.to_owned(),
            });
        }
        let engine = engine::connect(candidates).await?;
        tracing::debug!(endpoint = %engine.endpoint, "connected to the container engine");
        Ok(ContainerRuntime {
            shared: Arc::new(Shared {
                engine,
                fleet: fleet.to_owned(),
                state_dir,
                settings,
                image_users: Mutex::default(),
                supervised: Arc::default(),
            }),
        })
    }

    /// The engine this runtime talks to.
    pub fn endpoint(&self) -> &EngineEndpoint {
        &self.shared.engine.endpoint
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.shared.state_dir
    }

    /// Hands a run that has begun (started or adopted) to a supervisor of its own and
    /// announces it: the instance's first event is `Running`.
    fn supervise(
        &self,
        spec: InstanceSpec,
        reservation: Reservation<'_>,
        (log, log_task): (LogWriter, JoinHandle<()>),
        (container, secret_files): (String, SecretFiles),
        mut run: Run,
    ) -> Instance {
        let shared = &self.shared;
        let status = reservation.status.clone();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        {
            let mut status = status.lock();
            status.state = InstanceState::Running;
            status.handle = Some(InstanceHandle::Container {
                id: container.clone(),
            });
            status.started_at = Some(run.started_at);
        }
        let _ = events_tx.send(run.running(&container));
        let id = spec.id.clone();
        let (control, registration) = reservation.supervise();
        let rotation = shared.settings.log_rotation;
        let supervisor = Supervisor::new(
            spec,
            supervisor::Wiring {
                registration,
                engine: shared.engine.clone(),
                log_path: log_path(&shared.state_dir, &id),
                container,
                secret_files,
                max_line: rotation.max_line(),
                control,
                events: events_tx,
                status,
                log,
                log_task,
            },
        );
        tokio::spawn(supervisor.run(run));
        Instance {
            id,
            events: events_rx,
        }
    }

    /// The name the container of instance `id` gets.
    pub fn container_name(&self, id: &InstanceId) -> String {
        create::container_name(&self.shared.fleet, id)
    }

    /// Makes sure `image` is on the engine, as `pull` says, and inspects it.
    async fn ensure_image(
        &self,
        image: &str,
        pull: PullPolicy,
    ) -> Result<ImageInspect, StartError> {
        let docker = &self.shared.engine.docker;
        if pull != PullPolicy::Always {
            match docker.inspect_image(image).await {
                Ok(found) => return Ok(found),
                Err(e) if is_not_found(&e) => {
                    if pull == PullPolicy::Never {
                        return Err(StartError::ImageMissing {
                            image: image.to_owned(),
                        });
                    }
                }
                Err(e) => {
                    return Err(StartError::InspectImage {
                        image: image.to_owned(),
                        message: describe(&e),
                    });
                }
            }
        }
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let mut progress = docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                return Err(StartError::Pull {
                    image: image.to_owned(),
                    message: describe(&e),
                });
            }
        }
        docker
            .inspect_image(image)
            .await
            .map_err(|e| StartError::Pull {
                image: image.to_owned(),
                message: describe(&e),
            })
    }

    /// The exact image `image` names now, pulled first as `pull` says: its repo digest
    /// (`name@sha256:…`, of `image`'s own repository when it has one there), else its id
    /// (`sha256:…`), which is all a locally built or imported image may have. Either is a
    /// reference that runs those bytes however the tag moves later. Containers created from
    /// the pinned reference afterwards do not inspect the image again.
    ///
    /// # Errors
    /// [`StartError::ImageMissing`] (not present, `pull: never`), [`StartError::Pull`], or
    /// [`StartError::InspectImage`].
    pub async fn resolve_image(&self, image: &str, pull: PullPolicy) -> Result<String, StartError> {
        let found = self.ensure_image(image, pull).await?;
        let pinned = pinned_reference(image, &found).ok_or_else(|| StartError::InspectImage {
            image: image.to_owned(),
            message: "the engine reported neither a digest nor an id".to_owned(),
        })?;
        self.remember_image(&pinned, &found);
        Ok(pinned)
    }

    /// Keeps what a create needs from the image `reference` pins (see [`Shared::image_users`]).
    fn remember_image(&self, reference: &str, found: &ImageInspect) {
        let user = found.config.as_ref().and_then(|c| c.user.clone());
        self.shared
            .image_users
            .lock()
            .insert(reference.to_owned(), user);
    }

    /// The configured user of `launch`'s image, from an inspection after making sure the
    /// image is there as its pull policy says.
    async fn checked_image_user(
        &self,
        launch: &ContainerLaunch,
    ) -> Result<Option<String>, StartError> {
        let found = self.ensure_image(&launch.image, launch.pull).await?;
        if is_pinned(&launch.image) {
            self.remember_image(&launch.image, &found);
        }
        Ok(found.config.and_then(|c| c.user))
    }

    /// Who holds container name `name`, looked at when a create failed: nobody, a
    /// container of this fleet (a leftover of an earlier control plane), or someone else's.
    async fn name_holder(&self, id: &InstanceId, name: &str) -> Result<NameHolder, StartError> {
        match self
            .shared
            .engine
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Err(e) if is_not_found(&e) => Ok(NameHolder::Nobody),
            Err(e) => Err(StartError::Engine {
                id: id.clone(),
                action: format!("inspect container {name}"),
                message: describe(&e),
            }),
            Ok(existing) => {
                let ours = existing
                    .config
                    .and_then(|c| c.labels)
                    .is_some_and(|labels| {
                        labels.get(LABEL_FLEET).map(String::as_str)
                            == Some(self.shared.fleet.as_str())
                    });
                Ok(if ours {
                    NameHolder::Leftover(existing.id.unwrap_or_else(|| name.to_owned()))
                } else {
                    NameHolder::Foreign
                })
            }
        }
    }

    /// The directory of instance `id`'s secret files.
    fn secrets_dir(&self, id: &InstanceId) -> PathBuf {
        secrets::instance_dir(&self.shared.settings.secrets_dir, &self.shared.fleet, id)
    }

    /// Pulls as needed, names and creates the container of `spec` with its secret files;
    /// returns its id and the files (already removed when this fails).
    ///
    /// The create is tried first, so the usual start makes one request here. An image this
    /// runtime pinned is not looked at again: when it has gone since, the create answers
    /// 404 and the image is pulled as `pull` says. The name is looked at only when the
    /// create fails (Podman reports a name in use as an error 500, Docker as 409): a
    /// leftover of this fleet holding it is removed and the create tried once more; anyone
    /// else's container is [`StartError::NameTaken`].
    async fn create(
        &self,
        spec: &InstanceSpec,
        launch: &ContainerLaunch,
        log: &crate::process::logs::LogWriter,
    ) -> Result<(String, SecretFiles), StartError> {
        let name = self.container_name(&spec.id);
        let known = self.shared.image_users.lock().get(&launch.image).cloned();
        let (mut image_user, mut image_checked) = match known {
            Some(user) => (user, false),
            None => (self.checked_image_user(launch).await?, true),
        };
        let mut leftover_removed = false;
        loop {
            let user = create::effective_user(launch, image_user.as_deref());
            let dir = self.secrets_dir(&spec.id);
            let files =
                SecretFiles::write(dir.clone(), &launch.secrets, &user).map_err(|source| {
                    secrets::remove_dir(&dir).ok();
                    StartError::SecretFiles {
                        id: spec.id.clone(),
                        dir: self.shared.settings.secrets_dir.clone(),
                        source,
                    }
                })?;
            let body = create::create_body(
                spec,
                launch,
                CreateContext {
                    fleet: &self.shared.fleet,
                    user,
                    ulimits: &self.shared.settings.ulimits,
                    secret_binds: files.binds().collect(),
                },
            );
            let options = CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            };
            let error = match self
                .shared
                .engine
                .docker
                .create_container(Some(options), body)
                .await
            {
                Ok(created) => return Ok((created.id, files)),
                Err(e) => e,
            };
            files.remove();
            if !image_checked && is_not_found(&error) {
                // The pinned image has gone since it was pinned.
                self.shared.image_users.lock().remove(&launch.image);
                image_user = self.checked_image_user(launch).await?;
                image_checked = true;
                continue;
            }
            match self.name_holder(&spec.id, &name).await? {
                NameHolder::Nobody => {
                    return Err(StartError::Engine {
                        id: spec.id.clone(),
                        action: format!("create container {name}"),
                        message: describe(&error),
                    });
                }
                NameHolder::Leftover(container) if !leftover_removed => {
                    log.line(
                        format!(
                            "--- removing leftover container {} of an earlier control plane",
                            short(&container)
                        )
                        .into_bytes(),
                    )
                    .await;
                    remove_container(&self.shared.engine, &container, Some(log)).await;
                    leftover_removed = true;
                }
                // Someone else's, or a leftover that came back: taken.
                NameHolder::Leftover(_) | NameHolder::Foreign => {
                    return Err(StartError::NameTaken { name });
                }
            }
        }
    }

    /// The containers carrying this fleet's label: every one, or only the running ones.
    ///
    /// Podman lists a container whose process has just exited as `stopped` until its
    /// cleanup has run (a fraction of a second), a state Docker's API does not have: the
    /// client then refuses the whole list. Right after a control plane was killed its
    /// stdio containers are in that state, so a list refused this way is asked for again.
    /// A list of the running ones never holds such a container.
    async fn fleet_containers(&self, running_only: bool) -> Vec<ContainerSummary> {
        let mut filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_FLEET}={}", self.shared.fleet)],
        )]);
        if running_only {
            filters.insert("status".to_owned(), vec!["running".to_owned()]);
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let patience = tokio::time::Instant::now() + LIST_PATIENCE;
        loop {
            match self
                .shared
                .engine
                .docker
                .list_containers(Some(options.clone()))
                .await
            {
                Ok(found) => return found,
                Err(bollard::errors::Error::JsonDataError { .. })
                    if tokio::time::Instant::now() < patience =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %describe(&e), "cannot list the fleet's containers");
                    return Vec::new();
                }
            }
        }
    }
}

/// How long [`ContainerRuntime::fleet_containers`] asks again for a list the client
/// cannot read (a container between its exit and Podman's cleanup of it).
const LIST_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// A listed container's label.
fn label<'a>(container: &'a ContainerSummary, name: &str) -> Option<&'a str> {
    container.labels.as_ref()?.get(name).map(String::as_str)
}

fn is_running(container: &ContainerSummary) -> bool {
    matches!(
        container.state,
        Some(
            ContainerSummaryStateEnum::RUNNING
                | ContainerSummaryStateEnum::PAUSED
                | ContainerSummaryStateEnum::RESTARTING
        )
    )
}

impl Runtime for ContainerRuntime {
    async fn start(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        if let Some(problem) = spec.id.file_name_problem() {
            return Err(StartError::InvalidId {
                id: spec.id,
                problem,
            });
        }
        let Launch::Container(launch) = &spec.launch else {
            return Err(StartError::WrongRuntime {
                id: spec.id.clone(),
                launch: spec.launch.kind(),
                runtime: "container",
            });
        };
        if matches!(spec.io, InstanceIo::Listen { .. }) && launch.network == ContainerNetwork::None
        {
            return Err(StartError::NoNetworkToPublish { id: spec.id });
        }
        let shared = &self.shared;
        let reservation = shared.supervised.reserve(&spec)?;
        let rotation = shared.settings.log_rotation;
        let (log, log_task) = open_instance_log(&shared.state_dir, &spec.id, rotation).await?;
        let path = log_path(&shared.state_dir, &spec.id);

        let started = async {
            let (container, secret_files) = self.create(&spec, launch, &log).await?;
            let cx = RunContext {
                engine: &shared.engine,
                container: &container,
                log: &log,
                log_path: &path,
                max_line: rotation.max_line(),
            };
            match start_run(&spec, cx).await {
                Ok(run) => Ok((container, secret_files, run)),
                Err(e) => {
                    remove_container(&shared.engine, &container, Some(&log)).await;
                    secret_files.remove();
                    Err(e)
                }
            }
        };
        let (container, secret_files, run) = match started.await {
            Ok(started) => started,
            Err(e) => {
                log.line(format!("--- start failed: {e}").into_bytes())
                    .await;
                // On disk before the caller hears of it (`mcpfleet logs` shows why).
                log.synced().await;
                return Err(e);
            }
        };

        Ok(self.supervise(
            spec,
            reservation,
            (log, log_task),
            (container, secret_files),
            run,
        ))
    }

    async fn adopt(&self, spec: InstanceSpec) -> Result<Instance, StartError> {
        let not_adoptable = |why: &str| StartError::NotAdoptable {
            id: spec.id.clone(),
            why: why.to_owned(),
        };
        if !matches!(spec.launch, Launch::Container(_)) {
            return Err(not_adoptable("it is not a container"));
        }
        if spec.io == InstanceIo::Stdio {
            return Err(not_adoptable(
                "a stdio container's stdin was attached to the control plane that started it",
            ));
        }
        let shared = &self.shared;
        let name = self.container_name(&spec.id);
        let found = shared
            .engine
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| not_adoptable(&describe(&e)))?;
        let labels = found
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let labelled = |key: &str, value: &str| labels.get(key).map(String::as_str) == Some(value);
        if !(labelled(LABEL_FLEET, &shared.fleet)
            && labelled(LABEL_INSTANCE, spec.id.as_str())
            && labelled(LABEL_REVISION, &spec.revision.to_string())
            && labelled(LABEL_IO, io_label(spec.io)))
        {
            return Err(not_adoptable(&format!(
                "container {name} was not started for this instance and revision"
            )));
        }
        let state = found.state.unwrap_or_default();
        if state.running != Some(true) {
            return Err(not_adoptable(&format!("container {name} is not running")));
        }
        let since = state
            .started_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(SystemTime::now, SystemTime::from);
        let container = found.id.unwrap_or(name);

        let reservation = shared.supervised.reserve(&spec)?;
        let rotation = shared.settings.log_rotation;
        let (log, log_task) = open_instance_log(&shared.state_dir, &spec.id, rotation).await?;
        let path = log_path(&shared.state_dir, &spec.id);
        let cx = RunContext {
            engine: &shared.engine,
            container: &container,
            log: &log,
            log_path: &path,
            max_line: rotation.max_line(),
        };
        let run = adopt_run(&spec, cx, since).await?;
        // Its secret files are where the killed control plane wrote them, mounted; they go
        // when the container goes.
        let secret_files = SecretFiles::adopted(self.secrets_dir(&spec.id));
        Ok(self.supervise(
            spec,
            reservation,
            (log, log_task),
            (container, secret_files),
            run,
        ))
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        self.shared.supervised.stop(id).await;
        Ok(())
    }

    async fn restart(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        self.shared.supervised.restart(id).await
    }

    fn statuses(&self) -> Vec<InstanceStatus> {
        self.shared.supervised.statuses()
    }

    async fn discard_logs(&self, id: &InstanceId) {
        let keep = self.shared.settings.log_rotation.keep;
        discard_instance_logs(&self.shared.state_dir, id, keep).await;
    }

    async fn discover(&self) -> Vec<Discovered> {
        let containers = self.fleet_containers(true).await;
        let supervised = self.shared.supervised.ids();
        let mut found: Vec<Discovered> = containers
            .iter()
            .filter(|c| is_running(c))
            .filter_map(|c| {
                let id = InstanceId::from(label(c, LABEL_INSTANCE)?);
                if supervised.contains(&id) {
                    return None;
                }
                Some(Discovered {
                    id,
                    server: label(c, LABEL_SERVER).unwrap_or_default().to_owned(),
                    revision: label(c, LABEL_REVISION)
                        .and_then(|r| r.parse().ok())
                        .unwrap_or_default(),
                    handle: InstanceHandle::Container {
                        id: c.id.clone().unwrap_or_default(),
                    },
                    // Labelled before adoption existed: not known to be reachable.
                    adoptable: label(c, LABEL_IO).is_some_and(|io| io != "stdio"),
                })
            })
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    async fn reap_leftovers(&self, spare: &HashSet<InstanceId>) -> Vec<Reaped> {
        let containers = self.fleet_containers(false).await;
        let supervised = self.shared.supervised.ids();
        let engine = &self.shared.engine;
        let mut reaped = Vec::new();
        for container in containers {
            let instance = label(&container, LABEL_INSTANCE).map(InstanceId::from);
            if instance
                .as_ref()
                .is_some_and(|id| supervised.contains(id) || spare.contains(id))
            {
                continue;
            }
            let Some(container_id) = container.id.clone() else {
                continue;
            };
            let outcome = if is_running(&container) {
                // No timeout given: the engine uses the grace period recorded at create.
                if let Err(e) = engine
                    .docker
                    .stop_container(&container_id, None::<StopContainerOptions>)
                    .await
                {
                    tracing::warn!(container = %container_id, error = %describe(&e), "cannot stop a leftover container; removing it by force");
                }
                let exit_code = engine
                    .docker
                    .inspect_container(&container_id, None::<InspectContainerOptions>)
                    .await
                    .ok()
                    .and_then(|c| c.state)
                    .and_then(|s| s.exit_code);
                ReapOutcome::Stopped {
                    leader: true,
                    members: 0,
                    // The engine's SIGKILL after the grace period shows as 128 + 9.
                    forced: exit_code == Some(137),
                }
            } else {
                ReapOutcome::Gone
            };
            remove_container(engine, &container_id, None).await;
            if let Some(id) = &instance {
                let dir = self.secrets_dir(id);
                if let Err(e) = secrets::remove_dir(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a leftover container's secret files");
                }
            }
            let name = container
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map_or(container_id.as_str(), |n| n.trim_start_matches('/'));
            reaped.push(Reaped {
                record: format!("container {name}"),
                id: instance,
                outcome,
            });
        }
        reaped
    }

    fn logs(&self, id: &InstanceId, lines: usize, follow: bool) -> BoxStream<'static, String> {
        follow_log(log_path(&self.shared.state_dir, id), lines, follow).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspected(id: &str, digests: &[&str]) -> ImageInspect {
        ImageInspect {
            id: Some(id.to_owned()),
            repo_digests: Some(digests.iter().map(|d| (*d).to_owned()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn a_pin_prefers_the_digest_of_the_images_own_repository() {
        let found = inspected(
            "sha256:1d",
            &["other/x@sha256:aa", "registry:5000/org/x@sha256:aa"],
        );
        assert_eq!(
            pinned_reference("registry:5000/org/x:1.2", &found).as_deref(),
            Some("registry:5000/org/x@sha256:aa")
        );
        assert_eq!(
            pinned_reference("elsewhere/y:1", &found).as_deref(),
            Some("other/x@sha256:aa"),
            "any repo digest names the same bytes"
        );
    }

    #[test]
    fn an_image_without_a_repo_digest_is_pinned_by_its_id() {
        let found = inspected("sha256:1d", &[]);
        assert_eq!(
            pinned_reference("built-here:dev", &found).as_deref(),
            Some("sha256:1d")
        );
    }

    #[test]
    fn a_repository_keeps_its_registry_port_and_loses_its_tag_or_digest() {
        assert_eq!(repository_of("localhost/x:1"), "localhost/x");
        assert_eq!(repository_of("host:5000/x"), "host:5000/x");
        assert_eq!(repository_of("host:5000/x:2"), "host:5000/x");
        assert_eq!(repository_of("x@sha256:aa"), "x");
        assert_eq!(repository_of("x"), "x");
    }
}
