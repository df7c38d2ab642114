//! Servers that run from a container image: the `image:` and `container:` keys, their
//! defaults and located errors, and the promise that process servers did not change.

mod common;
use common::FixedHost;
use fleet_spec::model::{
    Container, ContainerNetwork, Executable, Pull, Resources, SecretFile, Server, Text, Transport,
    Volume, VolumeSource,
};
use fleet_spec::{Checked, LoadOptions, load_str};
use std::path::PathBuf;
use std::sync::Arc;

fn check(text: &str, environment: Option<&str>) -> Checked {
    let options = LoadOptions {
        environment: environment.map(str::to_string),
        host: Arc::new(FixedHost(vec![
            ("HOME", "/home/tester"),
            ("GITHUB_TOKEN", "ghp_supersecretvalue"),
            ("TAG", "1.2"),
        ])),
    };
    load_str("f.yaml", text, PathBuf::from("/srv/fleet"), &options)
}

fn load(text: &str) -> Vec<Server> {
    let checked = check(text, None);
    assert_eq!(checked.diagnostics, vec![], "{:#?}", checked.diagnostics);
    checked.into_valid().unwrap().servers
}

/// Every error of `text`, as (line, message).
fn errors(text: &str) -> Vec<(u32, String)> {
    check(text, None)
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| (d.span.map_or(0, |s| s.line), d.message.clone()))
        .collect()
}

/// The image, entrypoint and container of a server that runs from an image.
fn image_of(server: &Server) -> (&str, Option<&str>, &Container) {
    let command = match &server.transport {
        Transport::Stdio { command, .. } | Transport::Http { command, .. } => command,
        Transport::Remote { .. } => panic!("`{}` is remote", server.name),
    };
    match &command.executable {
        Executable::Image {
            image,
            command,
            container,
            ..
        } => (
            &image.shown,
            command.as_ref().map(|c| c.shown.as_str()),
            container,
        ),
        Executable::Program { command } => panic!("`{}` runs `{}`", server.name, command.shown),
    }
}

/// The start of a fleet whose servers use the secret `token`.
const HEAD: &str = "version: 1\nname: boxes\nsecrets:\n  token: { env: GITHUB_TOKEN }\nservers:\n";
/// The start of a fleet without secrets.
const PLAIN_HEAD: &str = "version: 1\nname: boxes\nservers:\n";

#[test]
fn a_process_servers_serialized_model_is_unchanged() {
    // Plan hashes of stored revisions are computed from this JSON: the strings are what
    // main produced before images existed, and must never change.
    let servers = load(&format!(
        r#"{HEAD}  github:
    stdio:
      command: npx
      args: ["-y", "@modelcontextprotocol/server-github"]
      env: {{ GITHUB_TOKEN: "{{{{ secret('token') }}}}", MODE: "ro" }}
      cwd: ./work
      isolation: shared
  search:
    http:
      command: ./bin/search
      args: ["--port", "{{{{ port }}}}"]
      path: /rpc
      port: 9000
  plain:
    stdio: {{ command: uvx, args: [mcp-server-time] }}
"#
    ));
    let json: Vec<String> = servers
        .iter()
        .map(|s| serde_json::to_string(&s.transport).unwrap())
        .collect();
    assert_eq!(
        json,
        [
            r#"{"stdio":{"command":"npx","args":["-y","@modelcontextprotocol/server-github"],"env":{"GITHUB_TOKEN":"***","MODE":"ro"},"cwd":"./work","isolation":{"mode":"shared"}}}"#,
            r#"{"http":{"command":"./bin/search","args":["--port","<port>"],"path":"/rpc","port":9000}}"#,
            r#"{"stdio":{"command":"uvx","args":["mcp-server-time"],"isolation":{"mode":"per-session","warm":1,"max_sessions":32,"idle_timeout":"10m"}}}"#,
        ]
    );
}

