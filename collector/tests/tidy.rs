//! Architecture Invariant: API handlers never construct a system scope; every store call they make
//! is scoped by the caller's credential (see `api::Auth`).

#[test]
fn the_api_module_never_constructs_a_system_scope() {
    let src = include_str!("../src/api.rs");
    for forbidden in ["collector_internal", "Scope::System", "SystemScope"] {
        assert!(
            !src.contains(forbidden),
            "src/api.rs mentions {forbidden}: API handlers must use Auth's tenant scope"
        );
    }
    // The scope the handlers use comes from the credential.
    assert!(src.contains("fn scope(&self) -> Scope"));
}

#[test]
fn the_alert_api_never_constructs_a_system_scope() {
    let src = include_str!("../src/alerts/api.rs");
    for forbidden in ["collector_internal", "Scope::System", "SystemScope"] {
        assert!(
            !src.contains(forbidden),
            "src/alerts/api.rs mentions {forbidden}: API handlers must use Auth's tenant scope"
        );
    }
    assert!(src.contains("auth.scope()"));
}
