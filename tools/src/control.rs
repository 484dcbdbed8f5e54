//! The running playground's control socket: `DATA_DIR/playground.sock`, a Unix socket (0600,
//! in the playground's own directory) that takes one line per connection (`stop 2`, `kill 2`,
//! `restart 2`, `scale-out`, `scale-in 4`) and answers one line (`ok ...` or `error ...`).
//! `corekv-playground stop|kill|restart|scale-in --node K --data-dir DIR` is its client.
//!
//! Owns: the socket's file, the line protocol and its limits. Must not: act on a node itself
//! (the playground's loop does, through `LocalCluster`), or block that loop (accepts are
//! non-blocking, and a client gets `CONTROL_IO_TIMEOUT` to send its line).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long either side waits for the other's line.
const CONTROL_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client waits for a scale-in's answer (every replica of the node moved first).
const SCALE_IN_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest request line taken (a command and a node number).
const CONTROL_LINE_BYTES_MAX: u64 = 64;

/// What a control client asks of the playground.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGTERM: the node shuts down cleanly.
    Stop(u64),
    /// SIGKILL: no shutdown of any kind (power loss, as far as the process is concerned).
    Kill(u64),
    /// Start a stopped or dead node again on its data dir.
    Restart(u64),
    /// Start one more node, which joins the cluster.
    ScaleOut,
    /// Move every replica off a node that joined, then stop it.
    ScaleIn(u64),
}

impl Action {
    /// The request line (without its newline): also how the playground names the action.
    pub fn line(self) -> String {
        match self {
            Action::Stop(k) => format!("stop {k}"),
            Action::Kill(k) => format!("kill {k}"),
            Action::Restart(k) => format!("restart {k}"),
            Action::ScaleOut => "scale-out".into(),
            Action::ScaleIn(k) => format!("scale-in {k}"),
        }
    }

    /// How long a client waits for this action's answer.
    fn answer_timeout(self) -> Duration {
        match self {
            Action::ScaleIn(_) => SCALE_IN_TIMEOUT,
            _ => CONTROL_IO_TIMEOUT,
        }
    }

    fn parse(line: &str) -> Result<Action> {
        let mut words = line.split_whitespace();
        if line.trim() == "scale-out" {
            return Ok(Action::ScaleOut);
        }
        let (Some(verb), Some(node), None) = (words.next(), words.next(), words.next()) else {
            bail!("expected `stop|kill|restart|scale-in NODE` or `scale-out`, got {line:?}");
        };
        let k: u64 = node.parse().with_context(|| format!("node {node:?} is not a number"))?;
        match verb {
            "stop" => Ok(Action::Stop(k)),
            "kill" => Ok(Action::Kill(k)),
            "restart" => Ok(Action::Restart(k)),
            "scale-in" => Ok(Action::ScaleIn(k)),
            other => bail!("unknown command {other:?} (stop, kill, restart, scale-in)"),
        }
    }
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("playground.sock")
}

/// The playground's end: binds the socket, hands out requests one at a time.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `DATA_DIR/playground.sock`; a socket file left by a playground that is gone is
    /// replaced, one that answers means another playground runs on this directory.
    pub fn bind(data_dir: &Path) -> Result<ControlSocket> {
        let path = socket_path(data_dir);
        if UnixStream::connect(&path).is_ok() {
            bail!(
                "another playground runs on {} (its control socket answers)",
                data_dir.display()
            );
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e).context(format!("remove {}", path.display())),
            _ => {}
        }
        let listener = UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlSocket { listener, path })
    }

    /// The next waiting request, if any, with the connection to answer on. A malformed
    /// request is answered here and yields nothing.
    pub fn next(&self) -> Result<Option<(Action, UnixStream)>> {
        let stream = match self.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(CONTROL_IO_TIMEOUT))?;
        stream.set_write_timeout(Some(CONTROL_IO_TIMEOUT))?;
        let mut line = String::new();
        let read = BufReader::new(Read::take(&stream, CONTROL_LINE_BYTES_MAX)).read_line(&mut line);
        match read.map_err(anyhow::Error::from).and_then(|_| Action::parse(&line)) {
            Ok(action) => Ok(Some((action, stream))),
            Err(e) => {
                answer(stream, &Err(e));
                Ok(None)
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers a request with its outcome (a client that went away is not an error).
pub fn answer(mut stream: UnixStream, outcome: &Result<String>) {
    let line = match outcome {
        Ok(done) => format!("ok {done}\n"),
        Err(e) => format!("error {e:#}\n"),
    };
    let _ = stream.write_all(line.as_bytes());
}

/// The client's end: asks the playground on `data_dir` for `action`; its answer, or why not.
pub fn request(data_dir: &Path, action: Action) -> Result<String> {
    let path = socket_path(data_dir);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "no playground runs on {} ({} does not answer)",
            data_dir.display(),
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(action.answer_timeout()))?;
    stream.write_all(format!("{}\n", action.line()).as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    let reply = reply.trim_end();
    match reply.split_once(' ') {
        Some(("ok", done)) => Ok(done.to_string()),
        Some(("error", why)) => bail!("{why}"),
        _ => bail!("the playground gave no answer ({reply:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves each action survives the line protocol, and malformed lines are refused.
    #[test]
    fn lines_round_trip_and_garbage_is_refused() {
        let actions = [
            Action::Stop(1),
            Action::Kill(2),
            Action::Restart(40),
            Action::ScaleOut,
            Action::ScaleIn(4),
        ];
        for action in actions {
            assert_eq!(Action::parse(&format!("{}\n", action.line())).unwrap(), action);
        }
        for bad in ["", "stop", "stop x", "reboot 1", "stop 1 2"] {
            assert!(Action::parse(bad).is_err(), "{bad:?}");
        }
    }

    // Proves a request reaches the socket's owner and its answer reaches the client, and that
    // a second playground cannot bind the same directory while the first one answers.
    #[test]
    fn a_request_gets_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let socket = ControlSocket::bind(dir.path()).unwrap();
        assert!(ControlSocket::bind(dir.path()).is_err());
        let path = dir.path().to_path_buf();
        let client = std::thread::spawn(move || request(&path, Action::Restart(2)));
        let (action, stream) = loop {
            if let Some(got) = socket.next().unwrap() {
                break got;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(action, Action::Restart(2));
        answer(stream, &Ok("node 2 started".into()));
        assert_eq!(client.join().unwrap().unwrap(), "node 2 started");
    }
}