#[test]
fn an_image_server_reads_every_container_setting() {
    let servers = load(&format!(
        r#"{HEAD}  files:
    stdio:
      image: "localhost/files:{{{{ env('TAG') }}}}"
      command: /bin/files
      args: [--root, /data, --token-file, /run/secrets/token]
      env: {{ LOG: "{{{{ env('TAG') }}}}" }}
      cwd: /data
      isolation: shared
    container:
      user: "1000:1000"
      network: mcp-net
      resources: {{ cpus: 0.5, memory: 256Mi, pids: 128 }}
      volumes: ["./data:/data:ro", "cache:/cache", "/var/lib/x:/x:rw", "~/notes:/notes"]
      read_only: false
      pull: always
      secrets: {{ /run/secrets/token: token }}
"#
    ));
    let (image, entrypoint, container) = image_of(&servers[0]);
    assert_eq!(image, "localhost/files:1.2");
    assert_eq!(entrypoint, Some("/bin/files"));
    let path = |p: &str, target: &str, read_only| Volume {
        source: VolumeSource::Path(PathBuf::from(p)),
        target: target.into(),
        read_only,
    };
    assert_eq!(
        *container,
        Container {
            user: Some("1000:1000".into()),
            network: ContainerNetwork::Named("mcp-net".into()),
            resources: Resources {
                cpus: Some(0.5),
                memory: Some(256 << 20),
                pids: Some(128),
            },
            volumes: vec![
                path("/srv/fleet/data", "/data", true),
                Volume {
                    source: VolumeSource::Named("cache".into()),
                    target: "/cache".into(),
                    read_only: false,
                },
                path("/var/lib/x", "/x", false),
                path("/home/tester/notes", "/notes", false),
            ],
            read_only: false,
            pull: Pull::Always,
            secrets: vec![SecretFile {
                target: "/run/secrets/token".into(),
                secret: "token".into(),
                value: Text {
                    template: "{{ secret(\"token\") }}".into(),
                    shown: "***".into(),
                },
            }],
        }
    );
    let Transport::Stdio { command, .. } = &servers[0].transport else {
        panic!("files is stdio")
    };
    assert_eq!(
        command.cwd.as_ref().unwrap().shown,
        "/data",
        "a container's cwd is not resolved against the fleet file"
    );
    // What plans (and their hashes) see: the image, then the process keys as before; a
    // secret file shows its path and the secret's name, never the value.
    let json = serde_json::to_value(&servers[0].transport).unwrap();
    assert_eq!(
        json["stdio"],
        serde_json::json!({
            "image": "localhost/files:1.2",
            "command": "/bin/files",
            "container": {
                "user": "1000:1000",
                "network": "mcp-net",
                "resources": { "cpus": 0.5, "memory": 268435456, "pids": 128 },
                "volumes": [
                    { "source": "/srv/fleet/data", "target": "/data", "read_only": true },
                    { "source": "cache", "target": "/cache", "read_only": false },
                    { "source": "/var/lib/x", "target": "/x", "read_only": false },
                    { "source": "/home/tester/notes", "target": "/notes", "read_only": false }
                ],
                "read_only": false,
                "pull": "always",
                "secrets": [{ "target": "/run/secrets/token", "secret": "token" }]
            },
            "args": ["--root", "/data", "--token-file", "/run/secrets/token"],
            "env": { "LOG": "1.2" },
            "cwd": "/data",
            "isolation": { "mode": "shared" }
        })
    );
}

#[test]
fn image_servers_without_a_container_block_get_safe_defaults() {
    let servers = load(&format!(
        r#"{PLAIN_HEAD}  files:
    stdio: {{ image: localhost/files:1.2 }}
  web:
    http: {{ image: localhost/web:1.2, port: 8080 }}
    replicas: 3
"#
    ));
    let defaults = |network| Container {
        user: None,
        network,
        resources: Resources::default(),
        volumes: vec![],
        read_only: true,
        pull: Pull::IfMissing,
        secrets: vec![],
    };
    let (_, entrypoint, files) = image_of(&servers[0]);
    assert_eq!(entrypoint, None, "the image's own entrypoint runs");
    assert_eq!(*files, defaults(ContainerNetwork::None));
    let (_, _, web) = image_of(&servers[1]);
    assert_eq!(
        *web,
        defaults(ContainerNetwork::Bridge),
        "an http server needs a network for its published port"
    );
    assert_eq!(
        servers[1].replicas, 3,
        "replicas of a container share the port number inside their own network"
    );
}

