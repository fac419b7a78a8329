//! docker-compose.yml, the Dockerfile and .env.example, checked statically
//! (no Docker engine runs here): the services exist and are wired as the
//! README says, and every variable they name is one genq reads.

use std::collections::BTreeSet;
use yaml_rust2::{Yaml, YamlLoader};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every variable genq reads: the `env = "…"` of its flags, plus the few read directly.
fn genq_variables() -> BTreeSet<String> {
    let mut vars: BTreeSet<String> = [
        "OPENAI_API_KEYS",
        "OPENAI_API_KEY",
        "GENQ_KEYS_FILE",
        "GENQ_LOG_FORMAT",
        "RUST_LOG",
        "GENQ_PG_BIN",
    ]
    .map(String::from)
    .into();
    let mut sources = vec![read("src/main.rs")];
    let mut dirs = vec![std::path::PathBuf::from(format!(
        "{}/src/cli",
        env!("CARGO_MANIFEST_DIR")
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                sources.push(std::fs::read_to_string(path).unwrap());
            }
        }
    }
    for source in sources {
        for piece in source.split("env = \"").skip(1) {
            vars.insert(piece.split('"').next().unwrap().to_string());
        }
    }
    vars
}

#[test]
fn compose_has_the_services_wired_as_documented() {
    let doc = &YamlLoader::load_from_str(&read("docker-compose.yml")).unwrap()[0];
    let services = &doc["services"];
    for name in ["postgres", "migrate", "api", "worker"] {
        assert!(!services[name].is_badvalue(), "service {name} missing");
    }
    assert!(
        !services["postgres"]["healthcheck"]["test"].is_badvalue(),
        "postgres needs a healthcheck"
    );
    assert_eq!(services["migrate"]["command"][0].as_str(), Some("migrate"));
    assert_eq!(
        services["migrate"]["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert_eq!(
        services["migrate"]["restart"].as_str(),
        Some("no"),
        "migrate is one-shot"
    );
    for name in ["api", "worker"] {
        assert_eq!(
            services[name]["depends_on"]["migrate"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{name} starts after migrations"
        );
    }
    assert_eq!(services["api"]["command"][0].as_str(), Some("serve"));
    assert_eq!(services["worker"]["command"][0].as_str(), Some("worker"));
    // `--scale worker=3` needs no fixed host port and no fixed container name.
    assert!(
        services["worker"]["ports"].is_badvalue()
            && services["worker"]["container_name"].is_badvalue()
    );
    // The API listens beyond loopback, so it must demand a token.
    let api_env = &services["api"]["environment"];
    assert!(
        api_env["GENQ_API_TOKEN"]
            .as_str()
            .unwrap()
            .starts_with("${GENQ_API_TOKEN:?")
    );
}

#[test]
fn compose_and_env_example_name_only_variables_genq_reads() {
    let known = genq_variables();
    let doc = &YamlLoader::load_from_str(&read("docker-compose.yml")).unwrap()[0];
    for (name, service) in doc["services"].as_hash().unwrap() {
        if name.as_str() == Some("postgres") {
            continue;
        }
        if let Yaml::Hash(env) = &service["environment"] {
            for key in env.keys() {
                let key = key.as_str().unwrap();
                assert!(
                    known.contains(key),
                    "{name:?} sets {key}, which genq does not read"
                );
            }
        }
    }
    let example: BTreeSet<String> = read(".env.example")
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap().to_string())
        .collect();
    assert_eq!(
        example, known,
        ".env.example must list exactly the variables genq reads"
    );
    // Each variable has a comment line above it.
    let text = read(".env.example");
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with('#') && line.contains('=') {
            assert!(
                i > 0 && (lines[i - 1].starts_with('#') || lines[i - 1].contains('=')),
                "{line} lacks a comment"
            );
        }
    }
}

#[test]
fn dockerfile_is_multi_stage_and_builds_the_binary() {
    let file = read("Dockerfile");
    assert!(
        file.matches("\nFROM ").count() + usize::from(file.starts_with("FROM ")) >= 2,
        "multi-stage"
    );
    assert!(file.contains("cargo build --release --locked --bin genq"));
    assert!(file.contains("COPY --from=build"));
    assert!(file.contains("USER genq"), "runs unprivileged");
    // What the build reads from the source tree (migrations, the price
    // table and templates are compiled in) is copied into the build stage.
    for path in [
        "src",
        "crates",
        "migrations",
        "prices",
        "askama.toml",
        ".sqlx",
        ".cargo",
    ] {
        assert!(
            file.contains(&format!("COPY {path} ")),
            "the Dockerfile copies {path}"
        );
    }
    let rust = file.lines().find(|l| l.starts_with("FROM rust:")).unwrap();
    let manifest = read("Cargo.toml");
    let msrv = manifest
        .lines()
        .find(|l| l.starts_with("rust-version"))
        .unwrap()
        .split('"')
        .nth(1)
        .unwrap();
    assert!(
        rust.contains(&format!("rust:{msrv}")),
        "the image's Rust ({rust}) matches rust-version {msrv}"
    );
}

/// `major.minor[.patch]` as numbers, for comparing Rust versions.
fn version(text: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = text.split('.').map(|p| p.parse().unwrap()).collect();
    parts.resize(3, 0);
    parts
}

/// The Rust that `Cargo.toml`, the Dockerfile and the README promise is the
/// one the locked dependencies need: the highest `rust_version` in
/// `cargo metadata`. A dependency update that raises it fails here.
#[test]
fn the_promised_rust_is_what_the_locked_dependencies_need() {
    // The packages this platform builds (what `cargo build --locked` fetched):
    // offline, cargo cannot read the manifests of other platforms' crates.
    let rustc = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("running rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc names its host");
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (needed, by) = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((version(p["rust_version"].as_str()?), p["name"].as_str()?)))
        .filter(|(_, name)| *name != "genq")
        .max()
        .expect("some dependency states its rust_version");
    let declared = version(env!("CARGO_PKG_RUST_VERSION"));
    let short = |v: &[u64]| format!("{}.{}", v[0], v[1]);
    assert_eq!(
        short(&declared),
        short(&needed),
        "Cargo.toml's rust-version must be what {by} needs"
    );
    let msrv = short(&needed);
    assert!(
        read("Dockerfile").contains(&format!("FROM rust:{msrv}-")),
        "the Dockerfile builds with Rust {msrv}"
    );
    assert!(
        read("README.md").contains(&format!("Rust ({msrv}+)")),
        "the README says Rust {msrv}+"
    );
}

/// genq's own reqwest names its TLS backend instead of borrowing async-openai's.
#[test]
fn reqwest_names_its_tls_backend() {
    let manifest = read("Cargo.toml");
    let line = manifest
        .lines()
        .find(|l| l.starts_with("reqwest"))
        .expect("reqwest is a dependency");
    assert!(
        line.contains("\"rustls\""),
        "reqwest must name rustls: {line}"
    );
}
