//! A private, throwaway PostgreSQL cluster for `genq demo` and the tests,
//! started from the local `initdb`/`pg_ctl` when `DATABASE_URL` is unset.
//!
//! `initdb` refuses to run as root, so as root the cluster runs as the
//! `postgres` system user (through `runuser`). The binaries are found on
//! `PATH`, in `GENQ_PG_BIN`, or under `/usr/lib/postgresql/<version>/bin`.
//! The cluster listens on 127.0.0.1 on a free port, keeps its data in a
//! temporary directory, and is stopped and deleted when the handle drops,
//! or, if the process dies first, by a small watchdog process.
//!
//! [`EmbeddedPg::restart`] stops and starts the server in place (same port,
//! same data), so the fault suite can take a real database away from running
//! workers without touching any shared server.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why the private cluster could not start. The text says what to install or set.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH, in GENQ_PG_BIN or under /usr/lib/postgresql/*/bin; install PostgreSQL or set DATABASE_URL"
    )]
    NotInstalled,
    #[error(
        "running as root, and initdb refuses root: create a `postgres` system user (e.g. `useradd --system postgres`) or set DATABASE_URL"
    )]
    NoUnprivilegedUser,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How [`EmbeddedPg::restart`] stops the server (`pg_ctl -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Roll back open transactions, disconnect clients, checkpoint, exit.
    Fast,
    /// Kill every server process at once, no checkpoint: the next start
    /// runs crash recovery, as after a power cut of the server alone.
    Immediate,
}

impl ShutdownMode {
    /// The value `pg_ctl -m` takes.
    pub fn as_pg_ctl(self) -> &'static str {
        match self {
            ShutdownMode::Fast => "fast",
            ShutdownMode::Immediate => "immediate",
        }
    }
}

/// A running private cluster. Dropping it stops the server and deletes its data.
#[derive(Debug)]
pub struct EmbeddedPg {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<String>,
}

impl EmbeddedPg {
    /// Initialises and starts a fresh cluster.
    pub fn start() -> Result<EmbeddedPg, EmbeddedPgError> {
        let bin = find_bin_dir().ok_or(EmbeddedPgError::NotInstalled)?;
        let run_as = if is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!("genq-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let pg = EmbeddedPg {
            dir,
            bin,
            port: free_port()?,
            run_as,
        };
        if let Some(user) = &pg.run_as {
            pg.run("chown", Command::new("chown").arg(user).arg(&pg.dir))?;
        }
        let data = pg.data_dir();
        pg.run(
            "initdb",
            pg.pg_command("initdb")
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
        )?;
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=400 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=128MB",
            pg.port,
            pg.dir.display()
        );
        pg.spawn_watchdog()?;
        pg.run(
            "pg_ctl start",
            pg.pg_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(pg.dir.join("server.log"))
                .args(["-o", &opts, "-w", "-t", "60", "start"]),
        )?;
        Ok(pg)
    }

    /// Stops the server with `mode` and starts it again on the same port and
    /// data (`pg_ctl restart -w`); returns once it accepts connections.
    /// Clients connected before lose their connections.
    pub fn restart(&self, mode: ShutdownMode) -> Result<(), EmbeddedPgError> {
        // `-l` again: without it the new postmaster would write to our pipes.
        // The server options come back from postmaster.opts.
        self.run(
            "pg_ctl restart",
            self.pg_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-m", mode.as_pg_ctl(), "-w", "-t", "60", "restart"]),
        )
    }

    /// A URL for the cluster's `postgres` database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A URL for database `db` on the cluster.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        }
    }

    fn run(&self, step: &'static str, cmd: &mut Command) -> Result<(), EmbeddedPgError> {
        let out = cmd.stdin(Stdio::null()).output()?;
        if out.status.success() {
            return Ok(());
        }
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if let Ok(log) = std::fs::read_to_string(self.dir.join("server.log")) {
            detail.push_str("\nserver log:\n");
            detail.push_str(log.trim());
        }
        Err(EmbeddedPgError::Step { step, detail })
    }

    /// A detached shell that stops the cluster and deletes it once this
    /// process is gone, however it ended (even SIGKILL).
    fn spawn_watchdog(&self) -> io::Result<()> {
        let stop = self.stop_script();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}",
            pid = std::process::id()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(())
    }

    fn stop_script(&self) -> String {
        let runner = match &self.run_as {
            Some(user) => format!("runuser -u {user} -- "),
            None => String::new(),
        };
        format!(
            "{runner}{pg_ctl} -D {data} -m immediate -w stop >/dev/null 2>&1; rm -rf {dir}",
            pg_ctl = shell_quote(&self.bin.join("pg_ctl")),
            data = shell_quote(&self.data_dir()),
            dir = shell_quote(&self.dir),
        )
    }
}

impl Drop for EmbeddedPg {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &self.stop_script()])
            .stdin(Stdio::null())
            .status();
    }
}

use std::os::unix::process::CommandExt as _;

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn unprivileged_user() -> Result<String, EmbeddedPgError> {
    let exists = Command::new("id")
        .arg("-u")
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if exists {
        Ok("postgres".into())
    } else {
        Err(EmbeddedPgError::NoUnprivilegedUser)
    }
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The directory holding initdb and pg_ctl (and pgbench beside them).
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("GENQ_PG_BIN").map(PathBuf::from) {
        return has_tools(&dir).then_some(dir);
    }
    // Debian puts the server binaries outside PATH, versioned; prefer the newest.
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versioned.sort();
    if let Some((_, dir)) = versioned.pop() {
        return Some(dir);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| has_tools(dir))
}
