//! The ONNX importer on arbitrary bytes: an error or a graph that verifies, never a
//! panic, an abort or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let opts = dlc_onnx::ImportOptions::default();
    if let Ok(g) = dlc_onnx::import_bytes(data, Path::new("/nonexistent/fuzz.onnx"), &opts) {
        dlc_ir::verify(&g).expect("an imported graph verifies");
    }
});
