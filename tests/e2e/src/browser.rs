//! A headless Chromium for the web console's end-to-end test, driven over
//! WebDriver (Debian's `chromium` and `chromium-driver`, through the
//! `fantoccini` client).
//!
//! What a browser test needs beyond WebDriver itself lives here: waiting
//! for an element with a deadline and a failure that names the selector
//! and the page (with a screenshot of what the page showed), screenshots
//! saved under `target/console-screenshots/`, and the browser's own
//! console log read back, so that a page that logs an error or fails a
//! request fails the test. `chromedriver` runs in a process group of its
//! own, which holds every Chromium process it starts; dropping the
//! [`Browser`] kills that group, also when the test panics.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long [`Browser::find`] waits: pages render from API answers and
/// server-sent events, which take a moment on a loaded machine.
pub const FIND_LIMIT: Duration = Duration::from_secs(30);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(200);

/// The window of a laptop screen, as the console is meant to be used.
pub const LAPTOP: (u32, u32) = (1366, 900);

/// A Chromium session, its `chromedriver`, and what its console logged.
pub struct Browser {
    client: Client,
    base: String,
    shots: PathBuf,
    _driver: DriverProcess,
}

/// `chromedriver` and the browsers it starts, all in one process group
/// (Chromium's helpers stay in their parent's group), killed together.
struct DriverProcess {
    group: rustix::process::Pid,
    _child: tokio::process::Child,
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        // The child itself is killed and reaped by `kill_on_drop`; its
        // browsers would outlive it without this.
        let _ = rustix::process::kill_process_group(self.group, rustix::process::Signal::KILL);
    }
}

/// One entry of the browser's console log, as chromedriver reports it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LogEntry {
    pub level: String,
    pub source: Option<String>,
    pub message: String,
}

