//! The manifest reader on arbitrary bytes, then what dlc-runtime does with a manifest
//! before calling code: bind input shapes to run-time dims, size every tensor and the
//! signature. Errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = dlc_artifact::Manifest::from_bytes(data, "fuzz.manifest") else { return };
    let _ = m.signature();
    // Bind the inputs at their fixed dims, or 1..4 for the symbolic ones.
    let shapes: Vec<Vec<u64>> = m
        .inputs
        .iter()
        .enumerate()
        .map(|(i, s)| s.shape.iter().map(|d| d.fixed.unwrap_or(1 + i as u64 % 4)).collect())
        .collect();
    let refs: Vec<&[u64]> = shapes.iter().map(|s| s.as_slice()).collect();
    if let Ok(dims) = m.bind_dims(&refs) {
        for s in m.inputs.iter().chain(&m.outputs) {
            let _ = m.bytes_at(s, &dims);
            let _ = m.capacity_at(s, &dims);
        }
    }
    for s in &m.outputs {
        let _ = s.fixed_shape();
        let _ = s.shape_string();
    }
});
