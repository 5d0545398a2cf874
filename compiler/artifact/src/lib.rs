//! dlc-artifact: the versioned artifact format shared by the compiler and the runtime.
//!
//! An artifact is a directory:
//!
//! | file | what |
//! |---|---|
//! | `model.so` | shared library exporting the C ABI below |
//! | `model.a`, `model.h` | static library and its C header |
//! | `model.manifest` | [`MANIFEST_MAGIC`] then the prost-encoded [`Manifest`] |
//! | `manifest.json` | the same manifest as JSON, for people and tools |
//! | `report.json` | size, FLOPs and memory report |
//! | `model.ptx`, `launch.json`, `model.weights`, `model.sim.so` | CUDA artifacts instead of the libraries: kernels, [`LaunchTable`], weights, host simulation |
//!
//! C ABI (symbols prefixed with [`Manifest::symbol_prefix`], e.g. `dlc_mlp_`), defined
//! once in [`abi`]: `uint32_t <p>abi_version(void)`, `uint64_t <p>workspace_size(void)`,
//! `int32_t <p>run(const void *const *inputs, void *const *outputs, void *workspace)` and
//! `<p>run_threaded`, which also takes a thread-pool callback.
//! `run` reads inputs and writes outputs in manifest order, uses only the workspace it is
//! given (at least `workspace_size()` bytes, 64-byte aligned) and is safe to call from
//! several threads at once with distinct workspaces.
//!
//! Models with run-time dims also export `workspace_size_dims` and `run_dims`, which take
//! the values of [`Manifest::symbols`]; [`Manifest::bind_dims`] computes them from input
//! shapes and checks the shapes against the manifest.
//!
//! Invariant: this crate depends on no compiler crate but dlc-sym (the leaf crate of
//! integer expressions, which the manifest's symbolic dims are written in); the runtime
//! depends only on it.
#![warn(missing_docs)]

pub mod abi;
mod dims;

pub use dims::DimError;

use prost::Message;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of the C ABI the compiler emits and the runtime accepts.
pub const ABI_VERSION: u32 = 4;
/// Version of the manifest layout.
pub const FORMAT_VERSION: u32 = 1;
/// First bytes of `model.manifest`.
pub const MANIFEST_MAGIC: &[u8; 8] = b"DLCMANI\x01";
/// File names inside an artifact directory.
pub mod files {
    /// Binary manifest.
    pub const MANIFEST: &str = "model.manifest";
    /// JSON mirror of the manifest.
    pub const MANIFEST_JSON: &str = "manifest.json";
    /// Shared library.
    pub const SHARED_LIB: &str = "model.so";
    /// Static library.
    pub const STATIC_LIB: &str = "model.a";
    /// C header.
    pub const HEADER: &str = "model.h";
    /// Compile report.
    pub const REPORT: &str = "report.json";
    /// CUDA artifacts: the kernels as PTX text.
    pub const PTX: &str = "model.ptx";
    /// CUDA artifacts: the launch table ([`crate::LaunchTable`] as JSON).
    pub const LAUNCH: &str = "launch.json";
    /// CUDA artifacts: every weight, at the offsets the launch table gives.
    pub const WEIGHTS: &str = "model.weights";
    /// CUDA artifacts: the same kernels compiled for the host, one call per thread block
    /// (what `dlc run --simulate` runs).
    pub const SIM_LIB: &str = "model.sim.so";
}

/// Whether `triple` names the CUDA target (artifacts with `model.ptx` and a launch table
/// instead of libraries).
pub fn is_cuda_triple(triple: &str) -> bool {
    triple.starts_with("nvptx")
}

/// Version of the launch table layout.
pub const LAUNCH_VERSION: u32 = 1;

