//! The ONNX importer on corrupted input: random byte flips and truncations of every
//! filetest model must give an error or a valid graph, never a panic; a graph that
//! imports must also plan and compile without panicking (an error is fine).
use std::path::Path;

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn corrupted_models_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("filetests/onnx");
    let tmp = std::env::temp_dir().join(format!("dlc-robustness-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut models: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    models.retain(|p| p.extension().is_some_and(|e| e == "onnx"));
    models.sort();
    // One worker per core, each taking every n-th model with its own generator seeded
    // from the model's index, so a failure reproduces whatever the core count (one
    // thread took 160 s of CI's cargo test with the other core idle).
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(models.len().max(1));
    let counts: Vec<(usize, usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (models, tmp) = (&models, &tmp);
                s.spawn(move || {
                    let mut counts = (0, 0, 0);
                    for (k, model) in models.iter().enumerate().skip(w).step_by(workers) {
                        let c = mutate_and_import(model, k as u64, &tmp.join(format!("mutant-{w}.onnx")));
                        counts = (counts.0 + c.0, counts.1 + c.1, counts.2 + c.2);
                    }
                    counts
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a robustness worker panicked")).collect()
    });
    std::fs::remove_dir_all(&tmp).ok();
    let (errors, imported, compiled) = counts.iter().fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
    // Both outcomes must occur, or the mutations test nothing; and mutants of a new
    // structure must reach the compiler (every model's unmutated structure is one).
    eprintln!(
        "{errors} mutants refused, {imported} imported, {compiled} of those compiled (each structure at most twice)"
    );
    assert!(errors > 0 && imported > 0, "errors {errors}, imported {imported}");
    assert!(compiled > models.len(), "only {compiled} mutants compiled");
}

/// A graph's structure: its canonical text with the digests of constants of more than
/// 16 elements left out (a bit flipped in a weight changes only its digest; a flipped
/// shape or axis constant, a few elements, still counts). Compiling one structure over
/// and over with other weights took 46 of the test's 49 s (Zen 4) for little: each
/// structure compiles twice at most.
fn structure(g: &dlc_ir::Graph) -> String {
    let text = dlc_ir::print_graph(g).expect("an imported graph prints");
    text.lines()
        .map(|line| {
            let Some(at) = line.find(" sha256:") else { return line.to_string() };
            let dims = line.split("value=").nth(1).and_then(|v| v.split('[').nth(1)).and_then(|v| v.split(']').next());
            let elems: u64 = dims.map_or(0, |d| d.split(',').filter_map(|x| x.trim().parse::<u64>().ok()).product());
            if elems > 16 {
                let end = line[at + 1..].find(['}', ' ']).map_or(line.len(), |e| at + 1 + e);
                format!("{}{}", &line[..at], &line[end..])
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// 90 mutants of one model (truncations and bit flips), each imported and, where that
/// succeeds and its [`structure`] has not compiled twice for this model, planned and
/// compiled; returns
/// (errors, imported, compiled).
fn mutate_and_import(model: &Path, index: u64, path: &Path) -> (usize, usize, usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ index.wrapping_mul(0x0100_0000_01b3));
    let bytes = std::fs::read(model).unwrap();
    let (mut errors, mut imported, mut compiled) = (0, 0, 0);
    // How often each structure was compiled: twice at most (the second time with other
    // weights: a flipped exponent bit makes an infinity, a NaN or a denormal weight).
    let mut seen: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    for round in 0..90 {
        let mut b = bytes.clone();
        match round % 3 {
            0 => b.truncate((rng.next() % b.len() as u64) as usize),
            _ => {
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() % b.len() as u64) as usize;
                    b[i] ^= 1 << (rng.next() % 8);
                }
            }
        }
        std::fs::write(path, &b).unwrap();
        let result = std::panic::catch_unwind(|| dlc_onnx::import(path, &Default::default()));
        match result {
            Ok(Ok(g)) => {
                dlc_ir::verify(&g).expect("an imported graph verifies");
                imported += 1;
                let times = seen.entry(structure(&g)).or_default();
                *times += 1;
                if *times > 2 {
                    continue;
                }
                compiled += 1;
                let done = std::panic::catch_unwind(|| {
                    let plan = dlc_passes::plan_memory(&g).ok()?;
                    let target = dlc_codegen_llvm::TargetSpec::host();
                    dlc_codegen_llvm::compile(&g, &plan, &target, "dlc_m_", &Default::default()).ok()
                });
                assert!(done.is_ok(), "codegen panicked on a mutant of {} (round {round})", model.display());
            }
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("import panicked on a mutant of {} (round {round})", model.display()),
        }
    }
    (errors, imported, compiled)
}
