//! `cargo xtask`: the project's chores in Rust rather than shell scattered over the repo.
//!
//! - `cargo xtask dev`: build and start `foureyes-collector serve --dev` (the README's first command)
//! - `cargo xtask ci`: install what the tests need, then format, lint, build and run every test
//!   (the README's second command; `.ci/run` calls exactly this)
//! - `cargo xtask bench`: every benchmark of the README's Performance table (`cargo bench` targets,
//!   then the `benches/*.sh` scripts); `bench NAME` one of them, `bench list` names them
//! - `cargo xtask web`: build the dashboard (app-web) to wasm into `<target>/web-dist`, which the
//!   collector embeds when it is built next
#![allow(clippy::print_stdout)]

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod web;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the binaries and run the collector in dev mode with a local node.
    Dev {
        /// Extra arguments for `foureyes-collector serve --dev`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Install test dependencies, then fmt, clippy, build and test everything.
    Ci {
        /// Skip installing system packages (they must already be there).
        #[arg(long)]
        no_install: bool,
    },
    /// Run the benchmarks (release builds) and print their figures: all of them, or one by name.
    Bench {
        /// One benchmark (a `cargo bench` target or a `benches/` script name); `list` names them.
        what: Option<String>,
    },
    /// Build the web dashboard into `<target>/web-dist` (embedded by the next collector build).
    Web,
    /// Run a `testbeds/` containerlab topology with network namespaces (no Docker; root):
    /// `lab deploy testbeds/listener-frr.clab.yml`, `lab exec FILE NODE -- CMD...`,
    /// `lab logs FILE NODE`, `lab destroy FILE`. Builds the release listener the topologies bind.
    Lab {
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Make an ed25519 key pair for signing node releases. Keep the `.key` file offline; build
    /// release nodes with FOUREYES_UPDATE_PUBKEY set to the printed public key.
    UpdateKeygen {
        /// Path prefix: writes PREFIX.key (secret, mode 0600) and PREFIX.pub.
        prefix: PathBuf,
    },
    /// Sign a node binary for self-update; prints the signature (hex) and SHA-256.
    SignUpdate {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        version: String,
        #[arg(long)]
        binary: PathBuf,
    },
}

/// Debian packages the test suite drives for real.
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "procps",
    "iputils-ping",
    "curl",
    "bird2",
    "tcpdump",
    // The listener's interop tests: FRR bgpd + vtysh, gobgpd + the gobgp CLI.
    "frr",
    "gobgpd",
    // MRT replay tests: reference decoder, sample dumps, and the dump makers.
    "bgpdump",
    "mrtparse",
    "bzip2",
    // /metrics is checked with promtool.
    "prometheus",
    // The SMTP notifier's tests send to a real aiosmtpd (collector/notify/tests/smtp.rs).
    "python3-aiosmtpd",
    // RPKI origin validation tests: an RTR cache serving a VRP file.
    "stayrtr",
    // The dashboard's browser tests drive a real headless Chromium through WebDriver.
    "chromium",
    "chromium-driver",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A target dir outside the clone, so a fresh clone reuses a warm build.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/foureyes-target")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root()).env("CARGO_TARGET_DIR", target_dir());
    c
}

