//! Embeds the web dashboard built by `cargo xtask web` (the files in `<target>/web-dist`, or in
//! `FOUREYES_WEB_DIST`) into the collector as `OUT_DIR/web_assets.rs`. Without a built dashboard
//! the list is empty and the collector serves a page saying how to build it.
//!
//! Text and wasm files are also stored gzipped (level 9, made here once), for browsers that accept
//! it.
//!
//! The target dir is found from `OUT_DIR` (the ancestor holding cargo's `CACHEDIR.TAG`). When no
//! dist dir exists yet an empty one is created there, so `rerun-if-changed` watches a real
//! directory: a missing path would rerun this script, and rebuild the collector, on every build.
use std::{
    env,
    fmt::Write,
    path::{Path, PathBuf},
};

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn gzip(raw: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(raw).ok()?;
    e.finish().ok()
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path(), &r, out),
            Ok(_) => out.push((r, e.path())),
            Err(_) => {}
        }
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=FOUREYES_WEB_DIST");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dist = match env::var_os("FOUREYES_WEB_DIST") {
        Some(d) => Some(PathBuf::from(d)),
        None => out
            .ancestors()
            .find(|a| a.join("CACHEDIR.TAG").is_file())
            .map(|t| t.join("web-dist")),
    };
    let mut files = Vec::new();
    if let Some(dist) = &dist {
        if !dist.exists() {
            let _ = std::fs::create_dir_all(dist);
        }
        println!("cargo:rerun-if-changed={}", dist.display());
        if dist.join("index.html").is_file() {
            walk(dist, "", &mut files);
        }
    }
    files.sort();
    if files.is_empty() {
        // Loud on purpose: a collector built this way serves no dashboard, only a page saying
        // how to build one, and that is easy to miss until someone opens a browser.
        let at = dist.as_ref().map_or_else(
            || "<target>/web-dist (no target dir found)".to_string(),
            |d| d.display().to_string(),
        );
        println!(
            "cargo::warning=no built dashboard in {at}: this collector will serve a page \
             asking for `cargo xtask web` instead of the dashboard"
        );
    }
    let mut code = String::from(
        "/// The dashboard's files: (path without the leading slash, content type, bytes, the\n\
         /// bytes gzipped if that is smaller).\n\
         #[allow(clippy::type_complexity)]\n\
         pub static ASSETS: &[(&str, &str, &[u8], Option<&[u8]>)] = &[\n",
    );
    let gz_dir = out.join("web-gz");
    let _ = std::fs::create_dir_all(&gz_dir);
    for (i, (name, path)) in files.iter().enumerate() {
        println!("cargo:rerun-if-changed={}", path.display());
        let gz = std::fs::read(path).ok().and_then(|raw| {
            let z = gzip(&raw)?;
            (z.len() + 256 < raw.len()).then_some(z)
        });
        let gz = gz.and_then(|z| {
            let p = gz_dir.join(format!("{i}.gz"));
            std::fs::write(&p, z).ok()?;
            Some(format!(
                "Some(include_bytes!({:?}))",
                p.display().to_string()
            ))
        });
        let _ = writeln!(
            code,
            "    ({name:?}, {:?}, include_bytes!({:?}), {}),",
            content_type(name),
            path.display().to_string(),
            gz.as_deref().unwrap_or("None")
        );
    }
    code.push_str("];\n");
    std::fs::write(out.join("web_assets.rs"), code).expect("write web_assets.rs");
}
