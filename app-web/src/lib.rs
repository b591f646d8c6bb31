//! The Leptos dashboard lands with the web-dashboard issue; this crate reserves its place in the
//! workspace so the layout matches ARCHITECTURE.md.
