//! Target selection: triple, CPU and features, and the LLVM target machine.
use crate::CodegenError;
use inkwell::targets::{CodeModel, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};
use inkwell::OptimizationLevel;

/// The machine code is generated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// LLVM target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub triple: String,
    /// CPU name (`znver4`, `x86-64-v3`, `generic`).
    pub cpu: String,
    /// Feature string (`+avx2,+fma`); empty means the CPU's defaults.
    pub features: String,
}

/// CPUs with AVX512-VNNI (and AVX512-VL).
const AVX512_VNNI_CPUS: &[&str] = &[
    "cascadelake",
    "cooperlake",
    "icelake-client",
    "icelake-server",
    "tigerlake",
    "rocketlake",
    "sapphirerapids",
    "emeraldrapids",
    "graniterapids",
    "znver4",
    "znver5",
];

/// CPUs with AVX-VNNI (256-bit `vpdpbusd`) and no AVX-512.
const AVX_VNNI_CPUS: &[&str] =
    &["alderlake", "raptorlake", "meteorlake", "arrowlake", "lunarlake", "gracemont", "sierraforest"];

/// CPUs with AVX-512 (vectors of 16 f32).
pub(crate) const AVX512_CPUS: &[&str] = &[
    "skylake-avx512",
    "cascadelake",
    "cooperlake",
    "cannonlake",
    "icelake-client",
    "icelake-server",
    "tigerlake",
    "sapphirerapids",
    "emeraldrapids",
    "graniterapids",
    "znver4",
    "znver5",
    "x86-64-v4",
];

/// CPUs with AVX2 but not AVX-512.
const AVX2_CPUS: &[&str] = &[
    "haswell",
    "broadwell",
    "skylake",
    "rocketlake",
    "alderlake",
    "raptorlake",
    "meteorlake",
    "arrowlake",
    "lunarlake",
    "gracemont",
    "sierraforest",
    "znver1",
    "znver2",
    "znver3",
    "bdver4",
    "x86-64-v3",
];

/// The host's triple.
pub fn host_triple() -> String {
    TargetMachine::get_default_triple().as_str().to_string_lossy().into_owned()
}

fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cfg = InitializationConfig::default();
        Target::initialize_x86(&cfg);
        Target::initialize_aarch64(&cfg);
        Target::initialize_nvptx(&cfg);
    });
}

impl TargetSpec {
    /// The host: its triple, CPU and every feature it has.
    pub fn host() -> TargetSpec {
        init();
        TargetSpec {
            triple: host_triple(),
            cpu: TargetMachine::get_host_cpu_name().to_string(),
            features: TargetMachine::get_host_cpu_features().to_string(),
        }
    }

    /// A target from a triple and an optional CPU; the host CPU's features are used only
    /// when the triple is the host's and no CPU is named.
    pub fn new(triple: Option<&str>, cpu: Option<&str>) -> TargetSpec {
        let host = TargetSpec::host();
        let triple = triple.map(str::to_string).unwrap_or_else(|| host.triple.clone());
        let same = TargetTriple::create(&triple).as_str() == TargetTriple::create(&host.triple).as_str();
        match (same, cpu) {
            (true, None) => host,
            (true, Some("native")) => host,
            (_, Some(c)) => TargetSpec { triple, cpu: c.to_string(), features: String::new() },
            (false, None) => TargetSpec { triple, cpu: "generic".into(), features: String::new() },
        }
    }

    /// Vector width in f32 lanes for CPU kernels: 4 on aarch64, 16 with AVX-512, else 8.
    pub fn vector_width(&self) -> u32 {
        if self.triple.starts_with("aarch64") || self.triple.starts_with("arm64") {
            return 4;
        }
        if self.features.split(',').any(|f| f == "+avx512f")
            || (self.features.is_empty() && AVX512_CPUS.contains(&self.cpu.as_str()))
        {
            16
        } else {
            8
        }
    }

    /// What dlc-lower needs to know of this target (a CUDA thread's kernels are scalar).
    pub fn lowering(&self) -> dlc_lower::Target {
        let cuda = self.triple.starts_with("nvptx");
        let mut t = dlc_lower::Target::with_lanes(if cuda { 1 } else { self.vector_width() });
        t.pool = !cuda;
        if !cuda {
            t.int8 = if self.has_avx512_vnni() && self.vector_width() == 16 {
                dlc_lower::Int8Dot::Vnni512
            } else if self.has_vnni() {
                dlc_lower::Int8Dot::Vnni
            } else if self.has_avx2() {
                dlc_lower::Int8Dot::Avx2Pairs
            } else {
                dlc_lower::Int8Dot::Exact
            };
        }
        t
    }

    /// Whether the target has AVX2 (x86-64 only): from the feature string when there is
    /// one (the host), else from the CPU name.
    pub fn has_avx2(&self) -> bool {
        self.x86_has(&[AVX2_CPUS, AVX512_CPUS], |has| has("+avx2"))
    }

    /// Whether the target has VNNI on 256-bit vectors (`vpdpbusd`: AVX-VNNI, or
    /// AVX512-VNNI with AVX512-VL), likewise.
    pub fn has_vnni(&self) -> bool {
        self.x86_has(&[AVX512_VNNI_CPUS, AVX_VNNI_CPUS], |has| {
            has("+avxvnni") || (has("+avx512vnni") && has("+avx512vl"))
        })
    }

    /// Whether the target has AVX512-VNNI (`vpdpbusd` on 512-bit vectors), likewise.
    pub fn has_avx512_vnni(&self) -> bool {
        self.x86_has(&[AVX512_VNNI_CPUS], |has| has("+avx512vnni") && has("+avx512f"))
    }

    /// An x86-64 target whose feature string passes `features` (given a test for one
    /// `+feature`), or, without a feature string, whose CPU is in one of `cpus`.
    fn x86_has(&self, cpus: &[&[&str]], features: impl Fn(&dyn Fn(&str) -> bool) -> bool) -> bool {
        let has = |f: &str| self.features.split(',').any(|x| x == f);
        self.triple.starts_with("x86_64")
            && if self.features.is_empty() {
                cpus.iter().any(|list| list.contains(&self.cpu.as_str()))
            } else {
                features(&has)
            }
    }

    /// Whether this is the host's triple.
    pub fn is_host(&self) -> bool {
        TargetTriple::create(&self.triple).as_str() == TargetTriple::create(&host_triple()).as_str()
    }

    /// The LLVM target machine (PIC, O3).
    pub fn machine(&self) -> Result<TargetMachine, CodegenError> {
        init();
        let triple = TargetTriple::create(&self.triple);
        let err = |reason: String| CodegenError::Target { triple: self.triple.clone(), reason };
        let target = Target::from_triple(&triple).map_err(|e| err(e.to_string()))?;
        target
            .create_target_machine(
                &triple,
                &self.cpu,
                &self.features,
                OptimizationLevel::Aggressive,
                RelocMode::PIC,
                CodeModel::Default,
            )
            .ok_or_else(|| err(format!("LLVM cannot create a target machine for CPU '{}'", self.cpu)))
    }
}
