//! `shopctl` on a pseudo-terminal of a given width, driven as a person at a keyboard would: it
//! waits for a prompt, waits until the terminal's echo is off, then types.
//!
//! Made with rustix's pty calls and util-linux's `setsid --ctty` (which makes the terminal the
//! program's controlling one, so `/dev/tty` is ours), because the workspace forbids unsafe code
//! and a `pre_exec` hook is unsafe. `script(1)` (what `Stack::ctl_in_pty` uses) cannot tell when
//! the program has turned echo off, so typing through it would race the password prompt.

use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::pty::{grantpt, ioctl_tiocgptpeer, openpt, unlockpt, OpenptFlags};
use rustix::termios::{tcgetattr, tcsetwinsize, LocalModes, Winsize};

/// How long a prompt, echo off or the end of the program may take.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Pty {
    child: Child,
    master: std::fs::File,
    /// The program's side, kept to read its terminal modes (echo) while it runs.
    terminal: Option<OwnedFd>,
    /// Everything the program wrote to the terminal so far.
    seen: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Where in `seen` the next `expect` looks from.
    at: usize,
}

impl Pty {
    /// Runs `shopctl ARGS`, prepared by `ctl` (`Stack::shopctl`: its environment), on a terminal
    /// `cols` columns wide, with its standard input, output and error all on that terminal.
    pub fn spawn(ctl: Command, args: &[&str], cols: u16) -> Pty {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = openpt(flags).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let terminal = ioctl_tiocgptpeer(&master, flags).expect("the terminal's side");
        tcsetwinsize(&terminal, Winsize { ws_row: 40, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 }).expect("size");
        let mut cmd = Command::new("setsid");
        cmd.args(["--ctty", "--wait"]).arg(ctl.get_program()).args(args);
        for (k, v) in ctl.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        // Plain text: no colour codes between the words the tests look for.
        cmd.env("NO_COLOR", "1").env("TERM", "xterm");
        let side = || Stdio::from(terminal.try_clone().expect("dup"));
        cmd.stdin(side()).stdout(side()).stderr(side());
        let child = cmd.spawn().expect("starting setsid shopctl");
        drop(cmd);
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let (mut master, seen) = (master.try_clone().expect("dup"), seen.clone());
            // Ends with EIO once no process has the terminal open any more.
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = master.read(&mut buf) {
                    seen.lock().expect("lock").extend_from_slice(&buf[..n]);
                }
            })
        };
        Pty { child, master, terminal: Some(terminal), seen, reader: Some(reader), at: 0 }
    }

    /// What the program wrote so far, as text.
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("lock")).into_owned()
    }

    /// Waits until `text` appears after what earlier calls found, and moves past it.
    pub fn expect(&mut self, text: &str) {
        let started = Instant::now();
        loop {
            let found = {
                let seen = self.seen.lock().expect("lock");
                let rest = &seen[self.at.min(seen.len())..];
                rest.windows(text.len()).position(|w| w == text.as_bytes()).map(|i| self.at + i + text.len())
            };
            if let Some(end) = found {
                self.at = end;
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "no {text:?} within {PATIENCE:?}; the terminal shows:\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the program has turned the terminal's echo off, then types `password` and Enter.
    pub fn type_password(&mut self, password: &str) {
        let started = Instant::now();
        let terminal = self.terminal.as_ref().expect("the program is running");
        while tcgetattr(terminal).expect("tcgetattr").local_modes.contains(LocalModes::ECHO) {
            assert!(started.elapsed() < PATIENCE, "echo still on; the terminal shows:\n{}", self.transcript());
            std::thread::sleep(Duration::from_millis(10));
        }
        self.master.write_all(format!("{password}\r").as_bytes()).expect("typing");
    }

    /// Waits for the program to end; returns its exit code and all it wrote to the terminal.
    pub fn finish(mut self) -> (i32, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > PATIENCE {
                let _ = self.child.kill();
                panic!("shopctl did not end within {PATIENCE:?}; the terminal shows:\n{}", self.transcript());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.terminal = None;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status.code().unwrap_or(-1), self.transcript())
    }
}

impl Drop for Pty {
    /// A test that failed half-way leaves no shopctl waiting at a prompt.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
