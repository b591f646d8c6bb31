//! One module per view; each reads its filters and time range from the URL, so every view is a
//! link.

pub mod agents;
pub mod alerts;
pub mod bgp;
pub mod overview;
pub mod signin;
pub mod test;
pub mod wall;
