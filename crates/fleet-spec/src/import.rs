//! Importing MCP client configurations as fleet files, and the starter fleet file.
//!
//! Owns: reading the server tables of Claude Desktop, VS Code (`.vscode/mcp.json`, JSON with
//! comments) and Cursor configurations; turning each entry into a fleet server; moving every
//! literal secret out into a `secrets:` reference; writing the fleet file as YAML text in the
//! input's order. Whatever cannot be carried over is reported in [`Imported::notes`] (and as
//! a comment on the server), never dropped silently. Also [`STARTER`], the file
//! `mcpfleet init` writes.
//!
//! Does not own: reading files or choosing where they live (the CLI), or checking the result:
//! [`crate::load_str`] checks an imported file like any other.

use crate::yaml::{double_quoted, needs_escape};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::str::FromStr;

/// The commented fleet file `mcpfleet init` writes: one stdio server, defaults, and
/// commented-out examples of the other transports and of environments.
pub const STARTER: &str = include_str!("starter.yaml");

/// The MCP clients whose configuration files can be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKind {
    /// `claude_desktop_config.json`: servers under `mcpServers`.
    ClaudeDesktop,
    /// `.vscode/mcp.json` (JSON with comments): servers under `servers`, prompts under
    /// `inputs`.
    Vscode,
    /// `.cursor/mcp.json` or `~/.cursor/mcp.json`: servers under `mcpServers`.
    Cursor,
}

impl ClientKind {
    /// Every kind, in the order the CLI lists them.
    pub const ALL: [ClientKind; 3] = [
        ClientKind::ClaudeDesktop,
        ClientKind::Vscode,
        ClientKind::Cursor,
    ];

