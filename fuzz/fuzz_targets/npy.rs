//! `dlc run`'s `.npy` reader on arbitrary bytes: a tensor whose data matches its
//! shape, or an error; never a panic or an allocation the file does not justify.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = dlc_driver::npy::read_bytes(data, Path::new("fuzz.npy")) {
        let n: u64 = t.shape.iter().product();
        let size = dlc_artifact::dtype_size(&t.dtype).unwrap_or(1) as u64;
        assert_eq!(t.data.len() as u64, n * size, "data length matches the shape");
    }
});
