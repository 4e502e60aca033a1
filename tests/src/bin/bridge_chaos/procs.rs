//! The processes the harness runs: servers that say `READY <port>` (Dynoxide, moto, the
//! fakes) and the functions' execution environments, each with its output in a log file, and
//! the signals the faults need (SIGKILL, SIGSTOP, SIGCONT). Every process is killed when its
//! handle is dropped.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// A child process of the harness.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    child: Mutex<Child>,
}

impl Proc {
    /// Starts `command` with its stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self, String> {
        let file = log_file(log)?;
        let stderr = file.try_clone().map_err(|e| format!("cannot write {}: {e}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Self { name: name.to_owned(), pid: child.id(), child: Mutex::new(child) })
    }

    /// Starts a server that prints `READY <port>` and waits (20 s at most) for that line. Its
    /// output goes to `log`.
    pub fn spawn_server(name: &str, mut command: Command, log: &Path) -> Result<(Self, u16), String> {
        let mut file = log_file(log)?;
        let stderr = file.try_clone().map_err(|e| format!("cannot write {}: {e}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        // Reads to the end, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("READY ").and_then(|p| p.trim().parse::<u16>().ok()) {
                    let _ = sender.send(port);
                }
                let _ = writeln!(file, "{line}");
            }
        });
        let proc = Self { name: name.to_owned(), pid: child.id(), child: Mutex::new(child) };
        match receiver.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => Ok((proc, port)),
            Err(_) => Err(format!("{name} did not say READY within 20 s (log: {})", log.display())),
        }
    }

    /// Whether the process still runs.
    pub fn alive(&self) -> bool {
        matches!(self.child.lock().expect("not poisoned").try_wait(), Ok(None))
    }

    /// SIGKILL, and the exit collected.
    pub fn kill(&self) {
        let mut child = self.child.lock().expect("not poisoned");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} {} ({}) failed: {status}", self.pid, self.name))
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill();
    }
}

fn log_file(log: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot write {}: {e}", log.display()))
}