    /// The name used on the command line (`claude-desktop`, `vscode`, `cursor`).
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::ClaudeDesktop => "claude-desktop",
            ClientKind::Vscode => "vscode",
            ClientKind::Cursor => "cursor",
        }
    }

    /// The client's name for people ("Claude Desktop").
    pub fn display_name(self) -> &'static str {
        match self {
            ClientKind::ClaudeDesktop => "Claude Desktop",
            ClientKind::Vscode => "VS Code",
            ClientKind::Cursor => "Cursor",
        }
    }

    /// The top-level key holding the servers.
    pub fn servers_key(self) -> &'static str {
        match self {
            ClientKind::Vscode => "servers",
            ClientKind::ClaudeDesktop | ClientKind::Cursor => "mcpServers",
        }
    }

    /// Whether the client expands `${env:NAME}` (and, for VS Code, `${input:ID}`) itself.
    fn expands_variables(self) -> bool {
        matches!(self, ClientKind::Vscode | ClientKind::Cursor)
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A client name that is not one of [`ClientKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown client `{name}`; expected one of: claude-desktop, vscode, cursor")]
pub struct UnknownClientKind {
    /// The name as given.
    pub name: String,
}

impl FromStr for ClientKind {
    type Err = UnknownClientKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClientKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownClientKind {
                name: s.to_string(),
            })
    }
}

/// An imported fleet file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The fleet file, ready to be written to disk.
    pub yaml: String,
    /// What the user has to do or know, one sentence each: environment variables to set for
    /// secrets, renamed servers, settings that could not be carried over. Never holds a
    /// secret value.
    pub notes: Vec<String>,
    /// Every secret the file reads, each with the environment variable to export.
    pub secrets: Vec<SecretOut>,
}

/// Why a client configuration could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The text is not JSON, even allowing comments and trailing commas.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the JSON parser expected.
        message: String,
    },
    /// The configuration has no server table under the key this client uses.
    #[error("a {} configuration keeps its servers under `{expected}`, but {found}", .client.display_name())]
    MissingServers {
        /// The client the file was read as.
        client: ClientKind,
        /// The key that client uses.
        expected: &'static str,
        /// What the file holds instead, with a hint when it looks like another client's file.
        found: String,
    },
    /// A server entry has neither `command` (a local program) nor `url` (a remote server).
    #[error(
        "server `{server}` has neither `command` nor `url`, so there is nothing to run or reach"
    )]
    NoTransport {
        /// The server's name in the configuration.
        server: String,
    },
    /// A value has a JSON type the client's format does not allow there.
    #[error("`{path}` must be {expected}, but it is {found}")]
    WrongType {
        /// Where the value is, e.g. `mcpServers.github.args[1]`.
        path: String,
        /// The type the format allows.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
}

impl ImportError {
    fn from_json(e: &serde_json::Error) -> Self {
        let text = e.to_string();
        let message = match text.rsplit_once(" at line ") {
            Some((message, _)) => message.to_string(),
            None => text,
        };
        ImportError::InvalidJson {
            line: e.line(),
            column: e.column(),
            message,
        }
    }

    fn wrong_type(path: &str, expected: &'static str, found: &Json) -> Self {
        ImportError::WrongType {
            path: path.to_string(),
            expected,
            found: found.kind(),
        }
    }
}

/// Turns an MCP client configuration into a fleet file named `fleet_name`.
///
/// Stdio entries become `stdio:` servers and URL entries `remote:` servers, in the input's
/// order. Names are made valid fleet names; literal secrets (by key name or by value shape)
/// become `{{ secret('…') }}` references read from environment variables; VS Code's
/// `${input:ID}` becomes a secret too and `${env:NAME}` becomes `{{ env('NAME') }}`.
///
/// # Errors
/// [`ImportError`] when the text is not JSON, has no server table for this client, has a
/// server with neither `command` nor `url`, or has a value of the wrong JSON type.
pub fn import(kind: ClientKind, json: &str, fleet_name: &str) -> Result<Imported, ImportError> {
    let json = json.strip_prefix('\u{feff}').unwrap_or(json);
    let root: Json =
        serde_json::from_str(&strip_jsonc(json)).map_err(|e| ImportError::from_json(&e))?;
    let ServerTable {
        entries: table,
        inputs,
    } = server_table(kind, &root)?;
    let mut importer = Importer::new(kind, inputs)?;
    let name = importer.fleet_name(fleet_name);
    let mut servers = Vec::with_capacity(table.len());
    for (original, entry) in table {
        servers.push(importer.server(original, entry)?);
    }
    if servers.is_empty() {
        importer.note(
            None,
            format!("the {} configuration lists no servers", kind.display_name()),
        );
    }
    let yaml = write_fleet(kind, &name, &importer.secrets, &servers, &importer.notes);
    let notes = importer
        .notes
        .into_iter()
        .map(|n| match n.server {
            Some(server) => format!("server `{server}`: {}", n.text),
            None => n.text,
        })
        .collect();
    Ok(Imported {
        yaml,
        notes,
        secrets: importer.secrets,
    })
}

// ---------------------------------------------------------------------------------------
// Reading the client's JSON

/// A JSON value that keeps the order of object keys (and repeated keys), which
/// `serde_json::Value` does not without its `preserve_order` feature.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// The value of `key` in an object; the last one wins when a key repeats, as in
    /// JavaScript.
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Strings, numbers and booleans as text (clients accept numbers in `env`).
    fn scalar_text(&self) -> Option<String> {
        match self {
            Json::String(s) => Some(s.clone()),
            Json::Number(n) => Some(n.clone()),
            Json::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Number(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
                Ok(Json::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Json::Object(entries))
            }
        }
        d.deserialize_any(JsonVisitor)
    }
}

/// Blanks `//` and `/* */` comments and trailing commas outside strings, byte for byte, so
/// the JSON parser's line and column still point into the original text.
fn strip_jsonc(text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let n = bytes.len();
    let mut i = 0;
    let mut in_string = false;
    while i < n {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match (b, bytes.get(i + 1)) {
            (b'"', _) => in_string = true,
            (b'/', Some(b'/')) => {
                while i < n && bytes[i] != b'\n' {
                    bytes[i] = b' ';
                    i += 1;
                }
                continue;
            }
            (b'/', Some(b'*')) => {
                let end = text[i + 2..].find("*/").map_or(n, |e| i + 2 + e + 2);
                for byte in &mut bytes[i..end] {
                    if !matches!(*byte, b'\n' | b'\r') {
                        *byte = b' ';
                    }
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    // Second pass, on comment-free text: a comma followed only by blanks and a closing bracket.
    let mut in_string = false;
    let mut escaped = false;
    let mut pending_comma = None;
    for i in 0..n {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                pending_comma = None;
            }
            b',' => pending_comma = Some(i),
            b'}' | b']' => {
                if let Some(p) = pending_comma.take() {
                    bytes[p] = b' ';
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => pending_comma = None,
        }
    }
    // Only whole characters (all of a comment) or ASCII bytes were replaced by ASCII spaces.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Where a configuration keeps its servers.
struct ServerTable<'a> {
    entries: &'a [(String, Json)],
    /// VS Code's `inputs`: what the user is prompted for.
    inputs: Option<&'a Json>,
}

/// The server entries and VS Code's `inputs`, or why they are not there.
fn server_table(kind: ClientKind, root: &Json) -> Result<ServerTable<'_>, ImportError> {
    let key = kind.servers_key();
    let Json::Object(top) = root else {
        return Err(ImportError::MissingServers {
            client: kind,
            expected: key,
            found: format!("the file holds {}, not an object", root.kind()),
        });
    };
    // VS Code's settings.json nests the same table under `mcp`.
    let nested = (kind == ClientKind::Vscode && root.get(key).is_none())
        .then(|| root.get("mcp"))
        .flatten();
    let scope = nested.filter(|m| m.get(key).is_some()).unwrap_or(root);
    match scope.get(key) {
        Some(Json::Object(entries)) => Ok(ServerTable {
            entries,
            inputs: scope.get("inputs"),
        }),
        Some(other) => Err(ImportError::wrong_type(
            key,
            "an object of servers by name",
            other,
        )),
        None => Err(ImportError::MissingServers {
            client: kind,
            expected: key,
            found: describe_top_level(kind, top),
        }),
    }
}

fn describe_top_level(kind: ClientKind, top: &[(String, Json)]) -> String {
    if top.is_empty() {
        return "the file is an empty object".into();
    }
    let mut keys: Vec<String> = top.iter().take(8).map(|(k, _)| code(k)).collect();
    if top.len() > 8 {
        keys.push("…".into());
    }
    let mut found = format!("its top-level keys are {}", keys.join(", "));
    let has = |key: &str| top.iter().any(|(k, _)| k == key);
    if kind != ClientKind::Vscode && (has("servers") || has("mcp")) {
        found.push_str("; `servers` is where VS Code keeps them: try `mcpfleet import vscode`");
    } else if kind == ClientKind::Vscode && has("mcpServers") {
        found.push_str(
            "; `mcpServers` is where Claude Desktop and Cursor keep them: try `mcpfleet import claude-desktop` or `cursor`",
        );
    }
    found
}

/// A VS Code `inputs` entry: what the user is prompted for.
#[derive(Debug)]
struct Input {
    id: String,
    description: Option<String>,
}

fn read_inputs(inputs: Option<&Json>) -> Result<Vec<Input>, ImportError> {
    let items = match inputs {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Array(items)) => items,
        Some(other) => return Err(ImportError::wrong_type("inputs", "an array", other)),
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if !matches!(item, Json::Object(_)) {
            return Err(ImportError::wrong_type(
                &format!("inputs[{i}]"),
                "an object",
                item,
            ));
        }
        if let Some(Json::String(id)) = item.get("id") {
            let description = match item.get("description") {
                Some(Json::String(d)) => Some(d.clone()),
                _ => None,
            };
            out.push(Input {
                id: id.clone(),
                description,
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Mapping entries to fleet servers

#[derive(Debug)]
struct Note {
    /// The fleet name of the server it is about.
    server: Option<String>,
    text: String,
}

/// A secret the imported file declares (the value itself was never copied).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretOut {
    /// The secret's name in the fleet file (`{{ secret('name') }}`).
    pub name: String,
    /// The environment variable it is read from: what the user exports before deploying.
    pub env: String,
    /// The servers (their fleet names) that use it, in the input's order.
    pub servers: Vec<String>,
}

impl SecretOut {
    fn used_by(&mut self, server: &str) {
        if !self.servers.iter().any(|s| s == server) {
            self.servers.push(server.to_string());
        }
    }
}

#[derive(Debug)]
struct ServerOut {
    name: String,
    transport: TransportOut,
}

/// Every string here is final fleet-file text: literals escaped, references as templates.
#[derive(Debug)]
enum TransportOut {
    Stdio {
        command: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<String>,
    },
    Remote {
        url: String,
        headers: Vec<(String, String)>,
    },
}

/// A part of an imported string.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// Text as written; template syntax in it is escaped when rendered.
    Text(String),
    /// `{{ secret('name') }}`.
    Secret(String),
    /// `{{ env('NAME') }}`.
    Env(String),
}

/// Where a value sits, for secret names and for notes.
#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    /// Base of the secret name (`GITHUB_TOKEN`, `Authorization`, `url`).
    label: &'a str,
    /// The field for people (`env \`GITHUB_TOKEN\``).
    what: &'a str,
    /// Whether the key's name says it holds a secret.
    secret_key: bool,
    /// Whether `label` is the user's own environment variable name (a key of `env`): a
    /// secret made from the value reads that same variable.
    variable: bool,
}

const URL_TYPES: &[&str] = &["http", "sse", "streamable-http", "streamableHttp"];
const STDIO_KEYS: &[&str] = &["command", "args", "env", "envFile", "cwd"];
const REMOTE_KEYS: &[&str] = &["url", "headers"];

struct Importer {
    kind: ClientKind,
    inputs: Vec<Input>,
    secrets: Vec<SecretOut>,
    /// Secrets created for `${input:ID}`, by input id.
    input_secrets: Vec<(String, String)>,
    server_names: BTreeSet<String>,
    notes: Vec<Note>,
}

impl Importer {
    fn new(kind: ClientKind, inputs: Option<&Json>) -> Result<Self, ImportError> {
        Ok(Importer {
            kind,
            inputs: read_inputs(inputs)?,
            secrets: Vec::new(),
            input_secrets: Vec::new(),
            server_names: BTreeSet::new(),
            notes: Vec::new(),
        })
    }

    fn note(&mut self, server: Option<&str>, text: String) {
        let server = server.map(str::to_string);
        if !self
            .notes
            .iter()
            .any(|n| n.server == server && n.text == text)
        {
            self.notes.push(Note { server, text });
        }
    }

    fn fleet_name(&mut self, wanted: &str) -> String {
        let name = sanitize_name(wanted, "imported");
        if name != wanted {
            self.note(
                None,
                format!(
                    "the fleet is named `{name}` instead of {}: {NAME_RULE}",
                    code(wanted)
                ),
            );
        }
        name
    }

    fn server_name(&mut self, original: &str) -> String {
        let base = sanitize_name(original, "server");
        let name = unique(&base, '-', |n| self.server_names.contains(n));
        self.server_names.insert(name.clone());
        if name != base {
            self.note(
                Some(&name),
                format!(
                    "renamed from {}: `{base}` was already taken",
                    code(original)
                ),
            );
        } else if name != original {
            self.note(
                Some(&name),
                format!("renamed from {}: {NAME_RULE}", code(original)),
            );
        }
        name
    }

    fn server(&mut self, original: &str, entry: &Json) -> Result<ServerOut, ImportError> {
        let path = format!("{}.{original}", self.kind.servers_key());
        let Json::Object(fields) = entry else {
            return Err(ImportError::wrong_type(&path, "an object", entry));
        };
        let name = self.server_name(original);
        let server = Some(name.as_str());
        let ty = optional_string(entry, "type", &path)?;
        let command = optional_string(entry, "command", &path)?.filter(|c| !c.trim().is_empty());
        let url = optional_string(entry, "url", &path)?.filter(|u| !u.trim().is_empty());
        if let Some(t) = ty.filter(|t| *t != "stdio" && !URL_TYPES.contains(t)) {
            self.note(server, format!("`type: {}` is not a transport mcpfleet knows; it was inferred from `command`/`url` instead", code_inner(t)));
        }
        let wants_url = ty.is_some_and(|t| URL_TYPES.contains(&t));
        let use_url = match (command, url) {
            (Some(_), Some(_)) => {
                let (kept, dropped) = if wants_url {
                    ("url", "command")
                } else {
                    ("command", "url")
                };
                self.note(server, format!("has both `command` and `url`; imported the `{kept}`, the `{dropped}` was not carried over"));
                wants_url
            }
            (Some(_), None) => {
                if let Some(t) = ty.filter(|_| wants_url) {
                    self.note(server, format!("says `type: {t}` but has only a `command`; imported as a local (stdio) server"));
                }
                false
            }
            (None, Some(_)) => true,
            (None, None) => {
                return Err(ImportError::NoTransport {
                    server: original.to_string(),
                });
            }
        };

        let used: &[&str] = if use_url { REMOTE_KEYS } else { STDIO_KEYS };
        let mut dropped = Vec::new();
        for (key, value) in fields {
            if key == "type" || used.contains(&key.as_str()) {
                continue;
            }
            if key == "disabled" && matches!(value, Json::Bool(true)) {
                self.note(server, format!("is disabled in {}; it was imported anyway — remove it if it should not be deployed", self.kind.display_name()));
            } else if !dropped.contains(&key.as_str()) {
                dropped.push(key.as_str());
            }
        }
        if !dropped.is_empty() {
            let keys: Vec<String> = dropped.iter().map(|k| code(k)).collect();
            self.note(
                server,
                format!(
                    "not carried over (no fleet-file equivalent here): {}",
                    keys.join(", ")
                ),
            );
        }

        let transport = if use_url {
            self.remote(&name, entry, &path, ty)?
        } else {
            self.stdio(&name, entry, &path)?
        };
        Ok(ServerOut { name, transport })
    }

    fn stdio(
        &mut self,
        server: &str,
        entry: &Json,
        path: &str,
    ) -> Result<TransportOut, ImportError> {
        let mut command = optional_string(entry, "command", path)?
            .unwrap_or_default()
            .to_string();
        let mut args = string_list(entry.get("args"), &format!("{path}.args"))?;
        if args.is_empty()
            && command.trim().contains(char::is_whitespace)
            && !looks_like_path(command.trim())
        {
            let mut words = command.split_whitespace().map(str::to_string);
            let program = words.next().unwrap_or_default();
            args = words.collect();
            command = program;
            self.note(Some(server), "`command` was a whole command line; it was split at spaces into `command` and `args` because mcpfleet runs no shell — check that no quoted argument was split".into());
        }
        let command = render(&self.expand(server, &command, false));
        let args = self.args(server, &args);
        let env = self.pairs(server, entry.get("env"), &format!("{path}.env"), "env")?;
        if let Some(env_file) = optional_string(entry, "envFile", path)? {
            self.note(Some(server), format!("`envFile` {} is not read by mcpfleet; copy the variables the server needs into `env:` (secrets as {{{{ secret('…') }}}} references)", code(env_file)));
        }
        let cwd = match optional_string(entry, "cwd", path)? {
            Some(cwd) => {
                if !looks_like_path(cwd) || cwd.starts_with('.') {
                    self.note(Some(server), format!("`cwd` {} is relative: mcpfleet resolves it against the fleet file's directory, {} against its own", code(cwd), self.kind.display_name()));
                }
                Some(render(&self.expand(server, cwd, false)))
            }
            None => None,
        };
        Ok(TransportOut::Stdio {
            command,
            args,
            env,
            cwd,
        })
    }

    fn remote(
        &mut self,
        server: &str,
        entry: &Json,
        path: &str,
        ty: Option<&str>,
    ) -> Result<TransportOut, ImportError> {
        let raw_url = optional_string(entry, "url", path)?.unwrap_or_default();
        let sse_path = raw_url
            .split(['?', '#'])
            .next()
            .is_some_and(|u| u.trim_end_matches('/').ends_with("/sse"));
        if ty == Some("sse") || (ty.is_none() && sse_path) {
            let why = if ty == Some("sse") {
                "is an SSE server (`type: sse`)"
            } else {
                "has a URL ending in `/sse`, the old HTTP+SSE transport"
            };
            self.note(Some(server), format!("{why}; mcpfleet reaches remote servers over Streamable HTTP only, so it was imported as `remote:` — if the server has no Streamable HTTP endpoint (often `/mcp`), it will fail its health check"));
        }
        let field = Field {
            label: "url",
            what: "the URL",
            secret_key: false,
            variable: false,
        };
        let url = self.value(server, raw_url, field);
        let headers = self.pairs(
            server,
            entry.get("headers"),
            &format!("{path}.headers"),
            "header",
        )?;
        Ok(TransportOut::Remote { url, headers })
    }

    /// `env` or `headers`: an object of strings, in order, each value checked for secrets.
    fn pairs(
        &mut self,
        server: &str,
        value: Option<&Json>,
        path: &str,
        what: &str,
    ) -> Result<Vec<(String, String)>, ImportError> {
        let entries = match value {
            None | Some(Json::Null) => return Ok(Vec::new()),
            Some(Json::Object(entries)) => entries,
            Some(other) => {
                return Err(ImportError::wrong_type(path, "an object of strings", other));
            }
        };
        let mut out: Vec<(String, String)> = Vec::new();
        for (key, value) in entries {
            let raw = match value {
                Json::Null => {
                    self.note(
                        Some(server),
                        format!("{what} {} is null (unset); it was left out", code(key)),
                    );
                    continue;
                }
                v => v.scalar_text().ok_or_else(|| {
                    ImportError::wrong_type(&format!("{path}.{key}"), "a string", v)
                })?,
            };
            if what == "env" && (key.is_empty() || key.contains(['=', '\0'])) {
                self.note(
                    Some(server),
                    format!(
                        "env {} is not a valid variable name; it was left out",
                        code(key)
                    ),
                );
                continue;
            }
            let label = format!("{what} {}", code(key));
            let field = Field {
                label: key,
                what: &label,
                secret_key: key_looks_secret(key),
                variable: what == "env" && is_env_name(key),
            };
            let rendered = self.value(server, &raw, field);
            match out.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => {
                    self.note(
                        Some(server),
                        format!("{label} is set twice; the last value was kept"),
                    );
                    slot.1 = rendered;
                }
                None => out.push((key.clone(), rendered)),
            }
        }
        Ok(out)
    }

    fn args(&mut self, server: &str, raw: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(raw.len());
        let mut after_secret_flag: Option<&str> = None;
        for (i, arg) in raw.iter().enumerate() {
            let flag = after_secret_flag.take();
            let pieces = self.expand(server, arg, false);
            let [Piece::Text(text)] = pieces.as_slice() else {
                out.push(render(&pieces));
                continue;
            };
            let what = match flag {
                Some(flag) => format!("argument {} (after {})", i + 1, code(flag)),
                None => format!("argument {}", i + 1),
            };
            let pieces = if let Some(flag) = flag.filter(|_| !text.starts_with('-')) {
                let field = Field {
                    label: flag.trim_start_matches('-'),
                    what: &what,
                    secret_key: true,
                    variable: false,
                };
                self.protect(server, text, field)
            } else if let Some((flag, value)) =
                text.split_once('=').filter(|(f, _)| f.starts_with('-'))
            {
                let label = flag.trim_start_matches('-');
                let field = Field {
                    label,
                    what: &what,
                    secret_key: key_looks_secret(label),
                    variable: false,
                };
                prefixed(format!("{flag}="), self.protect(server, value, field))
            } else if let Some((name, value)) = header_line(text) {
                let field = Field {
                    label: name,
                    what: &what,
                    secret_key: key_looks_secret(name),
                    variable: false,
                };
                prefixed(
                    text[..text.len() - value.len()].to_string(),
                    self.protect(server, value, field),
                )
            } else {
                let field = Field {
                    label: "token",
                    what: &what,
                    secret_key: false,
                    variable: false,
                };
                self.protect(server, text, field)
            };
            if arg.starts_with('-')
                && !arg.contains('=')
                && key_looks_secret(arg.trim_start_matches('-'))
            {
                after_secret_flag = Some(arg);
            }
            out.push(render(&pieces));
        }
        out
    }

    /// Expands client variables, then moves literal secrets out of a value.
    fn value(&mut self, server: &str, raw: &str, field: Field<'_>) -> String {
        let pieces = self.expand(server, raw, field.secret_key);
        match pieces.as_slice() {
            [Piece::Text(text)] => render(&self.protect(server, text, field)),
            _ => render(&pieces),
        }
    }

    /// Splits out `${env:NAME}` and (VS Code) `${input:ID}`; other variables stay as written,
    /// with a note. Under a secret-looking key, `${env:NAME}` becomes a secret read from that
    /// variable, so plans and logs show `***` instead of its value.
    fn expand(&mut self, server: &str, raw: &str, env_as_secret: bool) -> Vec<Piece> {
        if !self.kind.expands_variables() || !raw.contains("${") {
            return vec![Piece::Text(raw.to_string())];
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = raw;
        while let Some(start) = rest.find("${") {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            text.push_str(&rest[..start]);
            let whole = &rest[start..=start + len];
            let inner = &rest[start + 2..start + len];
            rest = &rest[start + len + 1..];
            let piece = match inner.split_once(':') {
                Some(("env", var)) if is_env_name(var) && env_as_secret => {
                    let name = self.secret_reading(server, &snake(var), var);
                    self.note(Some(server), format!("`{whole}` became secret `{name}`, read from the environment variable {var}"));
                    Piece::Secret(name)
                }
                Some(("env", var)) if is_env_name(var) => {
                    self.note(Some(server), format!("`{whole}` became {{{{ env('{var}') }}}}: {var} must be set wherever mcpfleet checks or runs this fleet"));
                    Piece::Env(var.to_string())
                }
                Some(("input", id)) if self.kind == ClientKind::Vscode && !id.is_empty() => {
                    Piece::Secret(self.input_secret(server, id))
                }
                _ => {
                    text.push_str(whole);
                    self.note(Some(server), format!("{} is a {} variable mcpfleet does not expand; it was copied as written — replace it with a value", code(whole), self.kind.display_name()));
                    continue;
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
        }
        text.push_str(rest);
        if !text.is_empty() || pieces.is_empty() {
            pieces.push(Piece::Text(text));
        }
        pieces
    }

    /// Replaces the secret parts of a literal value by secret references.
    fn protect(&mut self, server: &str, value: &str, field: Field<'_>) -> Vec<Piece> {
        if value.is_empty() || is_reference(value) {
            return vec![Piece::Text(value.to_string())];
        }
        let (scheme, credential) = split_auth_scheme(value);
        if field.secret_key || value_looks_secret(value) {
            if is_reference(credential) {
                return vec![Piece::Text(value.to_string())];
            }
            let part = if scheme.is_empty() {
                "its value".to_string()
            } else {
                format!("the part after `{}`", scheme.trim_end())
            };
            let secret = self.literal_secret(server, field, &part);
            return prefixed(scheme.to_string(), vec![Piece::Secret(secret)]);
        }
        if value.contains("://") {
            return self.protect_url(server, value, field);
        }
        vec![Piece::Text(value.to_string())]
    }

    /// Moves a URL's password and secret-looking query parameters into secrets.
    fn protect_url(&mut self, server: &str, url: &str, field: Field<'_>) -> Vec<Piece> {
        let mut cuts: Vec<(usize, usize, String, String)> = Vec::new();
        let mut query_from = 0;
        if let Some(scheme_end) = url.find("://") {
            let start = scheme_end + 3;
            let end = url[start..]
                .find(['/', '?', '#'])
                .map_or(url.len(), |i| start + i);
            query_from = end;
            let authority = &url[start..end];
            if let Some(at) = authority.rfind('@')
                && let Some(colon) = authority[..at].find(':')
            {
                let (s, e) = (start + colon + 1, start + at);
                if s < e && !is_reference(&url[s..e]) {
                    cuts.push((
                        s,
                        e,
                        format!("{}_password", field.label),
                        format!("the password in {}", field.what),
                    ));
                }
            }
        }
        if let Some(q) = url[query_from..].find('?').map(|q| query_from + q) {
            let end = url[q..].find('#').map_or(url.len(), |i| q + i);
            let mut pos = q + 1;
            for param in url[q + 1..end].split('&') {
                if let Some((key, value)) = param.split_once('=')
                    && !value.is_empty()
                    && !is_reference(value)
                    && (key_looks_secret(key) || value_looks_secret(value))
                {
                    let s = pos + key.len() + 1;
                    cuts.push((
                        s,
                        s + value.len(),
                        key.to_string(),
                        format!("query parameter {} of {}", code(key), field.what),
                    ));
                }
                pos += param.len() + 1;
            }
        }
        let mut pieces = Vec::new();
        let mut last = 0;
        for (s, e, label, what) in cuts {
            pieces.push(Piece::Text(url[last..s].to_string()));
            let field = Field {
                label: &label,
                what: &what,
                secret_key: true,
                variable: false,
            };
            pieces.push(Piece::Secret(self.literal_secret(
                server,
                field,
                "its value",
            )));
            last = e;
        }
        pieces.push(Piece::Text(url[last..].to_string()));
        pieces.retain(|p| *p != Piece::Text(String::new()));
        pieces
    }

    /// A new secret for a literal value, with its own environment variable: the user's own
    /// variable name when the value sat under one (`env: {API_KEY: …}` reads `API_KEY`),
    /// prefixed with the server's name only when another secret already reads it.
    fn literal_secret(&mut self, server: &str, field: Field<'_>, part: &str) -> String {
        let taken = |secrets: &[SecretOut], name: &str, env: &str| {
            secrets.iter().any(|s| s.name == name || s.env == env)
        };
        let own = field
            .variable
            .then(|| (snake(field.label), field.label.to_string()))
            .filter(|(name, env)| !taken(&self.secrets, name, env));
        let (name, env) = own.unwrap_or_else(|| {
            let wanted = secret_name(server, field.label);
            let name = unique(&wanted, '_', |n| {
                taken(&self.secrets, n, &n.to_ascii_uppercase())
            });
            let env = name.to_ascii_uppercase();
            (name, env)
        });
        let what = field.what;
        self.note(Some(server), format!("{what} is a secret and was not copied: it now reads secret `{name}` — set the environment variable {env} to {part} before deploying"));
        self.secrets.push(SecretOut {
            name: name.clone(),
            env,
            servers: vec![server.to_string()],
        });
        name
    }

    /// The secret read from environment variable `env`, declared once however often it is used.
    fn secret_reading(&mut self, server: &str, wanted: &str, env: &str) -> String {
        if let Some(s) = self.secrets.iter_mut().find(|s| s.env == env) {
            s.used_by(server);
            return s.name.clone();
        }
        let name = unique(wanted, '_', |n| self.secrets.iter().any(|s| s.name == n));
        self.secrets.push(SecretOut {
            name: name.clone(),
            env: env.to_string(),
            servers: vec![server.to_string()],
        });
        name
    }

    fn input_secret(&mut self, server: &str, id: &str) -> String {
        if let Some((_, name)) = self.input_secrets.iter().find(|(i, _)| i == id) {
            let name = name.clone();
            if let Some(s) = self.secrets.iter_mut().find(|s| s.name == name) {
                s.used_by(server);
            }
            return name;
        }
        let wanted = snake(id);
        let env = wanted.to_ascii_uppercase();
        let name = self.secret_reading(server, &wanted, &env);
        let prompt = match self.inputs.iter().find(|i| i.id == id) {
            Some(Input {
                description: Some(d),
                ..
            }) => format!(" ({})", code(d)),
            Some(_) => String::new(),
            None => " (not declared under `inputs`)".to_string(),
        };
        self.note(Some(server), format!("`${{input:{}}}`{prompt} is prompted for by VS Code; it became secret `{name}` — set the environment variable {env} before deploying", code_inner(id)));
        self.input_secrets.push((id.to_string(), name.clone()));
        name
    }
}

fn optional_string<'a>(
    entry: &'a Json,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ImportError> {
    match entry.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(other) => Err(ImportError::wrong_type(
            &format!("{path}.{key}"),
            "a string",
            other,
        )),
    }
}

fn string_list(value: Option<&Json>, path: &str) -> Result<Vec<String>, ImportError> {
    match value {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.scalar_text().ok_or_else(|| {
                    ImportError::wrong_type(&format!("{path}[{i}]"), "a string", item)
                })
            })
            .collect(),
        Some(other) => Err(ImportError::wrong_type(path, "an array of strings", other)),
    }
}

fn prefixed(prefix: String, mut pieces: Vec<Piece>) -> Vec<Piece> {
    if !prefix.is_empty() {
        pieces.insert(0, Piece::Text(prefix));
    }
    pieces
}

// ---------------------------------------------------------------------------------------
// Names and secrets

const NAME_RULE: &str = "fleet names use 1 to 63 lowercase letters, digits, `-` and `_`, starting with a letter or digit";

/// Lowercases and replaces what a fleet name cannot hold by `-`.
fn sanitize_name(original: &str, fallback: &str) -> String {
    let mut out = String::new();
    for c in original.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut name = out
        .trim_start_matches(['-', '_'])
        .trim_end_matches('-')
        .to_string();
    name.truncate(63);
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        fallback.to_string()
    } else {
        name.to_string()
    }
}

/// `wanted`, or `wanted{sep}2`, `{sep}3`… — the first that is not taken, within 63 characters.
fn unique(wanted: &str, sep: char, taken: impl Fn(&str) -> bool) -> String {
    if !taken(wanted) {
        return wanted.to_string();
    }
    (2..)
        .map(|n| {
            let suffix = format!("{sep}{n}");
            let mut base = wanted.to_string();
            base.truncate(63 - suffix.len());
            format!("{base}{suffix}")
        })
        .find(|candidate| !taken(candidate))
        .unwrap_or_default()
}

/// `lower_snake_case` of letters and digits, never starting with a digit.
fn snake(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_');
    match out.chars().next() {
        None => "secret".to_string(),
        Some(c) if c.is_ascii_digit() => format!("secret_{out}"),
        Some(_) => out.to_string(),
    }
}

/// `github` + `GITHUB_PERSONAL_ACCESS_TOKEN` → `github_personal_access_token`;
/// `docs` + `Authorization` → `docs_authorization`: the server's name is prefixed unless the
/// key already names it.
fn secret_name(server: &str, label: &str) -> String {
    let key = snake(label);
    let server = snake(server);
    let key_words: Vec<&str> = key.split('_').collect();
    if server
        .split('_')
        .any(|w| w.len() >= 3 && key_words.contains(&w))
    {
        key
    } else {
        format!("{server}_{key}")
    }
}

const SECRET_WORDS: &[&str] = &[
    "TOKEN",
    "KEY",
    "SECRET",
    "PASSWORD",
    "PASS",
    "AUTH",
    "CREDENTIAL",
];

/// Whether a name (env variable, header, flag, query parameter) says it holds a secret.
fn key_looks_secret(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

const TOKEN_PREFIXES: &[&str] = &[
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "sk-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "xox",
    "xapp-",
    "hf_",
    "npm_",
    "pypi-",
    "AKIA",
    "AIza",
    "lin_api_",
    "pplx-",
    "ntn_",
];

/// Whether a value has the shape of a credential, whatever its key is called.
fn value_looks_secret(value: &str) -> bool {
    let v = value.trim();
    if let Some(credential) = v
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("bearer "))
        .map(|_| &v[7..])
    {
        return !credential.trim().is_empty();
    }
    if v.len() >= 12 && TOKEN_PREFIXES.iter().any(|p| v.starts_with(p)) {
        return true;
    }
    if v.starts_with("eyJ") && v.matches('.').count() == 2 && v.len() >= 30 {
        return true; // a JWT
    }
    // Long random-looking strings: API keys, hex digests, UUIDs.
    let digits = v.chars().filter(char::is_ascii_digit).count();
    v.len() >= 32
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '='))
        && v.chars().any(|c| c.is_ascii_alphabetic())
        && digits >= 4
        && digits * 10 >= v.len()
}

/// Splits an HTTP auth scheme off a credential: `Bearer abc` → (`Bearer `, `abc`). Without
/// a scheme the first part is empty.
fn split_auth_scheme(value: &str) -> (&str, &str) {
    for scheme in ["bearer ", "basic ", "token "] {
        if value.len() > scheme.len()
            && value.is_char_boundary(scheme.len())
            && value[..scheme.len()].eq_ignore_ascii_case(scheme)
        {
            return value.split_at(scheme.len());
        }
    }
    ("", value)
}

/// `$NAME` or `${NAME}`: a reference the server or a wrapper expands, not a value.
fn is_reference(value: &str) -> bool {
    let inner = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'));
    inner.is_some_and(is_env_name)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `Authorization: Bearer x` (a header passed as an argument, as `mcp-remote --header` takes
/// it) → (`Authorization`, `Bearer x`).
fn header_line(arg: &str) -> Option<(&str, &str)> {
    let (name, value) = arg.split_once(':')?;
    let valid_name =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    (valid_name && !value.starts_with("//")).then(|| (name, value.trim_start()))
}

fn looks_like_path(command: &str) -> bool {
    command.starts_with(['/', '\\', '.', '~']) || command.as_bytes().get(1) == Some(&b':')
}

// ---------------------------------------------------------------------------------------
// Writing the fleet file

fn render(pieces: &[Piece]) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(&escape_template(text)),
            Piece::Secret(name) => {
                let _ = write!(out, "{{{{ secret('{name}') }}}}");
            }
            Piece::Env(var) => {
                let _ = write!(out, "{{{{ env('{var}') }}}}");
            }
        }
    }
    out
}

