//! A small W3C WebDriver client for the browser tests: [`Browser`] starts Debian's
//! `chromedriver` on a free loopback port, opens one headless Chromium session through it
//! and drives the page — navigate, find elements by CSS selector, read their text and
//! attributes, click, type, run a script, take a screenshot. Dropping the [`Browser`] ends
//! the session and kills the driver's process group, Chromium included.
//!
//! Deliberately only the commands the tests use, over the hyper client the workspace
//! already builds, rather than a general client crate (fantoccini, thirtyfour). Waiting on
//! the page is [`Browser::wait_for`] (an element matching a selector, attribute selectors
//! included), [`Browser::wait_for_text`], or [`wait_until`](crate::wait_until) with browser
//! calls in the condition (an element not there yet is an `Err`, so "not yet").
//!
//! Both programs come from Debian's `chromium` and `chromium-driver`, which
//! `cargo xtask peers` installs; without them [`Browser::start`] fails saying so, and a
//! test that needs a browser fails rather than skips.

use crate::TempDir;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// The browser window: a laptop screen, what the dashboard must be legible on.
pub const WINDOW: (u32, u32) = (1280, 800);

/// How long chromedriver may take to listen, and Chromium to open a session, on a loaded
/// machine.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How long [`Browser`]'s drop waits for chromedriver to end the session before it kills
/// the process group anyway.
const QUIT_DEADLINE: Duration = Duration::from_secs(5);

/// The key under which WebDriver passes an element reference (W3C WebDriver, "Elements").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// What chromedriver prints once it listens; the port follows.
const READY_LINE: &str = "ChromeDriver was started successfully on port ";

/// The command that installs what the browser tests need.
const INSTALL: &str =
    "run `cargo xtask peers` (as root: it runs `apt-get install chromium chromium-driver`)";

