//! Test harness: starts the real `ferrocd` binary (or a real etcd) on
//! ephemeral loopback ports in a temp dir, waits for its
//! `ready to serve client requests` log line, and kills it on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Which server binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// This crate's binary.
    Ferrocd,
    /// Debian's `etcd` (etcd-server package).
    Etcd,
}

/// A free loopback port (bound and released; a tiny race is acceptable on
/// a test machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A running server.
pub struct Server {
    pub flavor: Flavor,
    child: Option<Child>,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    log: Arc<Mutex<String>>,
    extra: Vec<String>,
}

/// Path of the etcd binary, or a panic telling how to get it.
pub fn etcd_bin() -> PathBuf {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("real etcd not found: run scripts/test.sh (installs Debian's etcd-server) or apt-get install etcd-server");
}

/// Path of etcdctl, or a panic telling how to get it.
pub fn etcdctl_bin() -> PathBuf {
    for p in ["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("etcdctl not found: run scripts/test.sh (installs Debian's etcd-client) or apt-get install etcd-client");
}

impl Server {
    /// Starts ferrocd with a fresh data dir under `dir`.
    pub fn ferrocd(dir: &Path, extra: &[&str]) -> Server {
        Server::start(Flavor::Ferrocd, &dir.join("ferrocd.etcd"), extra, None)
    }

    /// Starts a real etcd with a fresh data dir under `dir`.
    pub fn etcd(dir: &Path, extra: &[&str]) -> Server {
        Server::start(Flavor::Etcd, &dir.join("etcd.etcd"), extra, None)
    }

    /// Starts a server on `data_dir` (reused when it exists).
    pub fn start(
        flavor: Flavor,
        data_dir: &Path,
        extra: &[&str],
        ports: Option<(u16, u16)>,
    ) -> Server {
        let (client_port, peer_port) = ports.unwrap_or_else(|| (free_port(), free_port()));
        let mut s = Server {
            flavor,
            child: None,
            client_port,
            peer_port,
            data_dir: data_dir.to_path_buf(),
            log: Arc::new(Mutex::new(String::new())),
            extra: extra.iter().map(|s| (*s).to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let bin = match self.flavor {
            Flavor::Ferrocd => PathBuf::from(env!("CARGO_BIN_EXE_ferrocd")),
            Flavor::Etcd => etcd_bin(),
        };
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(bin);
        cmd.arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("default={peer}"))
            .args(&self.extra)
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.flavor == Flavor::Etcd {
            cmd.arg("--logger").arg("zap");
        }
        let mut child = cmd.spawn().expect("spawn server");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = self.log.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // etcd 3.4 with `--logger zap` never logs "ready to serve
                // client requests" (embed/serve.go logs it only under
                // capnslog); its zap milestone is "serving client traffic
                // insecurely", logged once the listener is handed to cmux.
                if line.contains("ready to serve client requests")
                    || line.contains("serving client traffic")
                {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{:?} exited before ready ({status}); log:\n{}",
                    self.flavor,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{:?} not ready in time; log:\n{}",
                self.flavor,
                self.log()
            );
        }
    }

    /// `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The OS pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` and waits (bounded) for the exit status.
    pub fn signal_and_wait(&mut self, sig: i32) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: signals a child we spawned and have not reaped.
        unsafe {
            libc::kill(c.id() as i32, sig);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "server did not exit after signal {sig}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same server again on the same data dir and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.log.lock().unwrap().push_str("---- restart ----\n");
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs etcdctl (API v3) against `endpoint` with optional stdin.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(etcdctl_bin());
    cmd.env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .arg("--command-timeout=20s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn etcdctl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().expect("etcdctl output")
}

/// etcdctl that must succeed; returns stdout.
pub fn etcdctl_ok(endpoint: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = etcdctl(endpoint, args, stdin);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A tokio runtime for client code in tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
