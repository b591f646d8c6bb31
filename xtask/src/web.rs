//! `cargo xtask web`: the dashboard (app-web) to wasm, fully offline.
//!
//! Steps: `cargo build --release --target wasm32-unknown-unknown -p foureyes-web`, then
//! `wasm-bindgen --target web` (the CLI installed at exactly the version in Cargo.lock: the two
//! must match), then the dist dir `<target>/web-dist` with content-hashed file names (cacheable
//! forever) and an `index.html` (never cached) that loads an external `boot-<hash>.js`, so the
//! page needs no inline script under the collector's CSP. The collector's build script embeds
//! whatever is in that dir. Trunk is not used: it downloads its tools, and this is four steps.
//! wasm-opt is not run: Debian's binaryen is too old for current wasm-bindgen output.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use sha2::Digest;

use super::{cargo, have, root, run, target_dir};

pub const TARGET: &str = "wasm32-unknown-unknown";

/// The dist dir the collector's build script looks for (next to `CACHEDIR.TAG`).
pub fn dist_dir() -> PathBuf {
    target_dir().join("web-dist")
}

/// The wasm-bindgen version pinned in Cargo.lock; the CLI must be the same.
fn locked_wasm_bindgen() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).context("Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"wasm-bindgen\""
            && let Some(v) = lines
                .next()
                .and_then(|v| v.trim().strip_prefix("version = \""))
        {
            return Ok(v.trim_end_matches('"').to_string());
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

fn wasm_bindgen_version() -> Option<String> {
    let out = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .map(str::to_string)
}

/// The wasm32 target and wasm-bindgen-cli at the locked version; idempotent.
pub fn install() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == TARGET)
        })
        .unwrap_or(false);
    if !installed {
        run("rustup target add", {
            let mut c = Command::new("rustup");
            c.args(["target", "add", TARGET]);
            c
        })?;
    }
    let want = locked_wasm_bindgen()?;
    if have("wasm-bindgen") && wasm_bindgen_version().as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    let install = |locked: bool| {
        let mut c = Command::new("cargo");
        c.args(["install", "wasm-bindgen-cli", "--version", &want, "--force"]);
        if locked {
            c.arg("--locked");
        }
        // Built in a throwaway dir so the project's target dir stays as it is.
        c.env(
            "CARGO_TARGET_DIR",
            target_dir().join("tmp/wasm-bindgen-cli"),
        );
        c
    };
    // `--locked` first; a registry mirror that lags behind the CLI's own lock file cannot serve
    // it, and then the newest compatible dependencies are used (the CLI version stays exact).
    if run("cargo install --locked wasm-bindgen-cli", install(true)).is_err() {
        run("cargo install wasm-bindgen-cli", install(false))?;
    }
    Ok(())
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
        .get(..12)
        .unwrap_or_default()
        .to_string()
}

/// Writes `bytes` to `path` unless it already holds them, so an unchanged UI does not make the
/// collector rebuild.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes).with_context(|| path.display().to_string())
}

fn collect(dir: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let r = rel.join(e.file_name());
        if e.file_type()?.is_dir() {
            collect(&e.path(), &r, out)?;
        } else {
            out.insert(r, std::fs::read(e.path())?);
        }
    }
    Ok(())
}

/// Builds the dashboard; returns the dist dir.
pub fn build() -> Result<PathBuf> {
    install()?;
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "--locked",
        "--target",
        TARGET,
        "-p",
        "foureyes-web",
    ]);
    // Size over speed for the download; only the wasm artifacts use this profile (host build
    // scripts and proc macros keep their own build-override profile).
    c.env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "z")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort");
    run("cargo build (wasm)", c)?;
    let wasm = target_dir().join(TARGET).join("release/foureyes-web.wasm");
    let bindgen = target_dir().join("web-bindgen");
    let _ = std::fs::remove_dir_all(&bindgen);
    run("wasm-bindgen", {
        let mut c = Command::new("wasm-bindgen");
        c.args([
            "--target",
            "web",
            "--no-typescript",
            "--out-name",
            "foureyes_web",
        ])
        .arg("--out-dir")
        .arg(&bindgen)
        .arg(&wasm);
        c
    })?;

    let js = std::fs::read(bindgen.join("foureyes_web.js"))?;
    let wasm = std::fs::read(bindgen.join("foureyes_web_bg.wasm"))?;
    let css = std::fs::read(root().join("app-web/style.css"))?;
    let js_name = format!("foureyes_web-{}.js", short_hash(&js));
    let wasm_name = format!("foureyes_web_bg-{}.wasm", short_hash(&wasm));
    let css_name = format!("style-{}.css", short_hash(&css));
    // The wasm-bindgen loader is an ES module; this external starter replaces an inline script.
    let boot = format!(
        "import init from \"./{js_name}\";\ninit({{ module_or_path: \"./{wasm_name}\" }});\n"
    );
    let boot_name = format!("boot-{}.js", short_hash(boot.as_bytes()));
    let index = std::fs::read_to_string(root().join("app-web/index.html"))?
        .replace("{{CSS}}", &css_name)
        .replace("{{JS}}", &js_name)
        .replace("{{WASM}}", &wasm_name)
        .replace("{{BOOT}}", &boot_name);

    let mut files = BTreeMap::new();
    // JS snippets some crates ship (wasm-bindgen puts them under snippets/): kept as they are.
    if bindgen.join("snippets").is_dir() {
        collect(&bindgen.join("snippets"), Path::new("snippets"), &mut files)?;
    }
    files.insert(PathBuf::from(js_name), js);
    files.insert(PathBuf::from(wasm_name), wasm);
    files.insert(PathBuf::from(css_name), css);
    files.insert(PathBuf::from(boot_name), boot.into_bytes());
    files.insert(PathBuf::from("index.html"), index.into_bytes());

    let dist = dist_dir();
    std::fs::create_dir_all(&dist)?;
    let mut existing = BTreeMap::new();
    collect(&dist, Path::new(""), &mut existing)?;
    for stale in existing.keys().filter(|k| !files.contains_key(*k)) {
        std::fs::remove_file(dist.join(stale))?;
    }
    for (name, bytes) in &files {
        write_if_changed(&dist.join(name), bytes)?;
    }
    report_sizes(&dist)?;
    Ok(dist)
}

/// Prints each file's size raw and gzipped (`gzip -9`, what a server or proxy would send).
pub fn report_sizes(dist: &Path) -> Result<(u64, u64)> {
    let mut files = BTreeMap::new();
    collect(dist, Path::new(""), &mut files)?;
    let (mut raw, mut gz) = (0u64, 0u64);
    for (name, bytes) in &files {
        let out = Command::new("gzip")
            .args(["-9", "-c"])
            .arg(dist.join(name))
            .output()
            .context("gzip")?;
        let z = out.stdout.len() as u64;
        println!(
            "  {:<44} {:>9} bytes  {:>9} gzip",
            name.display(),
            bytes.len(),
            z
        );
        raw += bytes.len() as u64;
        gz += z;
    }
    println!("  {:<44} {raw:>9} bytes  {gz:>9} gzip", "total");
    Ok((raw, gz))
}
