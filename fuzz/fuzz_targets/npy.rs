//! `dlc run`'s `.npy` reader on arbitrary bytes: a tensor whose data matches its
//! shape, or an error; never a panic or an allocation the file does not justify.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = dlc_npy::read_bytes(data, Path::new("fuzz.npy")) {
        if t.dtype == dlc_runtime::STRING {
            // A string tensor: each element a length and its bytes, as many as the shape says.
            assert!(t.string_bytes().is_some(), "string elements match the shape");
            return;
        }
        let n: u64 = t.shape.iter().product();
        let size = dlc_artifact::dtype_size(&t.dtype).unwrap_or(1) as u64;
        assert_eq!(t.data.len() as u64, n * size, "data length matches the shape");
    }
});