impl Browser {
    /// Starts `chromedriver` on a free loopback port and a headless
    /// Chromium session in a laptop-sized window, whose relative URLs
    /// ([`Browser::goto`]) are resolved against `base` (`http://host:port`).
    pub async fn start(base: &str) -> Result<Self> {
        let port = crate::free_port()?;
        let shots = screenshot_dir()?;
        let log = std::fs::File::create(shots.join("chromedriver.log"))
            .context("creating chromedriver.log")?;
        let child = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver (scripts/test installs Debian's chromium-driver)")?;
        let group = rustix::process::Pid::from_raw(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .context("chromedriver exited at once")?,
        )
        .context("chromedriver has no pid")?;
        let driver = DriverProcess {
            group,
            _child: child,
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless=new",
                "--no-sandbox",
                format!("--window-size={},{}", LAPTOP.0, LAPTOP.1),
                // Nothing but the pages under test on the network log.
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ]}),
        );
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut last = None;
        // chromedriver listens a moment after it starts.
        for _ in 0..100 {
            match ClientBuilder::new(connector.clone())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Ok(Self {
                        client,
                        base: base.trim_end_matches('/').to_string(),
                        shots,
                        _driver: driver,
                    })
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "no WebDriver session from chromedriver at {url}: {:?} (see {})",
            last,
            screenshot_dir()?.join("chromedriver.log").display()
        )
    }

    /// The WebDriver client, for what the helpers here do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `path` of the console (or any absolute URL).
    pub async fn goto(&self, path: &str) -> Result<()> {
        let url = if path.contains("://") || path.starts_with("data:") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.client
            .goto(&url)
            .await
            .with_context(|| format!("opening {url}"))
    }

    /// The page's URL now.
    pub async fn url(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("(unknown URL: {e})"),
        }
    }

    /// `result`, or its error saying what was `doing` on which page.
    async fn on_page<T>(
        &self,
        result: Result<T, fantoccini::error::CmdError>,
        doing: String,
    ) -> Result<T> {
        match result {
            Ok(value) => Ok(value),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("{doing} on {}", self.url().await)))
            }
        }
    }

    /// The first element matching CSS `selector`, once there is one; fails
    /// after [`FIND_LIMIT`].
    pub async fn find(&self, selector: &str) -> Result<Element> {
        self.find_within(selector, FIND_LIMIT).await
    }

    /// The first element matching CSS `selector`, once there is one; fails
    /// after `limit`, naming the selector and the page, with a screenshot.
    pub async fn find_within(&self, selector: &str, limit: Duration) -> Result<Element> {
        self.until(
            &format!("an element matching `{selector}`"),
            limit,
            async || present(self.client.find(Locator::Css(selector)).await),
        )
        .await
    }

    /// Every element matching `selector` now (none is no error).
    pub async fn find_all(&self, selector: &str) -> Result<Vec<Element>> {
        let found = self.client.find_all(Locator::Css(selector)).await;
        self.on_page(found, format!("finding `{selector}`")).await
    }

    /// Clicks the element matching `selector`, once there is one.
    pub async fn click(&self, selector: &str) -> Result<()> {
        let element = self.find(selector).await?;
        let clicked = element.click().await;
        self.on_page(clicked, format!("clicking `{selector}`"))
            .await
    }

    /// Types `text` into the element matching `selector`.
    pub async fn type_into(&self, selector: &str, text: &str) -> Result<()> {
        let element = self.find(selector).await?;
        let typed = element.send_keys(text).await;
        self.on_page(typed, format!("typing into `{selector}`"))
            .await
    }

    /// The visible text of the element matching `selector`, once there is
    /// one.
    pub async fn text(&self, selector: &str) -> Result<String> {
        let element = self.find(selector).await?;
        let text = element.text().await;
        self.on_page(text, format!("reading `{selector}`")).await
    }

    /// The visible text of the element matching `selector`, once it
    /// contains `needle`.
    pub async fn text_containing(&self, selector: &str, needle: &str) -> Result<String> {
        self.until(
            &format!("`{selector}` to say {needle:?}"),
            FIND_LIMIT,
            async || {
                let Some(element) = present(self.client.find(Locator::Css(selector)).await)? else {
                    return Ok(None);
                };
                // A re-render may replace the element between the two calls.
                let text = match element.text().await {
                    Ok(text) => text,
                    Err(e) if e.is_stale_element_reference() => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                Ok(text.contains(needle).then_some(text))
            },
        )
        .await
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the
    /// page and returns what it returns.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        let value = self.client.execute(script, args).await;
        self.on_page(value, format!("running script {script:?}"))
            .await
    }

    /// Resizes the window (its viewport, in headless Chromium).
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.client
            .set_window_size(width, height)
            .await
            .with_context(|| format!("resizing the window to {width}x{height}"))
    }

    /// Waits until `probe` returns `Some` and returns that; after `limit`
    /// fails saying what it waited for and on which page, with a
    /// screenshot of the page. An error from `probe` ends the wait at once.
    pub async fn until<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl AsyncFnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(found) = probe().await? {
                return Ok(found);
            }
            if tokio::time::Instant::now() >= deadline {
                let url = self.url().await;
                let shot = match self.screenshot(&format!("failed-{}", slug(what))).await {
                    Ok(path) => path.display().to_string(),
                    Err(e) => format!("(no screenshot: {e:#})"),
                };
                bail!("waited {limit:?} for {what} on {url}; the page then: {shot}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Saves a PNG of the window as `target/console-screenshots/NAME.png`,
    /// prints its path and returns it.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self
            .client
            .screenshot()
            .await
            .context("taking a screenshot")?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        println!("screenshot: {}", path.display());
        Ok(path)
    }

    /// The browser's console log since the last call (chromedriver hands
    /// each entry out once).
    pub async fn log(&self) -> Result<Vec<LogEntry>> {
        let entries = self
            .client
            .issue_cmd(ReadLog)
            .await
            .context("reading the browser's log from chromedriver")?;
        serde_json::from_value(entries).context("chromedriver's log entries")
    }

    /// Fails if the browser logged an error (a `console.error`, an uncaught
    /// exception, a failed request, a Content-Security-Policy violation:
    /// Chromium logs each as SEVERE) since the last look; `when` says what
    /// the page was doing, for the message.
    pub async fn assert_clean_log(&self, when: &str) -> Result<()> {
        self.assert_log_errors(when, &[]).await
    }

    /// Like [`Browser::assert_clean_log`], but the page was expected to
    /// log one error containing each of `expected` (Chromium logs every
    /// answer of 4xx or 5xx to a request, a refusal the page shows the
    /// user included): fails on any other error, or if one is missing.
    pub async fn assert_log_errors(&self, when: &str, expected: &[&str]) -> Result<()> {
        let severe: Vec<String> = self
            .log()
            .await?
            .into_iter()
            .filter(|e| e.level == "SEVERE")
            .map(|e| format!("[{}] {}", e.source.unwrap_or_default(), e.message))
            .collect();
        let unexpected: Vec<&String> = severe
            .iter()
            .filter(|e| !expected.iter().any(|x| e.contains(x)))
            .collect();
        let missing: Vec<&&str> = expected
            .iter()
            .filter(|x| !severe.iter().any(|e| e.contains(*x)))
            .collect();
        if !unexpected.is_empty() || !missing.is_empty() {
            let shot = self.screenshot(&format!("log-{}", slug(when))).await?;
            bail!(
                "the browser's log {when} (page {}, screenshot {}): errors {:?}, expected {:?}",
                self.url().await,
                shot.display(),
                severe,
                expected
            );
        }
        Ok(())
    }

    /// Ends the session (Chromium quits); the driver goes with `self`.
    pub async fn close(self) -> Result<()> {
        self.client
            .close()
            .await
            .context("closing the WebDriver session")
    }
}

/// `Some(element)`, or `None` while there is no such element.
fn present(found: Result<Element, fantoccini::error::CmdError>) -> Result<Option<Element>> {
    match found {
        Ok(element) => Ok(Some(element)),
        Err(e) if e.is_no_such_element() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `target/console-screenshots/` (created), beside the release binaries.
pub fn screenshot_dir() -> Result<PathBuf> {
    let dir = crate::target_dir().join("console-screenshots");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Printed paths read better without `tests/e2e/../..`.
    Ok(dir.canonicalize().unwrap_or(dir))
}

/// `what` as a file name: letters and digits, the rest dashes.
fn slug(what: &str) -> String {
    let mut slug: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    slug.truncate(60);
    slug.trim_matches('-').to_string()
}

/// chromedriver's log endpoint (`POST /session/ID/se/log`, the one it
/// keeps in W3C mode): the entries of one log type, here the console's.
#[derive(Debug)]
struct ReadLog;

impl WebDriverCompatibleCommand for ReadLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}
