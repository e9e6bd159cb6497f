//! Running an external tool with a timeout and an output size limit.

use crate::RenderError;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Limits applied to every tool run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub timeout: Duration,
    pub max_output: usize,
}

/// What a finished tool run produced.
pub(crate) struct Output {
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Reads at most `limit + 1` bytes so that an over-long output is detected without buffering it.
fn read_capped(reader: impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Runs `cmd` (stdin closed) and collects its output, killing it after `limits.timeout`.
pub(crate) fn run(tool: &str, mut cmd: Command, limits: Limits) -> Result<Output, RenderError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = cmd.get_program().to_owned();
    let mut child = cmd.spawn().map_err(|e| RenderError::io(program, e))?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let max = limits.max_output;
    let out_tx = tx.clone();
    let out_thread = stdout.map(|s| {
        std::thread::spawn(move || {
            let r = read_capped(s, max);
            let overflow = r.as_ref().is_ok_and(|b| b.len() > max);
            let _ = out_tx.send(overflow);
            r
        })
    });
    // stderr is only shown in messages; 64 KiB of it is plenty.
    let err_thread = stderr.map(|s| std::thread::spawn(move || read_capped(s, 64 * 1024)));
    drop(tx);

    let deadline = Instant::now() + limits.timeout;
    // Wait for stdout to close (the child exited or closed it), or for the deadline.
    let waited = rx.recv_timeout(limits.timeout);
    let status = match waited {
        Ok(true) => {
            // The tool is still writing; it would block on the full pipe until the timeout.
            kill(&mut child);
            return Err(RenderError::OutputTooLarge {
                tool: tool.to_string(),
                limit: limits.max_output,
            });
        }
        Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => wait_until(&mut child, deadline),
        Err(mpsc::RecvTimeoutError::Timeout) => None,
    };
    let Some(status) = status else {
        kill(&mut child);
        return Err(RenderError::Timeout {
            tool: tool.to_string(),
            after: limits.timeout,
        });
    };
    let stdout = match out_thread.map(|t| t.join()) {
        Some(Ok(Ok(buf))) => buf,
        Some(Ok(Err(e))) => return Err(RenderError::io(tool, e)),
        _ => Vec::new(),
    };
    let stderr = match err_thread.map(|t| t.join()) {
        Some(Ok(Ok(buf))) => String::from_utf8_lossy(&buf).into_owned(),
        _ => String::new(),
    };
    if stdout.len() > limits.max_output {
        return Err(RenderError::OutputTooLarge {
            tool: tool.to_string(),
            limit: limits.max_output,
        });
    }
    Ok(Output {
        success: status.success(),
        stdout,
        stderr,
    })
}

/// Polls the child until it exits or the deadline passes. Stdout is already closed here, so
/// the child is exiting; the poll interval grows to stay cheap either way.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    let mut pause = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_tool_is_killed_at_the_timeout() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30"]);
        let limits = Limits {
            timeout: Duration::from_millis(300),
            max_output: 1024,
        };
        let err = run("sleeper", cmd, limits).err().expect("must time out");
        assert!(err.to_string().contains("sleeper timed out"), "{err}");
    }

    #[test]
    fn a_chatty_tool_hits_the_output_limit() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "yes manifest"]);
        let limits = Limits {
            timeout: Duration::from_secs(30),
            max_output: 1000,
        };
        let err = run("chatty", cmd, limits).err().expect("must exceed");
        assert!(
            err.to_string().contains("exceeds the limit of 1000 bytes"),
            "{err}"
        );
    }

    #[test]
    fn output_and_status_are_returned() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let limits = Limits {
            timeout: Duration::from_secs(30),
            max_output: 1000,
        };
        let out = run("sh", cmd, limits).unwrap();
        assert!(!out.success);
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, "err\n");
    }
}
