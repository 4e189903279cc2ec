//! Every process a test or bench starts (redis-server, tansu, mosquitto, socat, python peers,
//! the gateway binary) is a [`PeerProcess`]: its stdout and stderr go to a log file, waiting
//! for it to be ready also watches it exit, and it is killed and reaped on drop. A peer that
//! dies at start fails the test at once with its own words (the log tail), instead of a
//! timeout that hides the cause.
//!
//! Needs only std, tempfile and tokio: benches use it too.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often readiness probes and exit checks run.
const POLL: Duration = Duration::from_millis(20);
/// Log lines shown when a peer fails.
const TAIL_LINES: usize = 40;

/// The python that runs the python peers: `$EDGE_GATEWAY_PYTHON` (scripts/test.sh points it at
/// the venv it installs tests/python/requirements.txt into), else `python3`.
pub fn python() -> Command {
    Command::new(
        std::env::var_os("EDGE_GATEWAY_PYTHON").unwrap_or_else(|| OsString::from("python3")),
    )
}

/// Why a peer did not become ready.
#[derive(Debug)]
pub enum NotReady {
    /// It exited (e.g. a missing python module, or the port was taken).
    Exited(ExitStatus),
    TimedOut(Duration),
}

/// A child process with its output in a log file; killed (SIGKILL) and reaped on drop.
pub struct PeerProcess {
    /// The command line, for messages.
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Set when the log lives in a temp dir of our own.
    _log_dir: Option<tempfile::TempDir>,
}

impl PeerProcess {
    /// Spawns `cmd` (stdin null) with stdout and stderr appended to `log`, so a restart keeps
    /// the earlier output. `hint` says how to get the program if it cannot be spawned.
    pub fn spawn(cmd: &mut Command, log: &Path, hint: &str) -> PeerProcess {
        PeerProcess::spawn_inner(cmd, log.to_path_buf(), None, hint)
    }

    /// As [`PeerProcess::spawn`], with the log in a temp dir of its own.
    pub fn spawn_logged(cmd: &mut Command, hint: &str) -> PeerProcess {
        let dir = tempfile::Builder::new()
            .prefix("egw-peer-")
            .tempdir()
            .expect("create temp dir for a peer log");
        let log = dir.path().join("peer.log");
        PeerProcess::spawn_inner(cmd, log, Some(dir), hint)
    }

    fn spawn_inner(
        cmd: &mut Command,
        log: PathBuf,
        log_dir: Option<tempfile::TempDir>,
        hint: &str,
    ) -> PeerProcess {
        let name = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({hint}): {e}"));
        PeerProcess {
            name,
            child: Some(child),
            log,
            _log_dir: log_dir,
        }
    }

    pub fn id(&self) -> u32 {
        self.running().id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// The last lines of the log, for panic messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// The exit status if the process has exited (it is reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten()
    }

    /// Polls `probe` until it holds; Err as soon as the process exits, or after `timeout`.
    pub fn try_wait_ready(
        &mut self,
        timeout: Duration,
        mut probe: impl FnMut() -> bool,
    ) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        loop {
            // A peer that did what was awaited and then exited (a client that wrote its
            // results) is ready, not dead: probe once more before failing.
            if let Err(e) = self.check(deadline, timeout) {
                return if probe() { Ok(()) } else { Err(e) };
            }
            if probe() {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
    }

    /// [`PeerProcess::try_wait_ready`] with an async probe.
    pub async fn try_wait_ready_async<F: Future<Output = bool>>(
        &mut self,
        timeout: Duration,
        mut probe: impl FnMut() -> F,
    ) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Err(e) = self.check(deadline, timeout) {
                return if probe().await { Ok(()) } else { Err(e) };
            }
            if probe().await {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `probe` holds (`what` says what it checks); panics with the log tail as
    /// soon as the process exits, or after `timeout`.
    pub fn wait_ready(&mut self, what: &str, timeout: Duration, probe: impl FnMut() -> bool) {
        if let Err(e) = self.try_wait_ready(timeout, probe) {
            self.fail(what, e);
        }
    }

    /// [`PeerProcess::wait_ready`] with an async probe.
    pub async fn wait_ready_async<F: Future<Output = bool>>(
        &mut self,
        what: &str,
        timeout: Duration,
        probe: impl FnMut() -> F,
    ) {
        if let Err(e) = self.try_wait_ready_async(timeout, probe).await {
            self.fail(what, e);
        }
    }

    /// Kills the process and panics saying why it is not ready, with the log tail.
    pub fn fail(&mut self, what: &str, why: NotReady) -> ! {
        self.kill();
        match why {
            NotReady::Exited(status) => panic!(
                "{} exited ({status}) before {what}; {}",
                self.name,
                self.log_tail()
            ),
            NotReady::TimedOut(t) => {
                panic!("{}: no {what} within {t:?}; {}", self.name, self.log_tail())
            }
        }
    }

    fn check(&mut self, deadline: Instant, timeout: Duration) -> Result<(), NotReady> {
        if let Some(status) = self.exited() {
            return Err(NotReady::Exited(status));
        }
        if Instant::now() > deadline {
            return Err(NotReady::TimedOut(timeout));
        }
        Ok(())
    }

    /// Sends `sig` (e.g. "TERM", "STOP") with kill(1): std only has SIGKILL, and the package
    /// has no libc/nix dev-dependency.
    pub fn signal(&self, sig: &str) {
        let pid = self.id();
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill(1) to signal a peer process");
        assert!(status.success(), "kill -{sig} {pid} ({}) failed", self.name);
    }

    /// Sends `sig` and waits for the exit; true if it exited within `timeout`, else it is
    /// SIGKILLed and false is returned.
    pub fn stop(&mut self, sig: &str, timeout: Duration) -> bool {
        self.signal(sig);
        let deadline = Instant::now() + timeout;
        while self.exited().is_none() {
            if Instant::now() > deadline {
                self.kill();
                return false;
            }
            std::thread::sleep(POLL);
        }
        self.child = None;
        true
    }

    /// Waits for the process to exit by itself and reaps it.
    pub fn wait(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        child
            .wait()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", self.name))
    }

    /// SIGKILL (which also ends a SIGSTOPped process) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn running(&self) -> &Child {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
    }
}

/// A log file's text, or why it cannot be read.
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

/// The last lines of a log, for panic messages (whole logs drown the failure).
pub fn log_tail(path: &Path) -> String {
    let text = read_log(path);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    format!(
        "{} (last lines):\n{}",
        path.display(),
        lines[start..].join("\n")
    )
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