/// How a CUDA artifact runs: device buffers to allocate and kernels to launch in order.
/// Kernels take one pointer parameter per entry of [`Launch::args`] and assume the grid
/// and block given here (shapes are compile-time constants in the code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchTable {
    /// [`LAUNCH_VERSION`].
    pub version: u32,
    /// Bytes of the arena every intermediate value lives in.
    pub arena_bytes: u64,
    /// Bytes of `model.weights`.
    pub weight_bytes: u64,
    /// Kernel launches, in order, on one stream.
    pub launches: Vec<Launch>,
    /// Copies after the last launch, for outputs not computed in place (an output that is
    /// an input, a weight, or a value listed twice).
    pub copies: Vec<OutputCopy>,
}

/// One kernel launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// Kernel symbol (the PTX `.entry`, and the simulation library's export).
    pub kernel: String,
    /// The graph node it computes.
    pub node: String,
    /// The node's op.
    pub op: String,
    /// Grid size in blocks.
    pub grid: [u32; 3],
    /// Block size in threads.
    pub block: [u32; 3],
    /// Bytes of statically declared shared memory the kernel uses (no dynamic shared
    /// memory is requested at launch).
    pub shared_bytes: u32,
    /// The kernel's pointer parameters.
    pub args: Vec<BufferRef>,
    /// The op has no parallel GPU kernel yet: one thread runs its CPU loop nest.
    #[serde(default)]
    pub serial: bool,
}

/// Where a kernel parameter points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferRef {
    /// Model input `i` (manifest order).
    Input(usize),
    /// Model output `i`.
    Output(usize),
    /// Byte offset into the weights.
    Weight(u64),
    /// Byte offset into the arena.
    Arena(u64),
}

/// A copy into output `output` of `bytes` bytes from `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputCopy {
    /// Output index.
    pub output: usize,
    /// Source.
    pub from: BufferRef,
    /// Bytes.
    pub bytes: u64,
}

impl LaunchTable {
    /// Reads `launch.json` from an artifact directory.
    pub fn read_dir(dir: &Path) -> Result<LaunchTable, ArtifactError> {
        let path = dir.join(files::LAUNCH).display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| ArtifactError::Io { path: path.clone(), source: e })?;
        let t: LaunchTable = serde_json::from_str(&text)
            .map_err(|e| ArtifactError::LaunchTable { path: path.clone(), reason: e.to_string() })?;
        if t.version != LAUNCH_VERSION {
            let reason = format!("launch table version {}, this dlc reads {LAUNCH_VERSION}; recompile", t.version);
            return Err(ArtifactError::LaunchTable { path, reason });
        }
        Ok(t)
    }
}

/// One dimension of a tensor shape.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct DimSpec {
    /// Extent, when fixed.
    #[prost(uint64, optional, tag = "1")]
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fixed: Option<u64>,
    /// When symbolic: an expression over the manifest's symbols (`N`, `2*N + 1`, as
    /// dlc-sym writes and parses it).
    #[prost(string, optional, tag = "2")]
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub symbol: Option<String>,
}

/// A model input or output.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Name in the source model.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Element type name (`f32`, `i64`, ...).
    #[prost(string, tag = "2")]
    pub dtype: String,
    /// Shape.
    #[prost(message, repeated, tag = "3")]
    pub shape: Vec<DimSpec>,
    /// For an output whose shape mentions data symbols: the bytes to allocate for it,
    /// an expression of the input dims' symbols that bounds its size (empty otherwise).
    #[prost(string, tag = "4")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub max_bytes: String,
    /// How a caller's tensor maps to this buffer: empty for a plain tensor;
    /// [`STRING_TABLE`] for the element table of a string tensor named `name`
    /// (`i64[..., 2]`: each element's start and end byte), whose bytes are the next
    /// entry, [`STRING_BYTES`] (`u8[n]`, UTF-8; docs/strings.md).
    #[prost(string, tag = "5")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub encoding: String,
}

/// [`TensorSpec::encoding`] of a string tensor's element table.
pub const STRING_TABLE: &str = "string-table";
/// [`TensorSpec::encoding`] of a string tensor's bytes.
pub const STRING_BYTES: &str = "string-bytes";

impl TensorSpec {
    /// Fixed extents, when every dim is fixed.
    pub fn fixed_shape(&self) -> Option<Vec<u64>> {
        self.shape.iter().map(|d| d.fixed).collect()
    }