/// Why a browser could not be started or a WebDriver command failed.
#[derive(Debug, thiserror::Error)]
pub enum WebDriverError {
    /// A program the browser tests need is not on `PATH`.
    #[error("`{program}` is not installed (not on PATH): {INSTALL}")]
    NotInstalled {
        /// The program looked for.
        program: String,
    },
    /// chromedriver could not be spawned.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program that failed to start.
        program: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// chromedriver exited, or did not say it was listening within the deadline.
    #[error("chromedriver did not start listening within {deadline:?}; it printed: {printed}")]
    NotReady {
        /// How long it was given.
        deadline: Duration,
        /// Its output up to then.
        printed: String,
    },
    /// The HTTP exchange with chromedriver failed (it died, or the connection broke).
    #[error("{command}: cannot talk to chromedriver: {reason}")]
    Transport {
        /// The WebDriver command, as `METHOD path`.
        command: String,
        /// What failed.
        reason: String,
    },
    /// chromedriver answered the command with a WebDriver error (no such element, a
    /// script that threw, a session that could not be created).
    #[error("{command}: {error}: {message}")]
    Command {
        /// The WebDriver command, as `METHOD path` with its selector or script when it has one.
        command: String,
        /// The W3C error code, e.g. `no such element`.
        error: String,
        /// The driver's explanation.
        message: String,
    },
    /// chromedriver answered with something that is not what the command returns.
    #[error("{command}: unexpected answer from chromedriver: {answer}")]
    Answer {
        /// The WebDriver command, as `METHOD path`.
        command: String,
        /// What came back (cut short).
        answer: String,
    },
    /// A screenshot could not be written.
    #[error("cannot write the screenshot {path}: {source}")]
    Screenshot {
        /// Where it was to go.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A headless Chromium with one WebDriver session, driven through its own chromedriver.
///
/// Dropping it ends the session (bounded by a few seconds) and then kills the driver's
/// process group, so no Chromium outlives a test, a failing one included.
#[derive(Debug)]
pub struct Browser {
    http: Client<HttpConnector, Full<Bytes>>,
    port: u16,
    session_id: String,
    driver: tokio::process::Child,
    /// Chromium's profile, removed after the processes are gone.
    profile: TempDir,
}

impl Browser {
    /// `chromium` driven by `chromedriver`, both from `PATH`.
    ///
    /// # Errors
    /// When either is not installed (the message says how to install them), chromedriver
    /// does not start listening within 30 s, or it cannot open a session.
    pub async fn start() -> Result<Self, WebDriverError> {
        Self::start_with("chromedriver", "chromium").await
    }

    /// Like [`start`](Self::start), with the two programs named (looked up on `PATH`
    /// unless a path is given).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn start_with(driver: &str, chromium: &str) -> Result<Self, WebDriverError> {
        let driver_path = installed(driver)?;
        let chromium = installed(chromium)?;
        let (child, port) = start_driver(&driver_path).await?;
        let mut browser = Self {
            http: Client::builder(TokioExecutor::new()).build_http(),
            port,
            session_id: String::new(),
            driver: child,
            profile: TempDir::new("chromium-profile"),
        };
        let (width, height) = WINDOW;
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Running as root (CI, containers) Chromium refuses its sandbox.
                    "--no-sandbox",
                    "--disable-gpu",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", browser.profile.path().display()),
                    // No first-run dialogs, update checks or sync: nothing but the page.
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                ],
            },
        }}});
        let session = browser
            .send(Method::POST, "/session", Some(capabilities), "new session")
            .await?;
        browser.session_id = session
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| WebDriverError::Answer {
                command: "POST /session".into(),
                answer: cut(&session.to_string()),
            })?
            .to_owned();
        Ok(browser)
    }

    /// The process group of chromedriver and the Chromium it started (what drop kills).
    pub fn process_group(&self) -> Option<u32> {
        self.driver.id()
    }

    /// Loads `url` and waits until it has loaded.
    ///
    /// # Errors
    /// When the driver fails the navigation (e.g. the address refuses connections).
    pub async fn goto(&self, url: &str) -> Result<(), WebDriverError> {
        self.session(Method::POST, "/url", json!({ "url": url }), url)
            .await
            .map(drop)
    }

    /// The first element matching the CSS `selector`.
    ///
    /// # Errors
    /// `no such element` when none matches (yet).
    pub async fn find(&self, selector: &str) -> Result<Element<'_>, WebDriverError> {
        let found = self
            .session(
                Method::POST,
                "/element",
                json!({ "using": "css selector", "value": selector }),
                selector,
            )
            .await?;
        self.element(&found, selector)
    }

    /// Every element matching the CSS `selector`, in document order (none is no error).
    ///
    /// # Errors
    /// When the selector is invalid or the driver fails.
    pub async fn find_all(&self, selector: &str) -> Result<Vec<Element<'_>>, WebDriverError> {
        let found = self
            .session(
                Method::POST,
                "/elements",
                json!({ "using": "css selector", "value": selector }),
                selector,
            )
            .await?;
        let Value::Array(found) = found else {
            return Err(self.unexpected("POST /elements", &found));
        };
        found
            .iter()
            .map(|reference| self.element(reference, selector))
            .collect()
    }

    /// Runs `script` (a function body: `return …` gives the result) in the page with
    /// `args` as `arguments`, and returns what it returned.
    ///
    /// # Errors
    /// `javascript error` when the script throws.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Result<Value, WebDriverError> {
        self.session(
            Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
            script,
        )
        .await
    }

    /// Writes a PNG of the window's viewport to `path`, creating its directory.
    ///
    /// # Errors
    /// When the driver cannot take it or the file cannot be written.
    pub async fn screenshot(&self, path: &Path) -> Result<(), WebDriverError> {
        let encoded = self
            .session(Method::GET, "/screenshot", Value::Null, "")
            .await?;
        let png = encoded
            .as_str()
            .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .ok_or_else(|| self.unexpected("GET /screenshot", &encoded))?;
        let written = match path.parent() {
            Some(dir) => std::fs::create_dir_all(dir),
            None => Ok(()),
        }
        .and_then(|()| std::fs::write(path, png));
        written.map_err(|source| WebDriverError::Screenshot {
            path: path.to_owned(),
            source,
        })
    }

    /// Waits until an element matches `selector` and returns the first. Attribute
    /// selectors make this a wait on state: `#canary-api[data-step="2"]`.
    ///
    /// # Panics
    /// When `deadline` passes first; the message names `selector` and the driver's last
    /// answer.
    pub async fn wait_for(&self, selector: &str, deadline: Duration) -> Element<'_> {
        crate::wait_until(
            &format!("an element matches `{selector}`"),
            deadline,
            async || self.find(selector).await.map_err(|e| e.to_string()),
        )
        .await
    }

    /// Waits until the first element matching `selector` has a text `accepted` takes, and
    /// returns that text. An element not there yet is simply not accepted yet.
    ///
    /// # Panics
    /// When `deadline` passes first; the message names `selector` and the last text seen
    /// (or why there was none).
    pub async fn wait_for_text(
        &self,
        selector: &str,
        deadline: Duration,
        accepted: impl Fn(&str) -> bool,
    ) -> String {
        crate::wait_until(
            &format!("the text of `{selector}` is as expected"),
            deadline,
            async || {
                let element = self.find(selector).await.map_err(|e| e.to_string())?;
                let text = element.text().await.map_err(|e| e.to_string())?;
                if accepted(&text) {
                    Ok(text)
                } else {
                    Err(format!("{text:?}"))
                }
            },
        )
        .await
    }

    fn element<'b>(
        &'b self,
        reference: &Value,
        selector: &str,
    ) -> Result<Element<'b>, WebDriverError> {
        let id = reference
            .get(ELEMENT_KEY)
            .and_then(Value::as_str)
            .ok_or_else(|| self.unexpected(&format!("find `{selector}`"), reference))?;
        Ok(Element {
            browser: self,
            id: id.to_owned(),
            selector: selector.to_owned(),
        })
    }

    fn unexpected(&self, command: &str, answer: &Value) -> WebDriverError {
        WebDriverError::Answer {
            command: command.to_owned(),
            answer: cut(&answer.to_string()),
        }
    }

    /// A command of this session: `path` is relative to `/session/{id}`; `about` (a
    /// selector, a URL, a script) goes into the error when it fails.
    async fn session(
        &self,
        method: Method,
        path: &str,
        body: Value,
        about: &str,
    ) -> Result<Value, WebDriverError> {
        let path = format!("/session/{}{path}", self.session_id);
        let body = (method == Method::POST).then_some(body);
        self.send(method, &path, body, about).await
    }

    /// Sends one WebDriver command and returns its `value`, or the error it carries.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        about: &str,
    ) -> Result<Value, WebDriverError> {
        let command = if about.is_empty() {
            format!("{method} {path}")
        } else {
            format!("{method} {path} ({})", cut(about))
        };
        let transport = |reason: String| WebDriverError::Transport {
            command: command.clone(),
            reason,
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port))
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .map_err(|e| transport(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| transport(format!("{e:#}")))?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(e.to_string()))?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| WebDriverError::Answer {
            command: command.clone(),
            answer: cut(&String::from_utf8_lossy(&bytes)),
        })?;
        let mut value = match answer {
            Value::Object(mut fields) => fields.remove("value").unwrap_or(Value::Null),
            other => return Err(self.unexpected(&command, &other)),
        };
        if let Some(error) = value.get("error").and_then(Value::as_str) {
            return Err(WebDriverError::Command {
                command,
                error: error.to_owned(),
                message: value
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        Ok(value.take())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask first, so Chromium closes the way it means to; a plain blocking exchange, as
        // drop cannot await, bounded so a hung driver cannot hold the test.
        if !self.session_id.is_empty() {
            end_session(self.port, &self.session_id);
        }
        // Then everything left in the group chromedriver leads: chromedriver and every
        // Chromium process it started (they stay in its group).
        if let Some(group) = self.driver.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(group),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// An element of the page, found by a CSS selector.
#[derive(Debug)]
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
    selector: String,
}

impl Element<'_> {
    /// Its rendered text (as a user sees it: hidden parts left out).
    ///
    /// # Errors
    /// When the element has left the page (`stale element reference`).
    pub async fn text(&self) -> Result<String, WebDriverError> {
        let text = self.command(Method::GET, "/text", Value::Null).await?;
        text.as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.browser.unexpected("GET text", &text))
    }

    /// The value of its attribute `name`, `None` when it has none.
    ///
    /// # Errors
    /// When the element has left the page.
    pub async fn attribute(&self, name: &str) -> Result<Option<String>, WebDriverError> {
        let value = self
            .command(Method::GET, &format!("/attribute/{name}"), Value::Null)
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Clicks it (scrolled into view first), as a user would.
    ///
    /// # Errors
    /// When something else covers it or it cannot be clicked.
    pub async fn click(&self) -> Result<(), WebDriverError> {
        self.command(Method::POST, "/click", json!({}))
            .await
            .map(drop)
    }

    /// Types `text` into it, key by key (input events fire as for a user).
    ///
    /// # Errors
    /// When it cannot take keyboard input.
    pub async fn send_keys(&self, text: &str) -> Result<(), WebDriverError> {
        self.command(Method::POST, "/value", json!({ "text": text }))
            .await
            .map(drop)
    }

    async fn command(
        &self,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<Value, WebDriverError> {
        self.browser
            .session(
                method,
                &format!("/element/{}{path}", self.id),
                body,
                &self.selector,
            )
            .await
    }
}

/// `program` if it is a path, else its first match on `PATH`.
fn installed(program: &str) -> Result<PathBuf, WebDriverError> {
    let not_installed = || WebDriverError::NotInstalled {
        program: program.to_owned(),
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(not_installed())
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(not_installed)
}

/// Starts chromedriver on a port the OS picks, in a process group of its own (which the
/// Chromium it starts joins), and reads the port from the line it prints once listening.
async fn start_driver(program: &Path) -> Result<(tokio::process::Child, u16), WebDriverError> {
    let mut child = tokio::process::Command::new(program)
        .arg("--port=0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| WebDriverError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let port = tokio::time::timeout(START_DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(port) = line
                .strip_prefix(READY_LINE)
                .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok())
            {
                return Some(port);
            }
            printed.push(line);
        }
        None
    })
    .await;
    let Ok(Some(port)) = port else {
        return Err(WebDriverError::NotReady {
            deadline: START_DEADLINE,
            printed: printed.join("\n"),
        });
    };
    // Keep draining its output so chromedriver never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}

/// `DELETE /session/{id}` over a plain blocking connection, bounded by [`QUIT_DEADLINE`];
/// any failure is ignored, as the process group is killed next anyway.
fn end_session(port: u16, session_id: &str) {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(QUIT_DEADLINE));
    let _ = stream.set_write_timeout(Some(QUIT_DEADLINE));
    let request = format!(
        "DELETE /session/{session_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read_to_end(&mut Vec::new());
    }
}

/// `text` cut to a length an error message can carry.
fn cut(text: &str) -> String {
    const LONGEST: usize = 300;
    match text.char_indices().nth(LONGEST) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