/// Makes template syntax in imported text literal: `{{` becomes `{{ '{{' }}`, and likewise
/// `{%` and `{#`.
fn escape_template(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        match rest.as_bytes().get(i + 1) {
            Some(next @ (b'{' | b'%' | b'#')) => {
                let _ = write!(out, "{{{{ '{{{}' }}}}", char::from(*next));
                rest = &rest[i + 2..];
            }
            _ => {
                out.push('{');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn write_fleet(
    kind: ClientKind,
    name: &str,
    secrets: &[SecretOut],
    servers: &[ServerOut],
    notes: &[Note],
) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Imported from a {} configuration by `mcpfleet import {}`.",
        kind.display_name(),
        kind.name()
    );
    if !secrets.is_empty() {
        y.push_str(
            "# Secret values were not copied: set the environment variable each secret names.\n",
        );
    }
    y.push_str("# Check it with `mcpfleet validate`.\n");
    y.push_str("version: 1\n");
    let _ = writeln!(y, "name: {}", double_quoted(name));
    if !secrets.is_empty() {
        y.push_str("\nsecrets:\n");
        for secret in secrets {
            let _ = writeln!(
                y,
                "  {}:\n    env: {}",
                key(&secret.name),
                double_quoted(&secret.env)
            );
        }
    }
    y.push_str("\nservers:");
    if servers.is_empty() {
        y.push_str(" {}");
    }
    y.push('\n');
    for (i, server) in servers.iter().enumerate() {
        if i > 0 {
            y.push('\n');
        }
        for note in notes
            .iter()
            .filter(|n| n.server.as_deref() == Some(server.name.as_str()))
        {
            let _ = writeln!(y, "  # {}", comment_text(&note.text));
        }
        let _ = writeln!(y, "  {}:", key(&server.name));
        match &server.transport {
            TransportOut::Stdio {
                command,
                args,
                env,
                cwd,
            } => {
                y.push_str("    stdio:\n");
                let _ = writeln!(y, "      command: {}", double_quoted(command));
                if !args.is_empty() {
                    y.push_str("      args:\n");
                    for arg in args {
                        let _ = writeln!(y, "        - {}", double_quoted(arg));
                    }
                }
                write_pairs(&mut y, "env", env);
                if let Some(cwd) = cwd {
                    let _ = writeln!(y, "      cwd: {}", double_quoted(cwd));
                }
            }
            TransportOut::Remote { url, headers } => {
                y.push_str("    remote:\n");
                let _ = writeln!(y, "      url: {}", double_quoted(url));
                write_pairs(&mut y, "headers", headers);
            }
        }
    }
    y
}

fn write_pairs(y: &mut String, section: &str, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(y, "      {section}:");
    for (k, v) in pairs {
        let _ = writeln!(y, "        {}: {}", key(k), double_quoted(v));
    }
}

/// A mapping key: bare when it is plainly a string in YAML, quoted otherwise.
fn key(text: &str) -> String {
    let mut chars = text.chars();
    let plain = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        text.to_string()
    } else {
        double_quoted(text)
    }
}

