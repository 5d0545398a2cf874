//! `.kir` file tests (tests/filetests/kir/): each file is a program in canonical text
//! form after a header of `//` comments. A header line
//!
//! ```text
//! // run: N=2 M=3 ; in0 = f32[1, 2, 3] ; in1 = i8[0] ; out0 = f32[...]
//! ```
//!
//! binds symbols, gives inputs and states the expected outputs (written by hand from
//! the math, never produced by dlc): the program runs in the kir interpreter and every
//! output must match (floats within atol 1e-6 + rtol 1e-5, the rest exactly). The file
//! must also be canonical: printing what was parsed gives back the text after the header.
use dlc_kir::{interp, parse, print};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug)]
enum Vals {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Int(u32, Vec<i64>),
}

fn values(spec: &str) -> Vals {
    let (ty, rest) = spec.trim().split_once('[').expect("TYPE[values]");
    let items: Vec<&str> = rest.trim_end_matches(']').split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    match ty {
        "f32" => Vals::F32(items.iter().map(|s| s.parse().expect("f32")).collect()),
        "f64" => Vals::F64(items.iter().map(|s| s.parse().expect("f64")).collect()),
        t => {
            let bits = t.trim_start_matches('i').parse().expect("iN");
            Vals::Int(bits, items.iter().map(|s| s.parse().expect("integer")).collect())
        }
    }
}

fn bytes(v: &Vals) -> Vec<u8> {
    match v {
        Vals::F32(x) => x.iter().flat_map(|f| f.to_le_bytes()).collect(),
        Vals::F64(x) => x.iter().flat_map(|f| f.to_le_bytes()).collect(),
        Vals::Int(bits, x) => x.iter().flat_map(|i| i.to_le_bytes()[..*bits as usize / 8].to_vec()).collect(),
    }
}

fn close(got: &[u8], want: &Vals) -> Result<(), String> {
    let tol = |g: f64, w: f64| (g - w).abs() <= 1e-6 + 1e-5 * w.abs() || g == w;
    match want {
        Vals::F32(w) => {
            let g: Vec<f32> = got.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            if g.len() != w.len() || !g.iter().zip(w).all(|(a, b)| tol(*a as f64, *b as f64)) {
                return Err(format!("got {g:?}, want {w:?}"));
            }
        }
        Vals::F64(w) => {
            let g: Vec<f64> = got.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
            if g.len() != w.len() || !g.iter().zip(w).all(|(a, b)| tol(*a, *b)) {
                return Err(format!("got {g:?}, want {w:?}"));
            }
        }
        Vals::Int(..) => {
            if got != bytes(want) {
                return Err(format!("got bytes {got:?}, want {want:?}"));
            }
        }
    }
    Ok(())
}

#[test]
fn kir_filetests() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/filetests/kir");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "kir"));
    files.sort();
    assert!(files.len() >= 3, "kir filetests missing in {}", dir.display());
    let mut runs = 0;
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let body: String = text.lines().skip_while(|l| l.starts_with("//")).map(|l| format!("{l}\n")).collect();
        let p = parse::program(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(print::program(&p), body, "{name} is not in canonical form");
        for line in text.lines().filter_map(|l| l.strip_prefix("// run:")) {
            let mut parts = line.split(';');
            let syms: BTreeMap<String, i64> = parts
                .next()
                .unwrap()
                .split_whitespace()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("NAME=VALUE");
                    (k.to_string(), v.parse().expect("symbol value"))
                })
                .collect();
            let (mut inputs, mut outputs) = (BTreeMap::new(), BTreeMap::new());
            for part in parts {
                let (k, v) = part.split_once('=').expect("inN = ... or outN = ...");
                let k = k.trim();
                if let Some(i) = k.strip_prefix("in") {
                    inputs.insert(i.parse::<usize>().unwrap(), bytes(&values(v)));
                } else {
                    outputs.insert(k.trim_start_matches("out").parse::<usize>().unwrap(), values(v));
                }
            }
            let ins: Vec<Vec<u8>> = inputs.into_values().collect();
            let got = interp::run_program(&p, &ins, &syms).unwrap_or_else(|e| panic!("{name} {line}: {e}"));
            for (i, want) in &outputs {
                close(&got[*i], want).unwrap_or_else(|e| panic!("{name} {line}: output {i}: {e}"));
            }
            runs += 1;
        }
    }
    assert!(runs >= 7, "only {runs} runs");
}
