//! The Tauri shell lands with the web-dashboard issue; this crate reserves its place in the workspace.