fn run(what: &str, mut cmd: Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot start"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

struct Stages(Vec<(String, Duration, bool)>);

impl Stages {
    fn run(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        println!("\n==> {name}");
        let t = Instant::now();
        let r = f();
        self.0.push((name.to_string(), t.elapsed(), r.is_ok()));
        println!(
            "<== {name}: {} in {:.1}s",
            if r.is_ok() { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        r
    }

    fn report(&self) {
        println!("\nStage timings:");
        for (n, d, ok) in &self.0 {
            println!(
                "  {:<28} {:>8.1}s  {}",
                n,
                d.as_secs_f64(),
                if *ok { "ok" } else { "FAILED" }
            );
        }
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn install() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if !missing.is_empty() {
        println!("installing {}", missing.join(" "));
        run("apt-get update", {
            let mut c = Command::new("apt-get");
            c.arg("update").arg("-qq");
            c
        })?;
        run("apt-get install", {
            let mut c = Command::new("apt-get");
            c.args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing);
            c.env("DEBIAN_FRONTEND", "noninteractive");
            c
        })?;
    } else {
        println!("system packages present: {}", APT_PACKAGES.join(" "));
    }
    for comp in ["rustfmt", "clippy"] {
        let ok = Command::new("rustup")
            .args(["component", "list", "--installed"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with(comp))
            })
            .unwrap_or(false);
        if !ok {
            run("rustup component add", {
                let mut c = Command::new("rustup");
                c.args(["component", "add", comp]);
                c
            })?;
        }
    }
    // The fuzz stage builds with `cargo +nightly fuzz` (sanitizer flags need nightly).
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "-V"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !nightly {
        run("rustup toolchain install nightly", {
            let mut c = Command::new("rustup");
            c.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
            c
        })?;
    }
    if !have("cargo-fuzz") {
        run("cargo install cargo-fuzz", {
            let mut c = Command::new("cargo");
            c.args(["install", "--locked", "cargo-fuzz"]);
            c
        })?;
    }
    web::install()?;
    if !have("cargo-nextest") {
        run("cargo install cargo-nextest", {
            let mut c = Command::new("cargo");
            c.args(["install", "--locked", "cargo-nextest"]);
            c
        })?;
    }
    Ok(())
}

/// Every cargo-fuzz target in fuzz/, each run for a bounded time in CI. A crash fails the run;
/// keep its input in fuzz/regressions/<target>/ (bgp-listener/tests/fuzz_regressions.rs replays
/// it on stable in every test run).
const FUZZ_TARGETS: &[&str] = &["bgp_session", "bgp_update", "bmp", "mrt"];
const FUZZ_SECONDS: u32 = 20;

fn fuzz(target: &str, seconds: u32) -> Result<()> {
    let nightly = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("nightly"))
        .unwrap_or(false);
    if !nightly {
        bail!("fuzzing needs the nightly toolchain (`cargo xtask install` installs it)");
    }
    // libFuzzer writes new inputs to the first directory (gitignored) and reads the committed
    // seeds and regressions, so a short run starts from real messages, not from nothing.
    let fuzz_dir = root().join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut c = Command::new("cargo");
    c.current_dir(&fuzz_dir)
        // Sanitizer builds must not share (and invalidate) the main target dir.
        .env(
            "CARGO_TARGET_DIR",
            target_dir().with_file_name("foureyes-fuzz-target"),
        )
        .args(["+nightly", "fuzz", "run", target])
        .arg(&corpus)
        .arg(fuzz_dir.join("seeds").join(target))
        .arg(fuzz_dir.join("regressions").join(target))
        .args(["--", &format!("-max_total_time={seconds}")]);
    run(&format!("cargo fuzz run {target}"), c)
}

fn ci(no_install: bool) -> Result<()> {
    let mut st = Stages(Vec::new());
    let total = Instant::now();
    let r = (|| -> Result<()> {
        if !no_install {
            st.run("install dependencies", install)?;
        }
        st.run("cargo fmt --check", || {
            let mut c = cargo();
            c.args(["fmt", "--all", "--check"]);
            run("cargo fmt", c)
        })?;
        st.run("cargo clippy", || {
            let mut c = cargo();
            c.args([
                "clippy",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ]);
            run("cargo clippy", c)
        })?;
        st.run("web dashboard (wasm)", || web::build().map(|_| ()))?;
        st.run("cargo clippy (web, wasm32)", || {
            let mut c = cargo();
            c.args([
                "clippy",
                "-p",
                "foureyes-web",
                "--target",
                web::TARGET,
                "--locked",
                "--",
                "-D",
                "warnings",
            ]);
            run("cargo clippy (web)", c)
        })?;
        st.run("web unit tests (native)", || {
            // The dashboard's pure functions (state colours, formatting); not a default member.
            let mut c = cargo();
            c.args(["test", "-p", "foureyes-web", "--bins", "--locked"]);
            run("cargo test (web)", c)
        })?;
        st.run("cargo build --bins", || {
            // End-to-end tests start these binaries as separate processes.
            let mut c = cargo();
            c.args(["build", "--bins", "--locked"]);
            run("cargo build", c)
        })?;
        st.run("tests (nextest)", || {
            let mut c = cargo();
            c.args([
                "nextest",
                "run",
                "--locked",
                "--no-fail-fast",
                "--failure-output",
                "final",
            ]);
            run("cargo nextest", c)
        })?;
        st.run("doc tests", || {
            let mut c = cargo();
            c.args(["test", "--doc", "--locked"]);
            run("cargo test --doc", c)
        })?;
        for target in FUZZ_TARGETS {
            st.run(&format!("fuzz {target} ({FUZZ_SECONDS}s)"), || {
                fuzz(target, FUZZ_SECONDS)
            })?;
        }
        Ok(())
    })();
    st.report();
    println!("  {:<28} {:>8.1}s", "total", total.elapsed().as_secs_f64());
    r
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Dev { args } => {
            web::build()?;
            let mut c = cargo();
            c.args(["build", "--release", "--bins"]);
            run("cargo build --release", c)?;
            let bin = target_dir().join("release/foureyes-collector");
            let mut c = Command::new(&bin);
            c.args(["serve", "--dev"]).args(args);
            c.env(
                "FOUREYES_NODE_BIN",
                target_dir().join("release/foureyes-node"),
            );
            run("foureyes-collector serve --dev", c)
        }
        Cmd::Ci { no_install } => ci(no_install),
        Cmd::UpdateKeygen { prefix } => {
            let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            let secret = prefix.with_extension("key");
            foureyes_identity::write_private(&secret, hex::encode(key.to_bytes()).as_bytes())?;
            let public = hex::encode(key.verifying_key().to_bytes());
            std::fs::write(prefix.with_extension("pub"), &public)?;
            println!("{public}");
            Ok(())
        }
        Cmd::SignUpdate {
            key,
            version,
            binary,
        } => {
            use ed25519_dalek::Signer;
            use sha2::Digest;
            let seed: [u8; 32] = hex::decode(std::fs::read_to_string(&key)?.trim())?
                .try_into()
                .map_err(|_| anyhow::anyhow!("{}: not a 32-byte hex seed", key.display()))?;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let digest = sha2::Sha256::digest(std::fs::read(&binary)?);
            let sig = key.sign(&foureyes_identity::update_message(&version, &digest));
            println!("signature {}", hex::encode(sig.to_bytes()));
            println!("sha256 {}", hex::encode(digest));
            Ok(())
        }
        Cmd::Bench { what } => bench::bench(what.as_deref()),
        Cmd::Web => web::build().map(|d| println!("dashboard built into {}", d.display())),
        Cmd::Lab { args } => lab(&args),
    }
}

/// `cargo xtask lab ...`: builds the release listener (the topologies bind
/// `../target/release/foureyes-bgp-listener`, which lives in our target dir outside the clone)
/// and `foureyes-netlab`, then runs netlab with that bind source mapped.
fn lab(args: &[String]) -> Result<()> {
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "foureyes-bgp-listener",
        "-p",
        "foureyes-netlab",
    ]);
    run("cargo build --release (listener, netlab)", c)?;
    let release = target_dir().join("release");
    let mut n = Command::new(release.join("foureyes-netlab"));
    n.current_dir(root());
    match args.split_first() {
        Some((first, rest)) if first == "deploy" => {
            n.arg("deploy")
                .arg("--bind-source")
                .arg(format!(
                    "{}={}",
                    root().join("target/release").display(),
                    release.display()
                ))
                .args(rest);
        }
        _ => {
            n.args(args);
        }
    }
    run("foureyes-netlab", n)
}
