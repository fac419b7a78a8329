//! `genq` processes as tests and benchmarks start them: the binary built
//! beside the test, run in a directory of its own so no developer's `.env`
//! changes what runs, and killed when the test ends.

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `genq` binary Cargo built for this test or benchmark: `GENQ_BIN` if
/// set, else `genq` in the target directory of the running executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/genq`; Cargo builds a
/// package's binaries before its integration tests and benchmarks).
pub fn genq_binary() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("GENQ_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("genq"))
        .expect("the test runs from target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} does not exist: build it (cargo build --bin genq) or set GENQ_BIN",
        bin.display()
    );
    bin
}

/// The `genq` binary as tests run it: in `dir`, so `dotenvy` (which looks in the current
/// directory and its ancestors) never reads a developer's `.env` into the process. Panics if
/// `dir` or an ancestor holds a `.env`, rather than let one change what the test runs.
pub fn genq(dir: &std::path::Path) -> std::process::Command {
    if let Some(found) = dotenv_above(dir) {
        panic!(
            "{} would be read by genq started in {}: tests run genq where no .env is",
            found.display(),
            dir.display()
        );
    }
    let mut cmd = std::process::Command::new(genq_binary());
    cmd.current_dir(dir);
    cmd
}

/// The first `.env` in `dir` or an ancestor: the file `dotenvy::dotenv()` would read there.
pub fn dotenv_above(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    dir.ancestors().map(|d| d.join(".env")).find(|f| f.exists())
}

/// A fresh, empty scratch directory under the system's temp dir.
pub fn scratch_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("genq-{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `genq worker` process against `db_url` and the sim at `base_url`, with
/// `dir/keys.toml` as its keys file and `dir/out` for images, started in `dir`
/// (see [`genq()`]).
pub fn worker_process(db_url: &str, base_url: &str, dir: &std::path::Path) -> ChildGuard {
    ChildGuard(
        worker_command(db_url, base_url, dir)
            .args(["--concurrency", "4", "--poll-ms", "100"])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    )
}

/// `genq worker` set up as [`worker_process`] starts it, for callers that
/// add their own flags.
pub fn worker_command(
    db_url: &str,
    base_url: &str,
    dir: &std::path::Path,
) -> std::process::Command {
    let mut cmd = genq(dir);
    cmd.arg("worker")
        .env("DATABASE_URL", db_url)
        .env("OPENAI_BASE_URL", base_url)
        .env("GENQ_KEYS_FILE", dir.join("keys.toml"))
        .env("GENQ_OUTPUT_DIR", dir.join("out"))
        .env_remove("OPENAI_API_KEYS")
        .env_remove("OPENAI_API_KEY")
        .stdin(std::process::Stdio::null());
    cmd
}