#[test]
fn container_errors_are_located() {
    let found = errors(&format!(
        r#"{HEAD}  neither:
    stdio: {{ args: [x] }}
  orphan:
    stdio: {{ command: npx }}
    container: {{ read_only: true }}
  faraway:
    remote: {{ url: "https://mcp.example.com/mcp" }}
    container: {{ pull: never }}
  blank:
    stdio: {{ image: "  " }}
  spaced:
    stdio: {{ image: "localhost/a:1 --debug" }}
  secretive:
    stdio: {{ image: "registry/{{{{ secret('token') }}}}:1" }}
  per-instance:
    http: {{ image: "registry/a:{{{{ port }}}}" }}
  closed:
    http: {{ image: localhost/web:1, port: 8080 }}
    container: {{ network: none }}
  limits:
    stdio: {{ image: localhost/a:1, cwd: data }}
    container:
      network: host
      user: "1000:"
      resources: {{ cpus: 0, memory: 256MB, pids: 0 }}
      volumes: ["data", "./d:data", "./d:/d:rx", "bad name:/x", "./a:/same", "b:/same"]
      pul: always
"#
    ));
    let expected: Vec<(u32, &str)> = vec![
        (7, "the `stdio` block names neither `command` nor `image`"),
        (10, "`container:` only applies to a server with `image:`"),
        (13, "`container:` only applies to a server with `image:`"),
        (15, "the image is empty"),
        (
            17,
            "`localhost/a:1 --debug` is not an image reference: it contains whitespace",
        ),
        (19, "the image reference uses a secret"),
        (21, "the image must be the same for every instance"),
        (
            24,
            "an http server's port cannot be published with `network: none`",
        ),
        (26, "`data` is not an absolute path"),
        (
            28,
            "`network: host` would share the host's network with the container",
        ),
        (29, "`1000:` is not a user"),
        (30, "`cpus` must be a number above zero"),
        (30, "invalid memory size: `MB` is not a unit of memory"),
        (30, "`pids` must be at least 1"),
        (31, "`data` is not a volume"),
        (31, "the volume's target `data` is not an absolute path"),
        (31, "unknown volume mode `rx`"),
        (31, "`bad name` is neither a host path nor a volume name"),
        (31, "two volumes are mounted at `/same`"),
        (32, "unknown key `pul`"),
    ];
    let mut found: Vec<(u32, &str)> = found.iter().map(|(l, m)| (*l, m.as_str())).collect();
    found.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn an_environment_overlays_container_keys_like_any_other() {
    let text = format!(
        r#"{PLAIN_HEAD}  files:
    stdio: {{ command: ./files }}
  web:
    http: {{ image: localhost/web:1, port: 8080 }}
    container:
      resources: {{ memory: 1Gi, pids: 64 }}
      volumes: ["./a:/a"]
environments:
  boxed:
    servers:
      files:
        stdio: {{ command: ~, image: localhost/files:2 }}
      web:
        container:
          resources: {{ memory: 2Gi }}
          volumes: ["cache:/cache"]
"#
    );
    let base = check(&text, None).into_valid().unwrap();
    assert!(matches!(
        &base.servers[0].transport,
        Transport::Stdio { command, .. } if matches!(command.executable, Executable::Program { .. })
    ));
    let boxed = check(&text, Some("boxed"));
    assert_eq!(boxed.diagnostics, vec![], "{:#?}", boxed.diagnostics);
    let boxed = boxed.into_valid().unwrap();
    let (image, entrypoint, _) = image_of(&boxed.servers[0]);
    assert_eq!(
        (image, entrypoint),
        ("localhost/files:2", None),
        "`command: ~` drops the base's program"
    );
    let (_, _, web) = image_of(&boxed.servers[1]);
    assert_eq!(
        web.resources,
        Resources {
            cpus: None,
            memory: Some(2 << 30),
            pids: Some(64),
        },
        "mappings merge key by key"
    );
    assert_eq!(
        web.volumes,
        [Volume {
            source: VolumeSource::Named("cache".into()),
            target: "/cache".into(),
            read_only: false,
        }],
        "a list replaces the base's"
    );
}

#[test]
fn container_secrets_become_files_and_secrets_in_what_inspect_shows_are_refused() {
    let servers = load(&format!(
        r#"{HEAD}  files:
    stdio: {{ image: localhost/files:1, args: [--token-file, /run/secrets/token] }}
    container:
      secrets: {{ /run/secrets/token: token }}
"#
    ));
    let (_, _, container) = image_of(&servers[0]);
    assert_eq!(container.secrets.len(), 1);
    assert_eq!(container.secrets[0].target, "/run/secrets/token");
    assert_eq!(container.secrets[0].secret, "token");
    assert_eq!(container.secrets[0].value.shown, "***");
    let found = errors(&format!(
        r#"{HEAD}  files:
    stdio:
      image: localhost/files:1
      command: "/bin/files-{{{{ secret('token') }}}}"
      args: ["--token={{{{ secret('token') }}}}"]
      env: {{ TOKEN: "{{{{ secret('token') }}}}" }}
    container:
      volumes: ["./d:/data"]
      secrets:
        run/token: token
        /run/missing: tokn
        /data: token
        /a:b: token
"#
    ));
    let found: Vec<(u32, &str)> = found.iter().map(|(l, m)| (*l, m.as_str())).collect();
    assert_eq!(
        found,
        [
            (
                9,
                "a secret in a container's command line is shown by the container engine's `inspect`"
            ),
            (
                10,
                "a secret in a container's command line is shown by the container engine's `inspect`"
            ),
            (
                11,
                "a secret in a container's environment is shown by the container engine's `inspect`"
            ),
            (15, "the secret's path `run/token` is not an absolute path"),
            (16, "unknown secret `tokn` (did you mean `token`?)"),
            (17, "two mounts are at `/data`"),
            (18, "the secret's path `/a:b` contains `:` or `,`"),
        ]
    );
}
