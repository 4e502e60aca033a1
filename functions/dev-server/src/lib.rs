//! Starting the dev server as a child process, the one way `bridge-cli demo`, the end-to-end
//! suites and the load tool all do it: on a free port (`PORT=0`), with exactly the environment
//! given, its address read from the line it prints once it listens. The process is killed when
//! the handle is stopped or dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::Duration;

/// The line the dev server prints once it accepts connections; the address follows it.
pub const LISTENING: &str = "dev-server: listening on ";

/// Where each line the dev server prints goes (stdout, and stderr when the command pipes it).
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A running dev server, killed when stopped or dropped.
pub struct DevServerProcess {
    /// `http://127.0.0.1:{port}`.
    pub base: String,
    child: Child,
    /// The threads reading its output to the end (so it never blocks on a full pipe); joined on
    /// [`DevServerProcess::stop`], so that every line is handed on before it returns.
    readers: Vec<JoinHandle<()>>,
}

impl DevServerProcess {
    /// Starts `command` (the dev server's binary, or a shell that execs it) with exactly `env`
    /// as its environment and waits up to `limit` for it to say where it listens. Every line of
    /// its stdout, and of its stderr if `command` pipes it, goes to `lines`; a stderr left as
    /// the caller set it (inherited, a file) is not read here. On failure, the error says why;
    /// what it printed went to `lines`.
    pub fn start(mut command: Command, env: &[(&str, &str)], lines: LineSink, limit: Duration) -> Result<Self, String> {
        command.env_clear().env("PORT", "0").env("RUST_LOG", "warn").env("NO_COLOR", "1").stdin(Stdio::null());
        command.stdout(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command.spawn().map_err(|e| format!("cannot start {program}: {e}"))?;
        let (sender, listening) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut readers = vec![read_lines(stdout, lines.clone(), Some(sender))];
        if let Some(stderr) = child.stderr.take() {
            readers.push(read_lines(stderr, lines, None));
        }
        let mut server = Self { base: String::new(), child, readers };
        match listening.recv_timeout(limit) {
            Ok(base) => {
                server.base = base;
                Ok(server)
            }
            Err(_) => {
                server.stop();
                Err(format!("{program} did not say where it listens within {} s", limit.as_secs()))
            }
        }
    }

    /// The operating system's id of the server's process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the server and waits until every line it printed was handed on.
    pub fn stop(mut self) {
        self.kill();
        for reader in self.readers.drain(..) {
            if reader.join().is_err() {
                eprintln!("dev-server: a reader of its output panicked");
            }
        }
    }

    fn kill(&mut self) {
        // Either may fail only because the process has already ended, which is what is wanted.
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for DevServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `output` line by line to its end, handing each line to `lines` and the address of the
/// first [`LISTENING`] line to `listening`.
fn read_lines(
    output: impl Read + Send + 'static,
    lines: LineSink,
    listening: Option<Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut listening = listening;
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if let Some(base) = line.strip_prefix(LISTENING)
                && let Some(sender) = listening.take()
            {
                // The starter may have given up waiting; the line is still handed on below.
                sender.send(base.to_owned()).ok();
            }
            lines(&line);
        }
    })
}
