//! dlc-runtime: loads a compiled dlc artifact and runs it.
//!
//! [`Model::load`] reads the manifest, opens `model.so`, checks the ABI version, the
//! target architecture and the CPU features the code was compiled for, and resolves the
//! entry points. [`Model::run`] checks every input's name, dtype and shape against the
//! manifest before any generated code sees it, so a wrong input is an error, never a
//! crash.
//!
//! Invariant: depends only on `dlc-artifact` (no LLVM, MLIR or compiler crate).
#![warn(missing_docs)]

pub mod cuda;
mod gpu;
mod strings;

pub use gpu::{CudaSession, GpuModel};
pub use strings::STRING;

use dlc_artifact::{dtype_size, files, Manifest, TensorSpec, ABI_VERSION};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::path::{Path, PathBuf};

/// Errors of the runtime. Each names the artifact, input or feature involved.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The manifest is missing, corrupt or from another format version.
    #[error(transparent)]
    Manifest(#[from] dlc_artifact::ArtifactError),
    /// The shared library could not be opened or lacks an entry point.
    #[error("{path}: {message}")]
    Library {
        /// The library.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The library speaks another ABI version.
    #[error(
        "{path}: ABI version {found}, this runtime supports {ABI_VERSION}; recompile the model with a matching dlc"
    )]
    Abi {
        /// The library.
        path: PathBuf,
        /// Version the library reports.
        found: u32,
    },
    /// The artifact was compiled for another machine.
    #[error("artifact '{dir}' was compiled for {what}, this machine {has}")]
    Target {
        /// Artifact directory.
        dir: PathBuf,
        /// What the artifact needs.
        what: String,
        /// What this machine has.
        has: String,
    },
    /// Wrong number of inputs.
    #[error("the model takes {expected} input(s) ({names}), got {got}")]
    InputCount {
        /// Inputs the model takes.
        expected: usize,
        /// Their names.
        names: String,
        /// Inputs given.
        got: usize,
    },
    /// An input with a name the model does not have.
    #[error("the model has no input named '{name}'; inputs are {names}")]
    UnknownInput {
        /// Name given.
        name: String,
        /// Names the model has.
        names: String,
    },
    /// An input the artifact was compiled without (an optional input, `dlc compile
    /// --absent`).
    #[error(
        "input '{name}' was compiled absent (dlc compile --absent {name}): this artifact does not take it; \
         compile without --absent to give it"
    )]
    AbsentInput {
        /// Name given.
        name: String,
    },
    /// An input of the wrong dtype.
    #[error("input '{name}': expected dtype {expected}, got {got}")]
    InputDtype {
        /// Input name.
        name: String,
        /// Dtype the model takes.
        expected: String,
        /// Dtype given.
        got: String,
    },
    /// An input of the wrong shape.
    #[error("input '{name}': expected shape {expected}, got {got}")]
    InputShape {
        /// Input name.
        name: String,
        /// Shape the model takes.
        expected: String,
        /// Shape given.
        got: String,
    },
    /// Data length does not match dtype and shape.
    #[error("input '{name}': {got} bytes of data for {expected} expected")]
    InputBytes {
        /// Input name.
        name: String,
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// CUDA failed (no driver, no GPU, or a driver call).
    #[error(transparent)]
    Cuda(#[from] cuda::CudaError),
    /// A CUDA artifact opened as a CPU one, or the reverse.
    #[error("artifact '{dir}' {reason}")]
    Kind {
        /// Artifact directory.
        dir: PathBuf,
        /// What it is and what to do.
        reason: String,
    },
    /// Input shapes that do not fit the model's run-time dims (names the input, the dim
    /// and the rule).
    #[error(transparent)]
    Dims(#[from] dlc_artifact::DimError),
    /// A buffer this machine cannot allocate.
    #[error("cannot allocate {bytes} bytes for {what}")]
    Alloc {
        /// Which buffer.
        what: String,
        /// Its size.
        bytes: u64,
    },
    /// The generated code returned a non-zero status.
    #[error("model run failed with status {0}")]
    RunFailed(i32),
    /// A shape the model computes from tensor values while it runs (a Reshape target,
    /// reduction axes given as an input...) is invalid.
    #[error("invalid input values: {0}")]
    BadShapeValue(String),
    /// [`Model::sequence`] of a name that is no sequence output, or of outputs that do
    /// not hold one.
    #[error("sequence output '{name}': {reason}")]
    Sequence {
        /// The sequence's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// A tensor passed to or returned from [`Model::run`]: little-endian, row-major bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Element type name (`f32`, `i64`, ...).
    pub dtype: String,
    /// Extents.
    pub shape: Vec<u64>,
    /// Raw bytes.
    pub data: Vec<u8>,
}

impl Tensor {
    /// An f32 tensor.
    pub fn from_f32(shape: &[u64], values: &[f32]) -> Tensor {
        Tensor {
            dtype: "f32".into(),
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// The values as f32 when the dtype is f32.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == "f32")
            .then(|| self.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

/// A borrowed tensor: what [`Model::prepare`] and [`Model::run_prepared`] take, so
/// that callers holding their data elsewhere (a numpy array, a memory map) need no copy.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Element type name (`f32`, `i64`, ...).
    pub dtype: &'a str,
    /// Extents.
    pub shape: &'a [u64],
    /// Row-major, little-endian bytes.
    pub data: &'a [u8],
}

impl Tensor {
    /// The tensor, borrowed.
    pub fn view(&self) -> TensorRef<'_> {
        TensorRef { dtype: &self.dtype, shape: &self.shape, data: &self.data }
    }
}

// The entry points' and callbacks' types: the C ABI as dlc-artifact defines it.
use dlc_artifact::abi::{
    self, AbiVersionFn, PforFn, RunDimsFn, RunFn, RunThreadedFn, ShapeValuesFn, SignatureFn, TaskFn,
    WorkspaceSizeDimsFn, WorkspaceSizeFn,
};

/// The thread count kernels may use: `DLC_NUM_THREADS` when set to a positive number,
/// else 1.
pub fn default_threads() -> usize {
    std::env::var("DLC_NUM_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&t| t > 0).unwrap_or(1)
}

/// The threads a run may use: `threads - 1` workers kept alive between kernels (and
/// runs) plus the calling thread. The generated code's large kernels split their outer
/// loop into tasks and hand them to [`Pool::parallel_for`]; every thread takes the next
/// task index from a shared counter until none are left, and the call returns when all
/// are done.
///
/// A loop is published through atomics (the task, its context and count, then a new
/// generation number); workers waiting for it spin on the generation (see
/// [`spin_until`]) and only then sleep on a condition variable, so back-to-back kernels
/// cost no system call. Sleeping is announced (`sleepers`, `caller_waiting`) so that the
/// other side takes the lock and notifies only when someone sleeps; both sides use
/// sequentially consistent operations for that handshake, which rules out a lost
/// wake-up: either the sleeper sees the new state before it waits, or the notifier sees
/// the sleeper and notifies under the lock.
pub struct Pool {
    threads: usize,
    shared: std::sync::Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

struct Shared {
    /// Held only to sleep and to notify sleepers.
    lock: std::sync::Mutex<()>,
    wake: std::sync::Condvar,
    done: std::sync::Condvar,
    /// The current loop: task function, context, task count, and its generation.
    task: AtomicUsize,
    ctx: AtomicUsize,
    n: AtomicUsize,
    generation: AtomicU64,
    /// Thread `j` starts on tasks `j n / T .. (j + 1) n / T`; `cursor[j]` is the next of
    /// them not yet taken (by its owner or, once a thread has run out, a thief).
    cursor: Box<[Cursor]>,
    /// The workers still running the current loop.
    busy: AtomicUsize,
    sleepers: AtomicUsize,
    caller_waiting: AtomicBool,
    shutdown: AtomicBool,
}

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// A task cursor on its own cache line (the threads' cursors are written concurrently).
#[derive(Default)]
#[repr(align(64))]
struct Cursor(AtomicUsize);

/// How long a thread waits on an atomic before sleeping on a condition variable: a model's
/// kernels follow each other within microseconds, and a futex wake-up costs about as much
/// as a small kernel. For the first [`SPIN_HOT`] it spins; after that it yields its core
/// between checks (when more threads want the cores than there are, a spinning thread
/// would hold up the ones with work, its own pool's included); after [`SPIN`] it sleeps.
const SPIN: std::time::Duration = std::time::Duration::from_micros(200);
const SPIN_HOT: std::time::Duration = std::time::Duration::from_micros(20);

/// Waits until `ready()` or [`SPIN`] has passed; whether it became ready.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let waited = start.elapsed();
        if waited > SPIN {
            return ready();
        }
        if waited > SPIN_HOT {
            std::thread::yield_now();
        }
    }
}

impl Shared {
    /// Runs tasks of the current loop as thread `me`: its own contiguous share first
    /// (consecutive kernels split their data the same way, so a thread mostly reads what
    /// it wrote, from its own cache), then whatever is left of the others' shares.
    fn drain(&self, me: usize) {
        let (task, ctx, n) =
            (self.task.load(Ordering::Acquire), self.ctx.load(Ordering::Acquire), self.n.load(Ordering::Acquire));
        // SAFETY: `task` came from the generated code as a `TaskFn`.
        let task: TaskFn = unsafe { std::mem::transmute::<usize, TaskFn>(task) };
        let t = self.cursor.len();
        for k in 0..t {
            let j = (me + k) % t;
            let end = (j + 1) * n / t;
            loop {
                let i = self.cursor[j].0.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                // SAFETY: the generated code made `task` and `ctx` for indices below `n`;
                // tasks write disjoint data, and `ctx` outlives the parallel_for call.
                unsafe { task(ctx as *mut u8, i as i64) };
            }
        }
    }

    /// Points every thread's cursor at the start of its share of `n` tasks.
    fn reset(&self, n: usize) {
        let t = self.cursor.len();
        for (j, c) in self.cursor.iter().enumerate() {
            c.0.store(j * n / t, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker's life: wait for a new generation (or shutdown), run its tasks, report.
    fn work(&self, me: usize) {
        let mut seen = 0u64;
        loop {
            let fresh = || self.generation.load(Ordering::SeqCst) != seen || self.shutdown.load(Ordering::SeqCst);
            if !spin_until(fresh) {
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                let mut g = self.lock();
                while !fresh() {
                    g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                drop(g);
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            seen = self.generation.load(Ordering::SeqCst);
            self.drain(me);
            if self.busy.fetch_sub(1, Ordering::SeqCst) == 1 && self.caller_waiting.load(Ordering::SeqCst) {
                let _g = self.lock();
                self.done.notify_all();
            }
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("threads", &self.threads).finish()
    }
}

/// Pools made by this process so far (a diagnostic: `Model::run` must reuse its pools,
/// and a test counts them).
pub fn pools_created() -> usize {
    POOLS_CREATED.load(Ordering::Relaxed)
}

static POOLS_CREATED: AtomicUsize = AtomicUsize::new(0);

impl Pool {
    /// A pool of `threads` threads (the caller's included).
    pub fn new(threads: usize) -> Pool {
        POOLS_CREATED.fetch_add(1, Ordering::Relaxed);
        let threads = threads.max(1);
        let shared = std::sync::Arc::new(Shared {
            lock: Default::default(),
            wake: Default::default(),
            done: Default::default(),
            task: Default::default(),
            ctx: Default::default(),
            n: Default::default(),
            generation: Default::default(),
            cursor: (0..threads).map(|_| Cursor::default()).collect(),
            busy: Default::default(),
            sleepers: Default::default(),
            caller_waiting: Default::default(),
            shutdown: Default::default(),
        });
        let workers = (1..threads)
            .map(|me| {
                let sh = shared.clone();
                std::thread::spawn(move || sh.work(me))
            })
            .collect();
        Pool { threads, shared, workers }
    }

    /// The thread count.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The pool as the `pfor` callback's opaque state.
    fn state(&self) -> *const u8 {
        self as *const Pool as *const u8
    }

    unsafe extern "C" fn parallel_for(pool: *const u8, task: TaskFn, ctx: *mut u8, n: i64) {
        // SAFETY: `pool` is the `Pool` passed to run_threaded by this crate (as the
        // callback's opaque state), alive for the call.
        let pool = unsafe { &*(pool as *const Pool) };
        let n = n.max(0) as usize;
        let sh = &pool.shared;
        sh.task.store(task as usize, Ordering::Release);
        sh.ctx.store(ctx as usize, Ordering::Release);
        sh.n.store(n, Ordering::Release);
        if pool.workers.is_empty() || n < 2 {
            // The caller alone.
            for i in 0..n {
                // SAFETY: as in `Shared::drain`.
                unsafe { task(ctx, i as i64) };
            }
            return;
        }
        sh.reset(n);
        // Every worker runs every generation once (finding no task is fine), and this
        // call waits for all of them, so the next call cannot overtake a slow worker.
        sh.busy.store(pool.workers.len(), Ordering::SeqCst);
        sh.generation.fetch_add(1, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = sh.lock();
            sh.wake.notify_all();
        }
        sh.drain(0);
        if spin_until(|| sh.busy.load(Ordering::SeqCst) == 0) {
            return;
        }
        sh.caller_waiting.store(true, Ordering::SeqCst);
        let mut g = sh.lock();
        while sh.busy.load(Ordering::SeqCst) > 0 {
            g = sh.done.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        drop(g);
        sh.caller_waiting.store(false, Ordering::SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock();
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A loaded artifact, ready to run. `run` may be called from several threads at once.
pub struct Model {
    dir: PathBuf,
    manifest: Manifest,
    run: RunFn,
    run_threaded: Option<RunThreadedFn>,
    run_dims: RunDimsFn,
    workspace_dims: WorkspaceSizeDimsFn,
    /// With computed dims: the prologue that computes them from the inputs' values.
    shape_values: Option<ShapeValuesFn>,
    workspace: usize,
    /// Pools and workspaces of [`Model::run`] between calls.
    free: std::sync::Mutex<Vec<Scratch>>,
    // Keeps the code mapped while `run` points into it; dropped last.
    _lib: libloading::Library,
}

/// A 64-byte-aligned, zeroed heap buffer.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(size: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(size.max(64), 64).expect("valid layout");
        // SAFETY: the layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }

    /// A zeroed buffer of `size` bytes, or an error naming `what` when the allocator
    /// refuses (sizes at run-time dims come from the caller's shapes).
    fn try_new(size: usize, what: &dyn Fn() -> String) -> Result<AlignedBuf, RuntimeError> {
        let err = || RuntimeError::Alloc { what: what(), bytes: size as u64 };
        let layout = Layout::from_size_align(size.max(64), 64).map_err(|_| err())?;
        // SAFETY: the layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(err());
        }
        Ok(AlignedBuf { ptr, layout })
    }

    /// A buffer holding a copy of `data`.
    fn copy_of(data: &[u8]) -> AlignedBuf {
        let b = AlignedBuf::new(data.len());
        // SAFETY: the buffer holds at least `data.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), b.ptr, data.len()) };
        b
    }

    fn as_slice(&self, len: usize) -> &[u8] {
        // SAFETY: `len <= layout.size()` by construction at every call site.
        unsafe { std::slice::from_raw_parts(self.ptr, len.min(self.layout.size())) }
    }
}

// SAFETY: the buffer is owned memory like a `Vec<u8>`; shared references only read it
// (`as_slice`), writes go through `&mut` or pointers handed to generated code by the
// owner of the buffer for one call.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above.
unsafe impl Sync for AlignedBuf {}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ")
}

fn check_target(dir: &Path, m: &Manifest) -> Result<(), RuntimeError> {
    let arch = m.target_triple.split('-').next().unwrap_or("");
    let host = std::env::consts::ARCH;
    if arch != host {
        return Err(RuntimeError::Target {
            dir: dir.to_path_buf(),
            what: format!("target {}", m.target_triple),
            has: format!("is {host}"),
        });
    }
    let missing: Vec<&str> =
        m.cpu_features.split(',').filter_map(|f| f.strip_prefix('+')).filter(|f| !host_has_feature(f)).collect();
    if !missing.is_empty() {
        return Err(RuntimeError::Target {
            dir: dir.to_path_buf(),
            what: format!("CPU {} with features {}", m.cpu, missing.join(",")),
            has: "lacks them; recompile with --cpu for an older CPU (e.g. x86-64-v2)".into(),
        });
    }
    Ok(())
}

/// Checks `model.so` against the hash the manifest recorded (unless `DLC_TRUST_LIBRARY=1`,
/// the documented opt-out for loads on a hot path), so a truncated or modified library
/// is refused before `dlopen` runs any of it.
fn check_library_hash(path: &Path, m: &Manifest) -> Result<(), RuntimeError> {
    if m.library_sha256.is_empty() || std::env::var("DLC_TRUST_LIBRARY").is_ok_and(|v| v == "1") {
        return Ok(());
    }
    let err = |message: String| RuntimeError::Library { path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if dlc_artifact::sha256_hex(&bytes) != m.library_sha256 {
        return Err(err(format!(
            "the library's SHA-256 differs from the one model.manifest recorded ({} bytes now): it was modified or \
             truncated after compiling; recompile the model (DLC_TRUST_LIBRARY=1 skips this check)",
            bytes.len()
        )));
    }
    Ok(())
}

/// Whether the running CPU has an LLVM-named feature. Features the check does not know
/// are assumed present (they are extensions LLVM enables by CPU model, not ISA levels).
#[allow(unreachable_code)]
fn host_has_feature(f: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        return match f {
            "sse3" => is_x86_feature_detected!("sse3"),
            "ssse3" => is_x86_feature_detected!("ssse3"),
            "sse4.1" => is_x86_feature_detected!("sse4.1"),
            "sse4.2" => is_x86_feature_detected!("sse4.2"),
            "avx" => is_x86_feature_detected!("avx"),
            "avx2" => is_x86_feature_detected!("avx2"),
            "fma" => is_x86_feature_detected!("fma"),
            "f16c" => is_x86_feature_detected!("f16c"),
            "bmi1" => is_x86_feature_detected!("bmi1"),
            "bmi2" => is_x86_feature_detected!("bmi2"),
            "avx512f" => is_x86_feature_detected!("avx512f"),
            "avx512bw" => is_x86_feature_detected!("avx512bw"),
            "avx512dq" => is_x86_feature_detected!("avx512dq"),
            "avx512vl" => is_x86_feature_detected!("avx512vl"),
            "avx512cd" => is_x86_feature_detected!("avx512cd"),
            "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
            "avx512bf16" => is_x86_feature_detected!("avx512bf16"),
            "avx512fp16" => is_x86_feature_detected!("avx512fp16"),
            "avxvnni" => is_x86_feature_detected!("avxvnni"),
            _ => true,
        };
    }
    let _ = f;
    true
}

/// Checks `inputs` (given as `(name, tensor)`, any order) and puts them in call order.
pub(crate) fn order_inputs<'t>(
    manifest: &Manifest,
    inputs: &[(&str, &'t Tensor)],
) -> Result<Vec<&'t Tensor>, RuntimeError> {
    Ok(check_inputs(manifest, inputs)?.0)
}

/// Checks `inputs` (given as `(name, tensor)`, any order), puts them in call order and
/// binds the model's run-time dims from their shapes (empty for a model without).
pub(crate) fn check_inputs<'t>(
    manifest: &Manifest,
    inputs: &[(&str, &'t Tensor)],
) -> Result<(Vec<&'t Tensor>, Vec<i64>), RuntimeError> {
    let views: Vec<(&str, TensorRef<'_>)> = inputs.iter().map(|(n, t)| (*n, t.view())).collect();
    let (order, dims) = check_views(manifest, &views)?;
    Ok((order.into_iter().map(|i| inputs[i].1).collect(), dims))
}

/// [`check_inputs`] on borrowed tensors: the index in `inputs` of each input in call
/// order, and the run-time dims their shapes bind.
fn check_views(manifest: &Manifest, inputs: &[(&str, TensorRef<'_>)]) -> Result<(Vec<usize>, Vec<i64>), RuntimeError> {
    let specs = &manifest.inputs;
    for (name, _) in inputs {
        if !specs.iter().any(|s| s.name == *name) {
            if manifest.absent_inputs.iter().any(|a| a == name) {
                return Err(RuntimeError::AbsentInput { name: name.to_string() });
            }
            return Err(RuntimeError::UnknownInput { name: name.to_string(), names: names(specs) });
        }
    }
    if inputs.len() != specs.len() {
        return Err(RuntimeError::InputCount { expected: specs.len(), names: names(specs), got: inputs.len() });
    }
    let mut order = Vec::with_capacity(specs.len());
    for spec in specs {
        let i = inputs.iter().position(|(n, _)| *n == spec.name).ok_or_else(|| RuntimeError::InputCount {
            expected: specs.len(),
            names: names(specs),
            got: inputs.len(),
        })?;
        let t = &inputs[i].1;
        if t.dtype != spec.dtype {
            return Err(RuntimeError::InputDtype {
                name: spec.name.clone(),
                expected: spec.dtype.clone(),
                got: t.dtype.to_string(),
            });
        }
        if manifest.symbols.is_empty() && spec.fixed_shape().as_deref() != Some(t.shape) {
            let got = format!("[{}]", t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","));
            return Err(RuntimeError::InputShape { name: spec.name.clone(), expected: spec.shape_string(), got });
        }
        order.push(i);
    }
    let shapes: Vec<&[u64]> = order.iter().map(|&i| inputs[i].1.shape).collect();
    let dims = manifest.bind_dims(&shapes)?;
    for (spec, &i) in manifest.inputs.iter().zip(&order) {
        let t = &inputs[i].1;
        let want = t
            .shape
            .iter()
            .try_fold(dtype_size(t.dtype).unwrap_or(0) as u64, |a, &d| a.checked_mul(d))
            .and_then(|b| usize::try_from(b).ok());
        if want != Some(t.data.len()) {
            return Err(RuntimeError::InputBytes {
                name: spec.name.clone(),
                expected: want.unwrap_or(usize::MAX),
                got: t.data.len(),
            });
        }
    }
    Ok((order, dims))
}

impl Model {
    /// Loads the artifact in `dir` (which must hold `model.manifest` and `model.so`).
    pub fn load(dir: impl AsRef<Path>) -> Result<Model, RuntimeError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::read_dir(&dir)?;
        if manifest.is_cuda() {
            return Err(RuntimeError::Kind {
                dir,
                reason: "was compiled for CUDA; run it on a GPU or simulated on the CPU (`dlc run --simulate`, \
                         dlc_runtime::GpuModel)"
                    .into(),
            });
        }
        check_target(&dir, &manifest)?;
        let path = dir.join(files::SHARED_LIB);
        let lib_err = |message: String| RuntimeError::Library { path: path.clone(), message };
        if !path.exists() {
            return Err(lib_err("no shared library; compile with --emit so (the default)".into()));
        }
        check_library_hash(&path, &manifest)?;
        // SAFETY: loading runs no initialisers besides the ones dlc emits (none).
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| lib_err(e.to_string()))?;
        let p = &manifest.symbol_prefix;
        // SAFETY: the symbol types are the C ABI documented in dlc-artifact, version-checked below.
        let (abi, ws, run) = unsafe {
            let sym = |f: &abi::Function| abi::symbol(p, f).into_bytes();
            let abi: AbiVersionFn =
                *lib.get::<AbiVersionFn>(&sym(&abi::ABI_VERSION_FN)).map_err(|e| lib_err(e.to_string()))?;
            let ws: WorkspaceSizeFn =
                *lib.get::<WorkspaceSizeFn>(&sym(&abi::WORKSPACE_SIZE)).map_err(|e| lib_err(e.to_string()))?;
            let run: RunFn = *lib.get::<RunFn>(&sym(&abi::RUN)).map_err(|e| lib_err(e.to_string()))?;
            (abi, ws, run)
        };
        // SAFETY: both functions take no arguments and only return constants.
        let found = unsafe { abi() };
        if found != ABI_VERSION || manifest.abi_version != ABI_VERSION {
            return Err(RuntimeError::Abi { path, found });
        }
        // SAFETY: as above; every library of this ABI version exports both.
        let (run_dims, workspace_dims) = unsafe {
            let sym = |f: &abi::Function| abi::symbol(p, f).into_bytes();
            let rd: RunDimsFn = *lib.get::<RunDimsFn>(&sym(&abi::RUN_DIMS)).map_err(|e| lib_err(e.to_string()))?;
            let wd: WorkspaceSizeDimsFn =
                *lib.get::<WorkspaceSizeDimsFn>(&sym(&abi::WORKSPACE_SIZE_DIMS)).map_err(|e| lib_err(e.to_string()))?;
            (rd, wd)
        };
        // SAFETY: as above (every library of this ABI version exports it); the string is a
        // NUL-terminated constant of the library, alive while `lib` is.
        let signature = unsafe {
            let f: SignatureFn = *lib
                .get::<SignatureFn>(abi::symbol(p, &abi::SIGNATURE).as_bytes())
                .map_err(|e| lib_err(e.to_string()))?;
            std::ffi::CStr::from_ptr(f()).to_string_lossy().into_owned()
        };
        let want = manifest.signature();
        if signature != want {
            let diff = want
                .lines()
                .zip(signature.lines().chain(std::iter::repeat("(nothing)")))
                .find(|(a, b)| a != b)
                .map_or_else(String::new, |(a, b)| format!(": the manifest says '{a}', the code '{b}'"));
            return Err(lib_err(format!(
                "the code does not match model.manifest (edited, or from another compile){diff}; recompile the model"
            )));
        }
        // SAFETY: as above; artifacts from before the thread pool lack this symbol.
        let run_threaded =
            unsafe { lib.get::<RunThreadedFn>(abi::symbol(p, &abi::RUN_THREADED).as_bytes()).ok().map(|f| *f) };
        // SAFETY: as above; required when the manifest has computed dims.
        let shape_values = match manifest.symbols.iter().any(|s| s.computed) {
            true => Some(unsafe {
                *lib.get::<ShapeValuesFn>(abi::symbol(p, &abi::SHAPE_VALUES).as_bytes())
                    .map_err(|e| lib_err(e.to_string()))?
            }),
            false => None,
        };
        // SAFETY: takes no arguments and returns a constant.
        let workspace = unsafe { ws() } as usize;
        Ok(Model {
            dir,
            manifest,
            run,
            run_threaded,
            run_dims,
            workspace_dims,
            shape_values,
            workspace,
            free: Default::default(),
            _lib: lib,
        })
    }

    /// The artifact's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The artifact directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of workspace each run uses (for a model with run-time dims, the part that
    /// does not depend on them; see [`Model::workspace_size_at`]).
    pub fn workspace_size(&self) -> usize {
        self.workspace
    }

    /// Bytes of workspace a run at run-time dims `dims` uses.
    pub fn workspace_size_at(&self, dims: &[i64]) -> Result<usize, RuntimeError> {
        if self.manifest.symbols.is_empty() {
            return Ok(self.workspace);
        }
        if dims.len() != self.manifest.symbols.len() {
            return Err(dlc_artifact::DimError::Invalid(format!(
                "{} run-time dims given, the model has {}",
                dims.len(),
                self.manifest.symbols.len()
            ))
            .into());
        }
        // SAFETY: `dims` holds one value per symbol, as the function reads.
        let n = unsafe { (self.workspace_dims)(dims.as_ptr()) };
        usize::try_from(n).ok().filter(|_| n != u64::MAX).ok_or_else(|| {
            dlc_artifact::DimError::Invalid(format!(
                "the workspace at dims {dims:?} ({}) does not fit in memory",
                self.manifest.arena_expr
            ))
            .into()
        })
    }

    /// Checks `inputs` (given as `(name, tensor)`, any order), puts them in call order
    /// and binds the run-time dims.
    fn check_inputs<'t>(&self, inputs: &[(&str, &'t Tensor)]) -> Result<(Vec<&'t Tensor>, Vec<i64>), RuntimeError> {
        check_inputs(&self.manifest, inputs)
    }

    /// The bytes to allocate for each output at the input dims `dims` (an upper bound
    /// for outputs whose shapes depend on tensor values).
    fn output_capacities(&self, dims: &[i64]) -> Result<Vec<usize>, RuntimeError> {
        Ok(self.manifest.outputs.iter().map(|s| self.manifest.capacity_at(s, dims)).collect::<Result<_, _>>()?)
    }

    /// The outputs' shapes and byte sizes at `dims` (after a run: with the data
    /// symbols it computed), each checked against its allocation `cap`.
    fn output_sizes(&self, dims: &[i64], caps: &[usize]) -> Result<Vec<(Vec<u64>, usize)>, RuntimeError> {
        let mut out = Vec::new();
        for (s, &cap) in self.manifest.outputs.iter().zip(caps) {
            let (shape, n) = self.manifest.bytes_at(s, dims)?;
            if n > cap {
                return Err(dlc_artifact::DimError::Invalid(format!(
                    "output '{}' of shape {shape:?} needs {n} bytes, more than the {cap} its bound allows",
                    s.name
                ))
                .into());
            }
            out.push((shape, n));
        }
        Ok(out)
    }

    /// Calls the generated code.
    ///
    /// # Safety
    /// Inputs hold the shapes `dims` was bound from (checked by `check_inputs`), outputs
    /// and workspace the sizes `output_sizes` and `workspace_size_at` give for `dims`;
    /// every buffer is 64-byte aligned.
    unsafe fn call(
        &self,
        ins: *const *const u8,
        outs: *const *mut u8,
        ws: *mut u8,
        dims: &mut [i64],
        pool: &Pool,
    ) -> Result<(), RuntimeError> {
        let pfor = (pool.threads > 1).then_some(Pool::parallel_for as PforFn);
        // SAFETY: as the caller promises; the pool outlives the call.
        let status = unsafe {
            if !self.manifest.symbols.is_empty() {
                (self.run_dims)(ins, outs, ws, dims.as_mut_ptr(), pfor, pool.state())
            } else {
                match self.run_threaded {
                    Some(f) if pfor.is_some() => f(ins, outs, ws, pfor, pool.state()),
                    _ => (self.run)(ins, outs, ws),
                }
            }
        };
        self.status(status)
    }

    /// The error a nonzero status of the generated code stands for.
    fn status(&self, status: i32) -> Result<(), RuntimeError> {
        if status == 0 {
            return Ok(());
        }
        if let Some(m) = self.manifest.bind_failure(status) {
            return Err(RuntimeError::BadShapeValue(m));
        }
        if status == abi::STATUS_BAD_DIMS && self.shape_values.is_some() {
            return Err(dlc_artifact::DimError::Invalid(
                "the dims computed from the inputs' values are not the ones the buffers were sized for (the inputs \
                 changed after they were prepared)"
                    .into(),
            )
            .into());
        }
        Err(RuntimeError::RunFailed(status))
    }

    /// Fills the computed dims of `dims` (input dims bound, the rest 0) from the inputs'
    /// values with the artifact's `shape_values` prologue; nothing without computed dims.
    ///
    /// # Safety
    /// `ins` points to one buffer per input in call order, each holding the shape `dims`
    /// was bound from, aligned to its element size.
    unsafe fn compute_dims(&self, ins: *const *const u8, dims: &mut [i64]) -> Result<(), RuntimeError> {
        let Some(f) = self.shape_values else { return Ok(()) };
        for (d, s) in dims.iter_mut().zip(&self.manifest.symbols) {
            if s.data {
                *d = 0;
            }
        }
        let ws = AlignedBuf::try_new(self.workspace_size_at(dims)?, &|| "the workspace".into())?;
        // SAFETY: as the caller promises; the workspace is sized for `dims` with every
        // computed dim 0, as the prologue lays it out.
        let status = unsafe { f(ins, ws.ptr, dims.as_mut_ptr(), None, std::ptr::null()) };
        self.status(status)?;
        // The equalities of computed dims the model relies on (the generated code checks
        // them too, with a bare status).
        Ok(self.manifest.check_computed(dims)?)
    }

    /// Runs the model on named inputs; returns the outputs in manifest order. The thread
    /// pool and workspace come from the model's free list (one per concurrent caller,
    /// made on first use), so a call starts no threads once the model is warm.
    ///
    /// String tensors (dtype [`STRING`]) are converted to and from the two buffers the
    /// compiled code takes (docs/strings.md).
    pub fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>, RuntimeError> {
        if self.manifest.inputs.iter().chain(&self.manifest.outputs).any(|s| !s.encoding.is_empty()) {
            let owned = strings::encode_inputs(&self.manifest, inputs)?;
            let refs: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let outs = self.run_buffers(&refs)?;
            return strings::decode_outputs(&self.manifest, outs);
        }
        self.run_buffers(inputs)
    }

    /// The elements of sequence output `name` (docs/sequences.md) from `outputs`, what
    /// [`Model::run`] returned: the outputs the manifest lists for it, or, for a sequence
    /// whose length only the run knows, each row of its data cut to its dims.
    pub fn sequence(&self, outputs: &[Tensor], name: &str) -> Result<Vec<Tensor>, RuntimeError> {
        let err = |reason: String| RuntimeError::Sequence { name: name.to_string(), reason };
        let spec = self
            .manifest
            .sequences
            .iter()
            .find(|q| q.output && q.name == name)
            .ok_or_else(|| err("the model has no sequence output of that name".into()))?;
        let output = |n: &str| -> Result<&Tensor, RuntimeError> {
            let i = self.manifest.outputs.iter().position(|o| o.name == n);
            i.and_then(|i| outputs.get(i)).ok_or_else(|| err(format!("no output '{n}' among {}", outputs.len())))
        };
        if spec.data.is_empty() {
            return spec.elements.iter().map(|e| output(e).cloned()).collect();
        }
        let (data, shapes) = (output(&spec.data)?, output(&spec.shapes)?);
        padded_elements(data, shapes).map_err(err)
    }

    /// [`Model::run`] on the buffers the compiled code takes.
    fn run_buffers(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>, RuntimeError> {
        let views: Vec<(&str, TensorRef<'_>)> = inputs.iter().map(|(n, t)| (*n, t.view())).collect();
        let prepared = self.prepare(&views)?;
        let mut bufs: Vec<AlignedBuf> = self
            .manifest
            .outputs
            .iter()
            .zip(&prepared.outputs)
            .map(|(s, o)| AlignedBuf::try_new(o.bytes, &|| format!("output '{}'", s.name)))
            .collect::<Result<_, _>>()?;
        let mut outs: Vec<&mut [u8]> = bufs
            .iter_mut()
            .zip(&prepared.outputs)
            // SAFETY: each buffer holds at least `o.bytes` bytes, owned and unaliased.
            .map(|(b, o)| unsafe { std::slice::from_raw_parts_mut(b.ptr, o.bytes) })
            .collect();
        let threads = default_threads();
        let mut scratch = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            free.retain(|s| s.threads() == threads);
            free.pop().unwrap_or_else(|| Scratch::new(threads))
        };
        let sizes = self.run_prepared(&prepared, &views, &mut outs, &mut scratch);
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(scratch);
        Ok(self
            .manifest
            .outputs
            .iter()
            .zip(bufs.iter().zip(sizes?))
            .map(|(spec, (buf, (shape, n)))| Tensor {
                dtype: spec.dtype.clone(),
                shape,
                data: buf.as_slice(n).to_vec(),
            })
            .collect())
    }
}

/// The elements of a padded sequence: row `i` of `data` (`T[n, b...]`) cut to the dims in
/// row `i` of `shapes` (`i64[n, rank]`), each checked against the box. Leading dims of -1
/// are dims an element of a lower rank lacks (its data at index 0 there).
fn padded_elements(data: &Tensor, shapes: &Tensor) -> Result<Vec<Tensor>, String> {
    let n = *data.shape.first().ok_or("its data has no rows")?;
    let boxed = &data.shape[1..];
    let r = boxed.len();
    if shapes.dtype != "i64" || shapes.shape != [n, r as u64] {
        return Err(format!("its dims are {}{:?}, not i64[{n}, {r}]", shapes.dtype, shapes.shape));
    }
    let size = dlc_artifact::dtype_size(&data.dtype).ok_or_else(|| format!("dtype {} has no byte size", data.dtype))?;
    let row_elems: u64 = boxed.iter().product();
    if shapes.data.len() != (n as usize) * r * 8
        || data.data.len() as u64 != n * boxed.iter().product::<u64>() * size as u64
    {
        return Err("its buffers do not hold the elements their shapes say".into());
    }
    let dims: Vec<i64> =
        shapes.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        let d = &dims[i * r..(i + 1) * r];
        let lacks = d.iter().take_while(|&&x| x == -1).count();
        if d[lacks..].iter().zip(&boxed[lacks..]).any(|(&x, &b)| x < 0 || x as u64 > b) {
            return Err(format!("element {i} has dims {d:?}, outside the box {boxed:?}"));
        }
        // The dims it lacks walk as dims of 1 (index 0).
        let walk: Vec<u64> = d.iter().enumerate().map(|(k, &x)| if k < lacks { 1 } else { x as u64 }).collect();
        let shape: Vec<u64> = walk[lacks..].to_vec();
        let count: u64 = shape.iter().product();
        let mut bytes = Vec::with_capacity(count as usize * size);
        let row = &data.data[(i as u64 * row_elems) as usize * size..((i as u64 + 1) * row_elems) as usize * size];
        // Copy the corner run by run: the last dim is contiguous within the box.
        if count > 0 {
            let inner = walk.last().map_or(1, |&x| x as usize) * size;
            let mut at = vec![0u64; r.saturating_sub(1)];
            loop {
                let off = at.iter().enumerate().fold(0u64, |off, (k, &p)| (off + p) * boxed[k + 1]) as usize * size;
                bytes.extend_from_slice(&row[off..off + inner]);
                if !next_index(&mut at, &walk) {
                    break;
                }
            }
        }
        out.push(Tensor { dtype: data.dtype.clone(), shape, data: bytes });
    }
    Ok(out)
}

/// Steps `at` (an index into the leading `at.len()` dims of `shape`, the last fastest) to
/// the next; false after the last.
fn next_index(at: &mut [u64], shape: &[u64]) -> bool {
    for k in (0..at.len()).rev() {
        at[k] += 1;
        if at[k] < shape[k] {
            return true;
        }
        at[k] = 0;
    }
    false
}

/// What [`Model::run_prepared`] needs to know before a call, from the inputs' shapes
/// alone: the run-time dims they bind and each output's allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    dims: Vec<i64>,
    /// One per output, in manifest order.
    pub outputs: Vec<OutputSlot>,
}

/// An output's allocation for one call.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSlot {
    /// Its shape, when the input shapes decide it (`None` when it depends on tensor
    /// values: the run reports it).
    pub shape: Option<Vec<u64>>,
    /// The bytes to allocate (its size, or its upper bound when `shape` is `None`).
    pub bytes: usize,
}

/// Reusable state for [`Model::run_prepared`]: a thread pool and a workspace that grows
/// to the largest size a call needed. One per concurrent caller.
pub struct Scratch {
    pool: Pool,
    workspace: Option<AlignedBuf>,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").field("threads", &self.pool.threads).finish()
    }
}

impl Scratch {
    /// Scratch whose runs use `threads` threads (the caller's included).
    pub fn new(threads: usize) -> Scratch {
        Scratch { pool: Pool::new(threads), workspace: None }
    }

    /// The thread count.
    pub fn threads(&self) -> usize {
        self.pool.threads
    }

    /// A workspace of at least `bytes`.
    fn workspace(&mut self, bytes: usize) -> Result<*mut u8, RuntimeError> {
        if self.workspace.as_ref().is_none_or(|b| b.layout.size() < bytes) {
            self.workspace = None;
            self.workspace = Some(AlignedBuf::try_new(bytes, &|| "the workspace".into())?);
        }
        Ok(self.workspace.as_ref().map_or(std::ptr::null_mut(), |b| b.ptr))
    }
}

/// Pointers to `inputs` in the order `order`, each aligned to its element size: where
/// they are when they are, else copies (returned with them, to keep alive).
fn aligned_inputs(inputs: &[(&str, TensorRef<'_>)], order: &[usize]) -> (Vec<*const u8>, Vec<AlignedBuf>) {
    let mut copies = Vec::new();
    let mut ptrs = Vec::with_capacity(order.len());
    for &i in order {
        let t = &inputs[i].1;
        let align = dtype_size(t.dtype).unwrap_or(1).max(1);
        if (t.data.as_ptr() as usize).is_multiple_of(align) {
            ptrs.push(t.data.as_ptr());
        } else {
            let b = AlignedBuf::copy_of(t.data);
            ptrs.push(b.ptr as *const u8);
            copies.push(b);
        }
    }
    (ptrs, copies)
}

impl Model {
    /// Checks `inputs` (as [`Model::run`] does) and says what the outputs of a call on
    /// them need (for a model with computed dims, this runs its `shape_values` prologue
    /// on the inputs' values).
    pub fn prepare(&self, inputs: &[(&str, TensorRef<'_>)]) -> Result<Prepared, RuntimeError> {
        let (order, mut dims) = check_views(&self.manifest, inputs)?;
        if self.shape_values.is_some() {
            let (ptrs, copies) = aligned_inputs(inputs, &order);
            // SAFETY: `check_views` checked every input's dtype, shape and byte length
            // against `dims`; the pointers are aligned.
            unsafe { self.compute_dims(ptrs.as_ptr(), &mut dims)? };
            drop(copies);
        }
        let outputs = self
            .manifest
            .outputs
            .iter()
            .map(|s| {
                let bytes = self.manifest.capacity_at(s, &dims)?;
                let shape = if s.max_bytes.is_empty() { Some(self.manifest.shape_at(s, &dims)?) } else { None };
                Ok(OutputSlot { shape, bytes })
            })
            .collect::<Result<_, RuntimeError>>()?;
        Ok(Prepared { dims, outputs })
    }

    /// Runs the model on the caller's buffers, with no copy: `inputs` as they were given
    /// to [`Model::prepare`], which made `prepared`; `outputs` one buffer per output of at
    /// least `prepared.outputs[i].bytes`, aligned to its element size. Inputs are read
    /// where they are when aligned to their element size (a copy is made of those that
    /// are not). Returns each output's shape and byte length.
    pub fn run_prepared(
        &self,
        prepared: &Prepared,
        inputs: &[(&str, TensorRef<'_>)],
        outputs: &mut [&mut [u8]],
        scratch: &mut Scratch,
    ) -> Result<Vec<(Vec<u64>, usize)>, RuntimeError> {
        let (order, mut dims) = check_views(&self.manifest, inputs)?;
        let stale = || dlc_artifact::DimError::Invalid("the inputs are not the ones the call was prepared for".into());
        // Computed dims come from `prepare` (the run checks them against the values).
        for ((d, s), &p) in dims.iter_mut().zip(&self.manifest.symbols).zip(&prepared.dims) {
            if s.computed {
                *d = p;
            }
        }
        if dims != prepared.dims || outputs.len() != self.manifest.outputs.len() {
            return Err(stale().into());
        }
        for ((spec, slot), buf) in self.manifest.outputs.iter().zip(&prepared.outputs).zip(outputs.iter()) {
            let align = dtype_size(&spec.dtype).unwrap_or(1).max(1);
            if buf.len() < slot.bytes || !(buf.as_ptr() as usize).is_multiple_of(align) {
                return Err(dlc_artifact::DimError::Invalid(format!(
                    "output '{}': the buffer holds {} bytes at address {:p}, the call needs {} aligned to {align}",
                    spec.name,
                    buf.len(),
                    buf.as_ptr(),
                    slot.bytes
                ))
                .into());
            }
        }
        let (in_ptrs, copies) = aligned_inputs(inputs, &order);
        let out_ptrs: Vec<*mut u8> = outputs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let ws = scratch.workspace(self.workspace_size_at(&dims)?)?;
        // SAFETY: `check_views` checked the inputs' dtypes, shapes (binding `dims`) and
        // byte lengths; each pointer is aligned to its element size (or a 64-byte aligned
        // copy); the outputs were checked above against the sizes `prepare` computed for
        // these dims, the workspace has `workspace_size_at(dims)` bytes, 64-byte aligned.
        unsafe { self.call(in_ptrs.as_ptr(), out_ptrs.as_ptr(), ws, &mut dims, &scratch.pool)? };
        drop(copies);
        let caps: Vec<usize> = prepared.outputs.iter().map(|o| o.bytes).collect();
        self.output_sizes(&dims, &caps)
    }
}

/// Buffers for repeated runs of one model: inputs are checked and copied once by
/// [`Session::set_inputs`], and [`Session::run`] then calls the generated code with no
/// allocation or copy (what `dlc bench` times). For a model with run-time dims the
/// buffers are sized for the last inputs' shapes (the smallest valid ones until inputs
/// are set) and resized only when `set_inputs` gets other shapes.
pub struct Session<'m> {
    model: &'m Model,
    pool: Pool,
    dims: Vec<i64>,
    inputs: Vec<(AlignedBuf, usize)>,
    outputs: Vec<(AlignedBuf, usize, Vec<u64>)>,
    /// With data symbols: each output's shape and bytes after the last run.
    out_sizes: Vec<(Vec<u64>, usize)>,
    workspace: AlignedBuf,
    in_ptrs: Vec<*const u8>,
    out_ptrs: Vec<*mut u8>,
}

impl Model {
    /// A session with buffers for every input and output and the workspace (at the
    /// smallest value of each run-time dim).
    pub fn session(&self) -> Session<'_> {
        let dims: Vec<i64> = self.manifest.symbols.iter().map(|s| s.min.max(1) as i64).collect();
        let mut s = Session {
            model: self,
            pool: Pool::new(default_threads()),
            dims: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            out_sizes: Vec::new(),
            workspace: AlignedBuf::new(0),
            in_ptrs: Vec::new(),
            out_ptrs: Vec::new(),
        };
        // At the minimum dims every size is small; a manifest that cannot be evaluated
        // there leaves empty buffers, and `set_inputs` then reports the error.
        let _ = s.resize(&dims);
        s
    }
}

impl Session<'_> {
    /// Sizes the buffers for run-time dims `dims`.
    fn resize(&mut self, dims: &[i64]) -> Result<(), RuntimeError> {
        let m = self.model;
        let mut inputs = Vec::new();
        for spec in &m.manifest.inputs {
            let (_, n) = m.manifest.bytes_at(spec, dims)?;
            inputs.push((AlignedBuf::try_new(n, &|| format!("input '{}'", spec.name))?, n));
        }
        let mut outputs = Vec::new();
        for (spec, n) in m.manifest.outputs.iter().zip(m.output_capacities(dims)?) {
            let shape = m.manifest.shape_at(spec, dims).unwrap_or_default();
            outputs.push((AlignedBuf::try_new(n, &|| format!("output '{}'", spec.name))?, n, shape));
        }
        self.workspace = AlignedBuf::try_new(m.workspace_size_at(dims)?, &|| "the workspace".into())?;
        self.in_ptrs = inputs.iter().map(|(b, _)| b.ptr as *const u8).collect();
        self.out_ptrs = outputs.iter().map(|(b, _, _)| b.ptr).collect();
        self.inputs = inputs;
        self.outputs = outputs;
        self.dims = dims.to_vec();
        Ok(())
    }

    /// Checks the inputs (as [`Model::run`] does) and copies them into the session.
    pub fn set_inputs(&mut self, inputs: &[(&str, &Tensor)]) -> Result<(), RuntimeError> {
        let (ordered, mut dims) = self.model.check_inputs(inputs)?;
        if self.model.shape_values.is_some() {
            // Computed dims size the buffers: the prologue reads the inputs' values.
            let views: Vec<(&str, TensorRef<'_>)> = ordered.iter().map(|t| ("", t.view())).collect();
            let order: Vec<usize> = (0..views.len()).collect();
            let (ptrs, copies) = aligned_inputs(&views, &order);
            // SAFETY: `check_inputs` checked the tensors against `dims`; pointers aligned.
            unsafe { self.model.compute_dims(ptrs.as_ptr(), &mut dims)? };
            drop(copies);
        }
        if dims != self.dims || self.inputs.len() != ordered.len() {
            self.resize(&dims)?;
        }
        for ((buf, n), t) in self.inputs.iter().zip(ordered) {
            debug_assert_eq!(*n, t.data.len());
            // SAFETY: the buffer was sized for the bound dims, and `check_inputs` checked
            // the tensor's shape against them and its byte count against its shape.
            unsafe { std::ptr::copy_nonoverlapping(t.data.as_ptr(), buf.ptr, t.data.len().min(*n)) };
        }
        Ok(())
    }

    /// The values of the model's run-time dims the buffers are sized for.
    pub fn dims(&self) -> &[i64] {
        &self.dims
    }

    /// Sets how many threads runs may use (default [`default_threads`]); artifacts built
    /// before the thread pool run on one thread whatever this says.
    pub fn set_threads(&mut self, threads: usize) {
        if threads.max(1) != self.pool.threads {
            self.pool = Pool::new(threads);
        }
    }

    /// The thread count runs use.
    pub fn threads(&self) -> usize {
        if self.model.run_threaded.is_some() || !self.model.manifest.symbols.is_empty() {
            self.pool.threads
        } else {
            1
        }
    }

    /// Runs the generated code on the session's buffers (zeros until inputs are set).
    pub fn run(&mut self) -> Result<(), RuntimeError> {
        if self.inputs.len() != self.model.manifest.inputs.len() {
            // `session()` could not size the buffers at the minimum dims.
            return Err(dlc_artifact::DimError::Invalid("set the session's inputs before running it".into()).into());
        }
        // SAFETY: every buffer has the size the code reads or writes at `self.dims`,
        // 64-byte aligned; inputs hold that shape (zeros or checked inputs).
        let mut dims = self.dims.clone();
        unsafe {
            self.model.call(self.in_ptrs.as_ptr(), self.out_ptrs.as_ptr(), self.workspace.ptr, &mut dims, &self.pool)?
        };
        if self.model.manifest.symbols.iter().any(|s| s.data) {
            let caps: Vec<usize> = self.outputs.iter().map(|(_, cap, _)| *cap).collect();
            self.out_sizes = self.model.output_sizes(&dims, &caps)?;
        }
        Ok(())
    }

    /// The outputs of the last run, in manifest order.
    pub fn outputs(&self) -> Vec<Tensor> {
        self.model
            .manifest
            .outputs
            .iter()
            .zip(&self.outputs)
            .enumerate()
            .map(|(i, (spec, (buf, n, shape)))| {
                // Outputs whose shapes the last run computed from tensor values.
                let (shape, n) = self.out_sizes.get(i).map_or((shape, *n), |(s, k)| (s, *k));
                Tensor { dtype: spec.dtype.clone(), shape: shape.clone(), data: buf.as_slice(n).to_vec() }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i64s(shape: &[u64], v: &[i64]) -> Tensor {
        Tensor { dtype: "i64".into(), shape: shape.to_vec(), data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }

    #[test]
    fn padded_elements_are_the_corners_of_their_rows() {
        // data[i, a, b] = 100 i + 10 a + b; element i is data[i, :d0, :d1].
        let (n, b0, b1) = (3u64, 3u64, 4u64);
        let mut v = Vec::new();
        for i in 0..n {
            for a in 0..b0 {
                for b in 0..b1 {
                    v.push((100 * i + 10 * a + b) as f32);
                }
            }
        }
        let data = Tensor::from_f32(&[n, b0, b1], &v);
        let dims = [[2i64, 3], [3, 4], [0, 2]];
        let shapes = i64s(&[n, 2], &dims.concat());
        let got = padded_elements(&data, &shapes).expect("elements");
        assert_eq!(got.len(), 3);
        for (i, (e, d)) in got.iter().zip(dims).enumerate() {
            assert_eq!(e.shape, vec![d[0] as u64, d[1] as u64]);
            let want: Vec<f32> =
                (0..d[0]).flat_map(|a| (0..d[1]).map(move |b| (100 * i as i64 + 10 * a + b) as f32)).collect();
            assert_eq!(e.to_f32().expect("f32"), want, "element {i}");
        }
    }

    #[test]
    fn padded_elements_of_rank_0_and_1() {
        let data = Tensor::from_f32(&[2], &[7.0, 8.0]);
        let got = padded_elements(&data, &i64s(&[2, 0], &[])).expect("scalars");
        assert_eq!(got.iter().map(|t| t.to_f32().expect("f32")).collect::<Vec<_>>(), vec![vec![7.0], vec![8.0]]);
        let data = Tensor::from_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let got = padded_elements(&data, &i64s(&[2, 1], &[1, 3])).expect("vectors");
        assert_eq!(got[0].to_f32().expect("f32"), vec![1.0]);
        assert_eq!(got[1].to_f32().expect("f32"), vec![4.0, 5.0, 6.0]);
    }

    #[test]
    fn padded_elements_of_lower_rank_lack_the_leading_dims() {
        // A scalar, a vector of 2 and a 2x3 matrix in a 2x3 box: the scalar at [0, 0],
        // the vector in row 0.
        let mut v = vec![0.0f32; 18];
        v[0] = 9.0;
        v[6..8].copy_from_slice(&[1.0, 2.0]);
        v[12..18].copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let data = Tensor::from_f32(&[3, 2, 3], &v);
        let got = padded_elements(&data, &i64s(&[3, 2], &[-1, -1, -1, 2, 2, 3])).expect("elements");
        assert_eq!(got.iter().map(|t| t.shape.clone()).collect::<Vec<_>>(), vec![vec![], vec![2], vec![2, 3]]);
        assert_eq!(got[0].to_f32().expect("f32"), vec![9.0]);
        assert_eq!(got[1].to_f32().expect("f32"), vec![1.0, 2.0]);
        assert_eq!(got[2].to_f32().expect("f32"), v[12..18].to_vec());
        // -1 only leads: a dim lacked after one held is malformed.
        let e = padded_elements(&data, &i64s(&[3, 2], &[-1, -1, 2, -1, 2, 3])).expect_err("malformed");
        assert!(e.contains("element 1 has dims [2, -1]"), "{e}");
    }

    #[test]
    fn padded_elements_refuse_dims_outside_the_box() {
        let data = Tensor::from_f32(&[1, 2], &[1.0, 2.0]);
        let e = padded_elements(&data, &i64s(&[1, 1], &[3])).expect_err("outside");
        assert!(e.contains("outside the box"), "{e}");
        // -1 is a dim the element lacks (a scalar here); other negatives are malformed.
        let e = padded_elements(&data, &i64s(&[1, 1], &[-2])).expect_err("negative");
        assert!(e.contains("outside the box"), "{e}");
        let e = padded_elements(&data, &i64s(&[2, 1], &[1, 1])).expect_err("rows");
        assert!(e.contains("not i64[1, 1]"), "{e}");
    }
}