    /// Shape as text, e.g. `[1,3,224,224]`.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|d| d.fixed.map(|n| n.to_string()).or(d.symbol.clone()).unwrap_or_else(|| "?".into()))
            .collect();
        format!("[{}]", dims.join(","))
    }
}

/// Everything a loader needs to know about an artifact.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] at the time of writing.
    #[prost(uint32, tag = "1")]
    pub format_version: u32,
    /// [`ABI_VERSION`] of the code in the libraries.
    #[prost(uint32, tag = "2")]
    pub abi_version: u32,
    /// `dlc <version>`.
    #[prost(string, tag = "3")]
    pub compiler_version: String,
    /// Model name.
    #[prost(string, tag = "4")]
    pub model_name: String,
    /// Prefix of the exported C symbols.
    #[prost(string, tag = "5")]
    pub symbol_prefix: String,
    /// LLVM target triple.
    #[prost(string, tag = "6")]
    pub target_triple: String,
    /// Target CPU name.
    #[prost(string, tag = "7")]
    pub cpu: String,
    /// Target features the code may use (LLVM spelling, `+avx2,+fma,...`).
    #[prost(string, tag = "8")]
    pub cpu_features: String,
    /// Inputs in call order.
    #[prost(message, repeated, tag = "9")]
    pub inputs: Vec<TensorSpec>,
    /// Outputs in call order.
    #[prost(message, repeated, tag = "10")]
    pub outputs: Vec<TensorSpec>,
    /// SHA-256 over every embedded weight (dtype, shape and bytes, in graph order).
    #[prost(string, tag = "11")]
    pub weights_sha256: String,
    /// Bytes of embedded weights.
    #[prost(uint64, tag = "12")]
    pub weight_bytes: u64,
    /// Bytes of workspace `run` needs.
    #[prost(uint64, tag = "13")]
    pub arena_bytes: u64,
    /// Files of the artifact (besides the manifests).
    #[prost(string, repeated, tag = "14")]
    pub files: Vec<String>,
    /// The run-time dims the shapes mention, in the order of the C ABI's `dims` array
    /// (empty: every shape is fixed).
    #[prost(message, repeated, tag = "15")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<SymbolSpec>,
    /// With symbols: the workspace's bytes as an expression of them (`arena_bytes` is
    /// then the part that does not depend on them).
    #[prost(string, tag = "16")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arena_expr: String,
    /// The nodes whose shapes are computed from tensor values while the model runs
    /// (bind sites, in the order of the status `run_dims` returns when one fails).
    #[prost(string, repeated, tag = "17")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<String>,
    /// What a bind site's failure code means (code `i` is `bind_reasons[i - 1]`).
    #[prost(string, repeated, tag = "18")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bind_reasons: Vec<String>,
    /// Equalities of expressions of the input dims' symbols that a run needs (checked
    /// with the inputs' shapes).
    #[prost(message, repeated, tag = "19")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<ConstraintSpec>,
    /// SHA-256 of `model.so` as written (empty when there is none): dlc-runtime checks it
    /// before loading the library, so a truncated or modified library is an error rather
    /// than a crash inside `dlopen` (`DLC_TRUST_LIBRARY=1` skips the check).
    #[prost(string, tag = "20")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub library_sha256: String,
    /// The model inputs and outputs that are sequences of tensors (docs/sequences.md):
    /// each names the entries of `inputs` or `outputs` that are its elements, in order.
    #[prost(message, repeated, tag = "21")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<SequenceSpec>,
    /// The model's inputs of optional type compiled as absent (`dlc compile --absent`):
    /// the artifact does not take them (they are not among `inputs`).
    #[prost(string, repeated, tag = "22")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent_inputs: Vec<String>,
    /// The model's outputs of optional type whose presence only the run knows (an If on
    /// a run-time condition with an empty optional in one branch): output `NAME.present`
    /// (a bool scalar) says whether `NAME`'s outputs hold an element (docs/sequences.md).
    #[prost(string, repeated, tag = "23")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional_outputs: Vec<String>,
}

