//! A real `pharos serve` child process on `127.0.0.1:0`, for tests that need the binary as users run it
//! (signals, TLS, logs on stderr).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a starting daemon may take to print its first line (fleet replicas migrate a schema first).
const FIRST_LINE_WITHIN: Duration = Duration::from_secs(120);

/// A `pharos serve` child process, killed on drop unless it already exited (so a failing test leaves none).
pub(crate) struct Daemon {
    child: Child,
    /// The gRPC address it bound.
    pub(crate) addr: String,
    /// The metrics address, when `--metrics` was given an address.
    pub(crate) metrics_addr: Option<String>,
    /// The plaintext health-only address, with `--health-listen`.
    pub(crate) health_addr: Option<String>,
    /// The HTTP API's base URL (`http://ADDR` or `https://ADDR`), with `--http`.
    pub(crate) http_url: Option<String>,
    stderr_log: PathBuf,
}

impl Daemon {
    /// `pharos serve` on the CPU backend, without metrics.
    pub(crate) fn start(data_dir: &Path, stderr_log: PathBuf) -> Daemon {
        Daemon::start_with(data_dir, stderr_log, ["--metrics", ""], &[])
    }

    /// `pharos serve --backend cpu --data-dir DIR` plus `args` (and `--listen 127.0.0.1:0` unless they
    /// name a listener), with `env` set. Its stderr (the logs) goes to `stderr_log`.
    pub(crate) fn start_with<I, S>(
        data_dir: &Path,
        stderr_log: PathBuf,
        args: I,
        env: &[(&str, &str)],
    ) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let listen = !args.iter().any(|a| a.as_ref() == "--listen");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pharos"))
            .args(["serve", "--backend", "cpu", "--data-dir"])
            .arg(data_dir)
            .args(if listen { &["--listen", "127.0.0.1:0"][..] } else { &[] })
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .expect("start pharos serve");
        let stdout = child.stdout.take().unwrap();
        // Owned before the first line is read, so that a daemon which never prints it is killed on drop.
        let mut daemon = Daemon {
            child,
            addr: String::new(),
            metrics_addr: None,
            health_addr: None,
            http_url: None,
            stderr_log,
        };
        // Read on a thread, bounded: a daemon stalled before it serves (a replica waiting on a lock in
        // PostgreSQL, say) fails the test with its logs instead of hanging the suite.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = tx.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
        });
        let line = match rx.recv_timeout(FIRST_LINE_WITHIN) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading pharos serve's first line: {e}\nstderr:\n{}", daemon.stderr()),
            Err(_) => panic!(
                "pharos serve printed no first line within {FIRST_LINE_WITHIN:?}\nstderr:\n{}",
                daemon.stderr()
            ),
        };
        // `pharos: serving gRPC on 127.0.0.1:PORT` (then `; metrics on http://ADDR/metrics` when metrics are on).
        let Some(rest) = line.trim().strip_prefix("pharos: serving gRPC on ") else {
            panic!("unexpected first line from pharos serve: {line:?}\nstderr:\n{}", daemon.stderr());
        };
        let mut parts = rest.split(';');
        daemon.addr = parts.next().unwrap().trim().to_string();
        for part in parts.map(str::trim) {
            if let Some(m) = part.strip_prefix("metrics on http://") {
                daemon.metrics_addr = Some(m.trim_end_matches("/metrics").to_string());
            } else if let Some(h) = part.strip_prefix("health on ") {
                daemon.health_addr = Some(h.to_string());
            } else if let Some(h) = part.strip_prefix("HTTP API on ") {
                daemon.http_url = Some(h.to_string());
            }
        }
        daemon
    }

    /// What it logged so far.
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child this process started and has not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill -{sig} {pid}");
    }

    /// Sends SIGHUP (reload the auth file).
    pub(crate) fn hangup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// `kill -9`: no chance to finish anything, as a crash or an OOM kill.
    pub(crate) fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most 60 s) for the process to exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "pharos serve did not exit within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
