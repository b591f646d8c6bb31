//! Type-level receive-only guarantee: code that builds an UPDATE (or ROUTE-REFRESH) for the wire
//! does not compile.

#[test]
fn an_update_for_the_wire_does_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
