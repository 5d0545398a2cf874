//! The `.dlc` lexer, parser and checker on arbitrary text: diagnostics or a graph,
//! never a panic, a stack overflow or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(g) = dlc_dsl::import_source("fuzz.dlc", text, Path::new("/nonexistent")) {
            dlc_ir::verify(&g).expect("a lowered graph verifies");
        }
    }
});