/// User text inside a note: in backticks, with line breaks and invisible characters escaped
/// so a note is always one line (notes also become YAML comments).
fn code(text: &str) -> String {
    format!("`{}`", code_inner(text))
}

fn code_inner(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if needs_escape(c) { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_comments_and_trailing_commas_outside_strings() {
        let text = "{ // note\n \"a\": \"http://x/*y*/\", /* b,\n */ \"b\": [1, 2,], \"c\": \"\\\"//\",\n}";
        let stripped = strip_jsonc(text);
        assert_eq!(stripped.len(), text.len());
        assert_eq!(stripped.lines().count(), text.lines().count());
        let value: serde_json::Value = serde_json::from_str(&stripped).unwrap();
        assert_eq!(value["a"], "http://x/*y*/");
        assert_eq!(value["c"], "\"//");
        assert_eq!(value["b"], serde_json::json!([1, 2]));
    }

    #[test]
    fn names_and_secret_names() {
        assert_eq!(sanitize_name("GitHub Tools", "s"), "github-tools");
        assert_eq!(sanitize_name("@scope/pkg", "s"), "scope-pkg");
        assert_eq!(sanitize_name("???", "server"), "server");
        assert_eq!(sanitize_name(&"x".repeat(80), "s").len(), 63);
        assert_eq!(unique("a", '-', |n| n == "a" || n == "a-2"), "a-3");
        assert_eq!(
            secret_name("github", "GITHUB_PERSONAL_ACCESS_TOKEN"),
            "github_personal_access_token"
        );
        assert_eq!(
            secret_name("brave-search", "BRAVE_API_KEY"),
            "brave_api_key"
        );
        assert_eq!(secret_name("docs", "Authorization"), "docs_authorization");
        assert_eq!(snake("9lives"), "secret_9lives");
    }

    #[test]
    fn recognizes_token_shapes() {
        for secret in [
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "sk-proj-abcdefghijklmnop",
            "xoxb-1234-5678-abcdefgh",
            "Bearer abc",
            "0123456789abcdef0123456789abcdef",
            "550e8400-e29b-41d4-a716-446655440000",
        ] {
            assert!(value_looks_secret(secret), "{secret}");
        }
        for plain in [
            "npx",
            "/Users/alice/Desktop",
            "@modelcontextprotocol/server-filesystem",
            "https://example.com/mcp",
            "mcp-server-sequential-thinking-tools-v2",
            "true",
        ] {
            assert!(!value_looks_secret(plain), "{plain}");
        }
    }

    #[test]
    fn escapes_template_syntax() {
        assert_eq!(
            escape_template("a {{b}} {% c {# d { e"),
            "a {{ '{{' }}b}} {{ '{%' }} c {{ '{#' }} d { e"
        );
        assert_eq!(escape_template("{{{"), "{{ '{{' }}{");
    }
}
