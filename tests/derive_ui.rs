//! Compile-failure tests for `#[derive(ShmSafe)]`: one file per refusal class
//! under `tests/ui/`, each with its reviewed `.stderr`. Regenerate after an
//! intended change with `TRYBUILD=overwrite cargo test --test derive_ui`, and
//! review the diff: the messages are part of the user interface.

#[test]
fn derive_refusals() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