/// A model input or output that is a sequence of tensors, of a length fixed when
/// compiling; its elements are inputs or outputs of their own.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct SequenceSpec {
    /// The sequence's name in the source model.
    #[prost(string, tag = "1")]
    pub name: String,
    /// An output (else an input).
    #[prost(bool, tag = "2")]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output: bool,
    /// The names of its elements (`name[0]`, `name[1]`, ...), in order; empty for an
    /// empty sequence.
    #[prost(string, repeated, tag = "3")]
    pub elements: Vec<String>,
    /// A sequence whose length only the run knows (`elements` empty): the output holding
    /// the elements, `T[n, b...]`, element `i` the corner of row `i` that `shapes` gives.
    #[prost(string, tag = "4")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data: String,
    /// With `data`: the output holding each element's dims, `i64[n, rank]`.
    #[prost(string, tag = "5")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shapes: String,
}

impl Manifest {
    /// The text the code's `signature()` entry returns for an artifact this manifest
    /// describes: what the generated code assumes about its buffers (ABI version, model
    /// and symbol prefix, every input and output with dtype and dims, the run-time dims,
    /// the weights' hash), one fact per line. The code generator embeds it, and
    /// dlc-runtime compares the two before a first call.
    pub fn signature(&self) -> String {
        let mut s = format!(
            "dlc-signature 1\nabi {}\nmodel {}\nprefix {}\nweights {}\n",
            self.abi_version, self.model_name, self.symbol_prefix, self.weights_sha256
        );
        let dims = |t: &TensorSpec| {
            t.shape
                .iter()
                .map(|d| match (&d.fixed, &d.symbol) {
                    (Some(n), _) => n.to_string(),
                    (None, Some(e)) => e.clone(),
                    (None, None) => "?".into(),
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        for (kind, list) in [("input", &self.inputs), ("output", &self.outputs)] {
            for t in list {
                s.push_str(&format!("{kind} {:?} {} [{}] {}", t.name, t.dtype, dims(t), t.max_bytes));
                if !t.encoding.is_empty() {
                    s.push_str(&format!(" {}", t.encoding));
                }
                s.push('\n');
            }
        }
        for sym in &self.symbols {
            let computed = if sym.computed { " computed" } else { "" };
            s.push_str(&format!("symbol {} {} {}{computed}\n", sym.name, sym.min, sym.data));
        }
        s
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// An equality of run-time dim expressions a model needs (`lhs == rhs`).
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct ConstraintSpec {
    /// One side (dlc-sym's text).
    #[prost(string, tag = "1")]
    pub lhs: String,
    /// The other side.
    #[prost(string, tag = "2")]
    pub rhs: String,
    /// The node that needs it.
    #[prost(string, tag = "3")]
    pub node: String,
}

/// A run-time dim of an artifact.
#[derive(Clone, PartialEq, Message, Serialize, Deserialize)]
pub struct SymbolSpec {
    /// Its name, as the shapes write it.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its smallest valid value.
    #[prost(uint64, tag = "2")]
    pub min: u64,
    /// Whether the model computes it from tensor values while it runs (a data symbol:
    /// the caller passes any value and reads the computed one back) rather than the
    /// caller binding it from the inputs' shapes.
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data: bool,
    /// A data symbol with no bound that the caller must know before the run (a
    /// *computed dim*, such as Resize's output extent from sizes given as an input):
    /// the `shape_values` entry point computes it from the inputs' values, and the
    /// caller sizes the outputs and workspace by it.
    #[prost(bool, tag = "4")]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub computed: bool,
}

/// Errors reading or writing manifests.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// File system error.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a dlc manifest or is corrupt.
    #[error("{path}: not a dlc manifest ({reason})")]
    Corrupt {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A CUDA artifact's launch table is unreadable or from another version.
    #[error("{path}: bad launch table ({reason})")]
    LaunchTable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The manifest was written by an incompatible dlc.
    #[error("{path}: manifest format {found}, this build reads format {FORMAT_VERSION}; recompile the model")]
    Version {
        /// The file.
        path: String,
        /// Version found.
        found: u32,
    },
}

impl Manifest {
    /// Whether the artifact was compiled for CUDA.
    pub fn is_cuda(&self) -> bool {
        is_cuda_triple(&self.target_triple)
    }
    /// Encodes as the bytes of `model.manifest`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MANIFEST_MAGIC.to_vec();
        out.extend(self.encode_to_vec());
        out
    }

    /// Decodes the bytes of `model.manifest`; `path` is used in errors.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Manifest, ArtifactError> {
        let corrupt = |reason: String| ArtifactError::Corrupt { path: path.to_string(), reason };
        let body = bytes.strip_prefix(MANIFEST_MAGIC.as_slice()).ok_or_else(|| corrupt("bad magic bytes".into()))?;
        let m = Manifest::decode(body).map_err(|e| corrupt(e.to_string()))?;
        if m.format_version != FORMAT_VERSION {
            return Err(ArtifactError::Version { path: path.to_string(), found: m.format_version });
        }
        Ok(m)
    }

    /// Reads `DIR/model.manifest`.
    pub fn read_dir(dir: &Path) -> Result<Manifest, ArtifactError> {
        let path = dir.join(files::MANIFEST);
        let p = path.display().to_string();
        let bytes = std::fs::read(&path).map_err(|source| ArtifactError::Io { path: p.clone(), source })?;
        Manifest::from_bytes(&bytes, &p)
    }

    /// Writes `model.manifest` and `manifest.json` into `dir`.
    pub fn write_dir(&self, dir: &Path) -> Result<(), ArtifactError> {
        let io = |path: &Path| {
            let p = path.display().to_string();
            move |source| ArtifactError::Io { path: p, source }
        };
        let bin = dir.join(files::MANIFEST);
        std::fs::write(&bin, self.to_bytes()).map_err(io(&bin))?;
        let json = dir.join(files::MANIFEST_JSON);
        let text = serde_json::to_string_pretty(self).expect("manifest serialises") + "\n";
        std::fs::write(&json, text).map_err(io(&json))
    }
}

/// Bytes per element of a dtype name, as written in manifests.
pub fn dtype_size(name: &str) -> Option<usize> {
    Some(match name {
        "i8" | "u8" | "bool" => 1,
        // Storage-only types: one element per byte, not packed (see docs/abi.md).
        "f8e4m3fn" | "f8e4m3fnuz" | "f8e5m2" | "f8e5m2fnuz" | "f4e2m1" | "f8e8m0" | "i4" | "u4" | "i2" | "u2" => 1,
        "f16" | "bf16" | "i16" | "u16" => 2,
        "f32" | "i32" | "u32" => 4,
        "f64" | "i64" | "u64" => 8,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_rejects_garbage() {
        let m = Manifest {
            format_version: FORMAT_VERSION,
            abi_version: ABI_VERSION,
            model_name: "m".into(),
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: "f32".into(),
                shape: vec![
                    DimSpec { fixed: Some(1), symbol: None },
                    DimSpec { fixed: None, symbol: Some("N".into()) },
                ],
                max_bytes: "4*N".into(),
                encoding: String::new(),
            }],
            symbols: vec![
                SymbolSpec { name: "N".into(), min: 1, data: false, computed: false },
                SymbolSpec { name: "r".into(), min: 0, data: true, computed: false },
            ],
            binds: vec!["reshape".into()],
            ..Default::default()
        };
        let back = Manifest::from_bytes(&m.to_bytes(), "t").unwrap();
        assert_eq!(back, m);
        assert_eq!(back.inputs[0].shape_string(), "[1,N]");
        let err = Manifest::from_bytes(b"not a manifest", "t").unwrap_err();
        assert_eq!(err.to_string(), "t: not a dlc manifest (bad magic bytes)");
        let mut old = m.clone();
        old.format_version = 99;
        assert!(matches!(Manifest::from_bytes(&old.to_bytes(), "t"), Err(ArtifactError::Version { found: 99, .. })));
    }
}
