//! A real registry (`docker-registry serve`, distribution 2.x from Debian)
//! on 127.0.0.1 with a port the kernel picks, its storage in a temporary
//! directory, killed when dropped.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchestrator::registry::Digest;

/// How the registry authenticates clients.
pub enum Auth {
    None,
    /// htpasswd file with one bcrypt user.
    Htpasswd {
        user: String,
        password: String,
    },
    /// The token flow: tokens from `realm`, signed by a key whose
    /// certificate chains to `root_pem`.
    Token {
        realm: String,
        service: String,
        issuer: String,
        root_pem: String,
    },
}

pub struct Options {
    pub auth: Auth,
    /// Serve TLS with this certificate and key (PEM).
    pub tls: Option<(String, String)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            auth: Auth::None,
            tls: None,
        }
    }
}

pub struct LocalRegistry {
    child: Child,
    /// `http(s)://127.0.0.1:PORT`
    pub url: String,
    /// The filesystem driver's root directory.
    pub storage: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    pub fn start(opts: Options) -> LocalRegistry {
        let bin = Path::new("/usr/bin/docker-registry");
        assert!(
            bin.exists(),
            "{} is missing: apt-get install docker-registry (./scripts/test installs it)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:0\n  secret: registry-tests\n",
            storage.display()
        );
        let scheme = match &opts.tls {
            Some((cert, key)) => {
                let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
                std::fs::write(&c, cert).expect("write the certificate");
                std::fs::write(&k, key).expect("write the key");
                let _ = write!(
                    config,
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    c.display(),
                    k.display()
                );
                "https"
            }
            None => "http",
        };
        match &opts.auth {
            Auth::None => {}
            Auth::Htpasswd { user, password } => {
                let hash = bcrypt::hash(password, 4).expect("bcrypt");
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{user}:{hash}\n")).expect("write htpasswd");
                let _ = write!(
                    config,
                    "auth:\n  htpasswd:\n    realm: registry-tests\n    path: {}\n",
                    path.display()
                );
            }
            Auth::Token {
                realm,
                service,
                issuer,
                root_pem,
            } => {
                let path = dir.path().join("token-root.pem");
                std::fs::write(&path, root_pem).expect("write the token root");
                let _ = write!(
                    config,
                    "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    \
                     issuer: {issuer}\n    rootcertbundle: {}\n",
                    path.display()
                );
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config.yml");
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry");
        // Drain the log for the whole life of the registry (a full pipe
        // would block it), keeping the tail for failure messages, and pass
        // on the address it reports.
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let tail = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split("listening on ")
                    .nth(1)
                    // "listening on 127.0.0.1:PORT" (", tls" with TLS)
                    .and_then(|s| s.split(['"', ',', ' ']).next())
                {
                    let _ = tx.send(addr.to_string());
                }
                let mut t = tail.lock().unwrap();
                t.push(line);
                if t.len() > 40 {
                    t.remove(0);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "docker-registry did not report its address:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        LocalRegistry {
            child,
            url: format!("{scheme}://{addr}"),
            storage,
            log,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT`, as the engine names this registry in messages.
    pub fn name(&self) -> &str {
        self.url.split("://").nth(1).unwrap_or(&self.url)
    }

    /// Where the filesystem driver keeps a blob's content.
    pub fn blob_file(&self, d: &Digest) -> PathBuf {
        self.storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{}/data",
            &d.hex()[..2],
            d.hex()
        ))
    }

    /// The link that makes a blob part of a repository.
    pub fn layer_link(&self, repository: &str, d: &Digest) -> PathBuf {
        self.storage.join(format!(
            "docker/registry/v2/repositories/{repository}/_layers/sha256/{}/link",
            d.hex()
        ))
    }

    /// The registry's recent log lines (for assertion messages).
    pub fn log_tail(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
